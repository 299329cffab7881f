"""Importing paddle in a process that has already imported TensorFlow dies with a segmentation fault (paddlepaddle
3.3.1, tensorflow-cpu 2.21.0, Linux x86-64); the opposite order works. Each order runs in its own child process so the
crash costs that process only. Exit 1 while present, 0 once gone, 2 on error (TensorFlow or paddle missing).
"""
import importlib.metadata
import importlib.util
import signal
import subprocess
import sys

try:
    import numpy as np
    import paddle  # paddle first is the order that works; the crashing order runs in a child process

    rng = np.random.default_rng(0)  # no input data is needed: the import order is the whole reproduction
    if importlib.util.find_spec("tensorflow") is None:
        raise ImportError("needs tensorflow installed beside paddle")
    dists = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()}
    tf_dist = "tensorflow-cpu" if "tensorflow-cpu" in dists else "tensorflow"
    print(f"versions: paddle {paddle.__version__}, {tf_dist} {dists.get(tf_dist)}, numpy {np.__version__}")
    runs = {}
    for order in ("import tensorflow; import paddle", "import paddle; import tensorflow"):
        code = f"{order}; print(paddle.__version__, tensorflow.__version__)"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
        rc = proc.returncode
        runs[order] = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc} {proc.stdout.strip()}"
    for order, outcome in runs.items():
        print(f"observed `{order}`: {outcome}")
    print("expected: both orders import (exit 0)")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if runs["import tensorflow; import paddle"].startswith("killed") else 0)
