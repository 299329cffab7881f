"""Importing paddle in a process that has already imported TensorFlow dies with a segmentation fault (paddlepaddle
3.3.1, tensorflow-cpu 2.21.0, Linux x86-64); the opposite order works. The working order runs in this process, the
crashing order in a child process so the crash costs that process only.
Exit 1 while present, 0 once gone, 2 on error (TensorFlow or paddle missing).
"""
import signal
import subprocess
import sys

try:
    import numpy as np
    import paddle  # paddle first: the order that works
    import tensorflow

    rng = np.random.default_rng(0)  # no input data is needed: the import order is the whole reproduction
    print(f"versions: paddle {paddle.__version__}, tensorflow {tensorflow.__version__}, numpy {np.__version__}")
    order = "import tensorflow; import paddle"
    proc = subprocess.run([sys.executable, "-c", order], capture_output=True, text=True, timeout=600)
    rc = proc.returncode
    crash = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"
    print(f"observed `import paddle; import tensorflow`: imports; `{order}`: {crash}")
    print("expected: both orders import (exit 0)")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if rc < 0 else 0)
