"""Under DDP (default broadcast_buffers=True) each replica's BatchNorm running mean = rank 0's previous one updated
with its OWN shard: replicas differ after every step and none holds the global statistics. Exit 1 while so."""
import socket
import sys

try:
    import numpy as np
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    print(f"versions: torch {torch.__version__}, numpy {np.__version__}")
except Exception as e:  # a missing framework cannot measure anything
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)


def rank_main(rank, port, q):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    xs = np.random.default_rng(0).standard_normal((2, 8, 3)) + np.repeat([0.0, 2.0], 4)[None, :, None]
    ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.BatchNorm1d(3))
    for x in xs:  # two steps; replica r gets rows 4r..4r+3
        ddp(torch.as_tensor(x[4 * rank:4 * rank + 4], dtype=torch.float32)).sum().backward()
    q.put((rank, ddp.module.running_mean.numpy().copy()))
    dist.destroy_process_group()


if __name__ == "__main__":
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        q = mp.get_context("fork").SimpleQueue()
        mp.start_processes(rank_main, args=(port, q), nprocs=2, start_method="fork")  # replicas inherit the imports
        got = dict(q.get() for _ in range(2))
    except Exception as e:
        print(f"error: {type(e).__name__}: {e}")
        sys.exit(2)
    xs = np.random.default_rng(0).standard_normal((2, 8, 3)) + np.repeat([0.0, 2.0], 4)[None, :, None]
    glob = 0.9 * (0.1 * xs[0].mean(0)) + 0.1 * xs[1].mean(0)
    print(f"observed running_mean replica 0: {got[0]}, replica 1: {got[1]}")
    print(f"expected (global batch, equal on every replica): {glob}")
    sys.exit(1 if not np.allclose(got[0], got[1], atol=1e-5) else 0)
