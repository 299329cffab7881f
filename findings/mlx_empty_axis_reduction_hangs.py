"""mx.sum over an empty axis (a (0, C) batch reduced to C values, as BatchNorm's statistics of an empty batch) stops
returning now and then on the CPU: in fresh processes that evaluate it 100 times, about half never finish (they spin). A rank of a
data-parallel job holding an empty shard hangs, and its peers with it. Exit 1 while some process hangs."""
import subprocess
import sys

try:
    import numpy as np
    import mlx.core as mx
    print(f"versions: mlx {mx.__version__}, numpy {np.__version__}")
except Exception as e:  # a missing framework cannot measure anything
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)

LOOP = """import numpy as np, mlx.core as mx
x = mx.array(np.random.default_rng(0).standard_normal((0, 3)).astype(np.float32))
for i in range(100):
    mx.eval(mx.sum(x, axis=0))
print(np.array(mx.sum(x, axis=0)))"""
try:  # fresh processes one at a time (a hung one spins on a core), until one hangs
    runs, hung, done = 0, 0, set()
    while runs < 8 and not hung:
        runs += 1
        try:
            done.add(subprocess.run([sys.executable, "-c", LOOP], capture_output=True, text=True,
                                    timeout=3).stdout.strip())
        except subprocess.TimeoutExpired:
            hung += 1
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
print(f"observed: {hung} of {runs} processes still in mx.sum after 3 s; the others returned {sorted(done)}")
print("expected: every process returns [0. 0. 0.] (the sum over no values) at once")
sys.exit(1 if hung else 0)
