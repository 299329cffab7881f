"""Worker process: ``python -m bnsuite.adapters.replicas.worker module:Engine plan.npz out.npz``.

Loads the engine, measures the plan, writes the result arrays. Exit 0 on success, 2 on any error (one line why).
"""

from __future__ import annotations

import sys

import numpy as np


def main(argv: list[str]) -> int:
    ref, plan_path, out_path = argv
    from bnsuite.adapters.replicas import resolve_engine

    try:
        engine = resolve_engine(ref)()
        with np.load(plan_path) as z:
            p = {k: z[k] for k in z.files}
        out = engine.measure(p)
        np.savez(out_path, **{k: np.asarray(v) for k, v in out.items()})
    except Exception as e:  # one line for the parent; the traceback goes to the log above it
        import traceback

        traceback.print_exc()
        print(f"replicas worker {ref}: {type(e).__name__}: {e}", flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
