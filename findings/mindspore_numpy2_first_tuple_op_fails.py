"""mindspore 2.10.0 declares numpy>=1.25.0 but its extension is built against NumPy 1.x: under NumPy 2, the first op
in a process that takes a tuple of ints (ops.reshape, ops.transpose, ops.sum over axes; BatchNorm1d reshapes every
input) raises SystemError after printing "A module that was compiled using NumPy 1.x cannot be run in NumPy 2"; the
same call then works. A user's first BatchNorm1d call fails.
Exit 1 while present, 0 once gone, 2 on error (mindspore missing).
"""
import sys

try:
    import numpy as np
    import mindspore as ms

    print(f"versions: mindspore {ms.__version__}, numpy {np.__version__}")
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    bn = ms.nn.BatchNorm1d(3)
    bn.set_train(True)
    calls = []
    for _ in range(2):
        try:
            bn(ms.Tensor(x))
            calls.append("ok")
        except SystemError as e:
            calls.append(f"SystemError ({str(e).splitlines()[0][:80]})")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
print(f"observed: first BatchNorm1d call {calls[0]}; second call {calls[1]}")
print("expected: both calls return (or the package declares numpy<2 and pip refuses NumPy 2)")
sys.exit(1 if calls[0] != "ok" else 0)
