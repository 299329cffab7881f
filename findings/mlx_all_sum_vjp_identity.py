"""MLX's all_sum backward is the identity (its forward-mode derivative is an all_sum): with 2 ranks and
f_r(x_r) = sum(all_sum(x) * c_r), the gradient of the total loss f_0 + f_1 wrt x_r is c_0 + c_1 and mx.jvp agrees,
but mx.grad gives c_r. A SyncBatchNorm written over all_sum misses the cross-replica gradient terms. Exit 1 while so."""
import json
import os
import socket
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import mlx.core as mx
    print(f"versions: mlx {mx.__version__}, numpy {np.__version__}")
except Exception as e:  # a missing framework cannot measure anything
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)

C = np.random.default_rng(0).uniform(1, 2, (2, 3)).astype(np.float32)  # rank r's loss weights c_r
if os.environ.get("MLX_RANK") is not None:  # one rank of the ring
    g = mx.distributed.init(strict=True, backend="ring")
    c = mx.array(C[g.rank()])
    f = lambda x: (mx.distributed.all_sum(x, group=g) * c).sum()
    grad = mx.grad(f)(mx.ones(3))
    jvp = mx.jvp(lambda x: mx.distributed.all_sum(x, group=g) * c, [mx.ones(3)], [mx.ones(3)])[1][0]
    print(json.dumps({"rank": g.rank(), "grad": np.array(grad).tolist(), "jvp": np.array(jvp).tolist()}))
    sys.exit(0)
try:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as hf:
        ports = []
        for _ in range(2):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        json.dump([[f"127.0.0.1:{p}"] for p in ports], hf)
    procs = [subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "MLX_RANK": str(r), "MLX_HOSTFILE": hf.name}) for r in range(2)]
    got = {d["rank"]: d for d in (json.loads(p.communicate(timeout=60)[0].splitlines()[-1]) for p in procs)}
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
print(f"observed mx.grad rank 0: {got[0]['grad']}, rank 1: {got[1]['grad']}; mx.jvp rank 0: {got[0]['jvp']}")
print(f"expected on both (d(f_0 + f_1)/dx_r = c_0 + c_1): {(C[0] + C[1]).tolist()}")
sys.exit(1 if np.allclose(got[0]["grad"], C[0], atol=1e-6) else 0)
