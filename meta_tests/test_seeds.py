"""The data seed: the default is CI's data, another seed moves every seeded input, a bad one is one clear line."""

import os
import subprocess
import sys

import numpy as np

from bnsuite.adapters.base import Spec
from bnsuite.suites import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_default_seed_keeps_the_fixed_seeds(monkeypatch):
    monkeypatch.delenv(data.SEED_ENV, raising=False)
    assert [data.seed_for(n) for n in (0, 1, 7, 111)] == [0, 1, 7, 111]
    np.testing.assert_array_equal(data.batch(Spec(), seed=0), data.representable(
        _reference_batch(np.random.default_rng(0)), "float32"))


def _reference_batch(rng):
    means, stds = rng.uniform(-1, 1, 3), rng.uniform(0.5, 2.0, 3)
    return rng.standard_normal((4, 3, 5, 6)) * stds.reshape(1, 3, 1, 1) + means.reshape(1, 3, 1, 1)


def test_another_seed_moves_every_stream_and_keeps_them_apart(monkeypatch):
    default = {n: data.batch(Spec(), seed=n) for n in (0, 1)}
    monkeypatch.setenv(data.SEED_ENV, "5")
    moved = {n: data.batch(Spec(), seed=n) for n in (0, 1)}
    assert all(not np.array_equal(default[n], moved[n]) for n in default)
    assert data.seed_for(0) != data.seed_for(1)
    np.testing.assert_array_equal(moved[0], data.batch(Spec(), seed=0))  # reproducible


def _pytest(*args):
    env = {k: v for k, v in os.environ.items() if k != data.SEED_ENV}
    return subprocess.run([sys.executable, "-m", "pytest", "bnsuite/suites/test_training_mode.py", "-p",
                           "no:cacheprovider", "--results=none", "--adapter", "torch", "--co", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_seed_is_in_the_header():
    proc = _pytest("--bn-seed=17")
    assert proc.returncode == 0, proc.stderr
    assert "bnsuite data seed: 17" in proc.stdout


def test_bad_seed_is_one_clear_line():
    proc = _pytest("--bn-seed=-3")
    assert proc.returncode == 4, (proc.returncode, proc.stderr)
    assert "expected a non-negative integer, got '-3'" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
