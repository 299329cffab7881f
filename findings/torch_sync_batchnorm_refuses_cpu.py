"""torch SyncBatchNorm refuses CPU tensors in a real 2-process gloo group (DDP at construction, the layer at forward).
Exit 1 while refused, 0 once CPU is supported, 2 on any other error."""
import socket
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def rank_main(rank, port, q):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    x = torch.as_tensor(np.random.default_rng(rank).standard_normal((4, 3)), dtype=torch.float32)
    bn = torch.nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.BatchNorm1d(3))
    try:
        bn(x)
        q.put("ok")
    except ValueError as e:
        q.put(f"ValueError: {e}")
    dist.destroy_process_group()


if __name__ == "__main__":
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        q = mp.get_context("spawn").SimpleQueue()
        mp.spawn(rank_main, args=(port, q), nprocs=2)
        observed = q.get()
    except Exception as e:
        print(f"error: {type(e).__name__}: {e}")
        sys.exit(2)
    print(f"observed: {observed}")
    print("expected: a SyncBatchNorm that normalizes CPU tensors with the statistics of both processes")
    sys.exit(0 if observed == "ok" else 1)
