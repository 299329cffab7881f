#!/usr/bin/env python3
"""Speed benchmark (a script, not a timed test): per adapter group, the suite's wall time, the bare import time of
its framework(s), the number of cases, cases per second and the suite/import ratio.

    python3 benchmarks/bench_groups.py [--only GROUP ...]

Runs groups one at a time so timings do not compete for the 2 cores. Uses the venv that the runner (python3 -m bnsuite) manages.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bnsuite import runner  # noqa: E402

IMPORTS = {
    "torch": "import torch",
    "keras-tensorflow": "import keras, tensorflow", "keras-jax": "import keras, jax",
    "keras-torch": "import keras, torch", "tf_keras": "import tf_keras, tensorflow",
    "tf1-keras": "import tensorflow as tf; tf.compat.v1.keras.layers.BatchNormalization",
    "tf1-graph": "import tensorflow as tf; tf.compat.v1.layers.batch_normalization",
    "flax-linen": "import flax.linen, jax", "flax-nnx": "from flax import nnx; import jax",
    "paddle": "import paddle", "tinygrad": "import tinygrad",
}


def import_time(py: str, group: str) -> float:
    if group not in IMPORTS:  # the meta group imports no one framework
        return float("nan")
    env = {**os.environ, **runner.GROUPS[group][0], "TF_CPP_MIN_LOG_LEVEL": "3"}
    t0 = time.time()
    subprocess.run([py, "-c", IMPORTS[group]], env=env, check=True, capture_output=True)
    return time.time() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[])
    a = ap.parse_args()
    py = runner.ensure_venv(os.environ.get("BNSUITE_VENV", os.path.join(runner.ROOT, ".venv")))
    known = dict([*runner.builtin_groups().items(), runner.META_GROUP])
    unknown = [g for g in a.only if g not in known]
    if unknown:
        ap.error(f"unknown group {unknown[0]!r}: use one of {', '.join(known)}")
    groups = a.only or list(runner.GROUPS)
    rows = []
    with tempfile.TemporaryDirectory() as run_dir:
        for g in groups:
            imp = import_time(py, g)
            env, args = known[g]
            r = runner.run_group(py, g, env, args, run_dir, [])
            cases = sum(r["counts"].values())
            rows.append((g, r["wall_s"], imp, cases, r["counts"].get("passed", 0)))
            print(f"{g}: {r['wall_s']:.1f} s, import {imp:.1f} s, {cases} cases", flush=True)
    print(f"\n{'group':18s} {'suite s':>8s} {'import s':>9s} {'cases':>6s} {'passed':>7s} {'cases/s':>8s} "
          f"{'suite/import':>13s}")
    for g, wall, imp, cases, passed in rows:
        print(f"{g:18s} {wall:8.1f} {imp:9.1f} {cases:6d} {passed:7d} {cases / wall:8.1f} {wall / imp:13.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
