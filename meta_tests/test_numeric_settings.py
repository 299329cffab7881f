"""Every built-in adapter turns TF32 (and similar reduced-precision float32 modes) off and says so: the plugin
applies numeric_settings() before an adapter's first case and records the returned settings in the results file."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from bnsuite.adapters import registry
from bnsuite.adapters.frameworks import rows_of
from meta_tests import broken_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEEDS = {"torch": "torch", "keras-tensorflow": "tensorflow", "keras-jax": "jax", "keras-torch": "torch",
         "tf_keras": "tensorflow", "tf1-keras": "tensorflow", "tf1-graph": "tensorflow", "flax-linen": "jax",
         "flax-nnx": "jax", "paddle": "paddle", "tinygrad": "tinygrad"}

# Any other built-in adapter needs the first module its framework row requires.
NEEDS.update({i: rows_of(registry.load(i))[0].requires[0] for i in registry.BUILTIN if i not in NEEDS})

@pytest.mark.parametrize("adapter_id", list(registry.BUILTIN))
def test_adapter_turns_tf32_off(adapter_id):
    cls = registry.load(adapter_id)
    assert callable(getattr(cls, "numeric_settings", None)), f"{adapter_id} declares no numeric_settings"
    if importlib.util.find_spec(NEEDS[adapter_id]) is None:
        pytest.skip(f"{NEEDS[adapter_id]} not installed")
    if adapter_id == "paddle" and "tensorflow" in sys.modules and "paddle" not in sys.modules:
        # importing paddle after TensorFlow segfaults; a paddle imported before TensorFlow is safe to use in process
        settings = json.loads(subprocess.run(
            [sys.executable, "-c", "import json; from bnsuite.adapters.paddle_bn import PaddleBatchNorm as P; "
             "print(json.dumps(P.numeric_settings()))"], cwd=ROOT, capture_output=True, text=True,
            timeout=300).stdout.strip().splitlines()[-1])
    else:
        settings = cls.numeric_settings()
    assert settings.get("tf32") == "off", f"{adapter_id}: {settings}"
    assert len(settings) > 1, "the settings read back from the framework must be recorded, not only the verdict"


def test_settings_land_in_the_results_file():
    """The real torch adapter's run in the broken-adapter run (meta_tests/broken_run.py), a suite run like any other,
    records the settings its numeric_settings() returned."""
    proc, records = broken_run.run()
    envs = [r for r in records if r["kind"] == "env" and r.get("adapter") == "torch"]
    assert envs and envs[0]["numeric"].get("tf32") == "off", (envs, proc.stdout[-2000:] + proc.stderr[-2000:])
