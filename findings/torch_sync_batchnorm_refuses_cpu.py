"""torch SyncBatchNorm refuses CPU tensors once a process group exists: DistributedDataParallel at construction, the
bare layer at its first training forward. Both are device checks made before the group's size is read
(torch/nn/parallel/distributed.py: _passing_sync_batchnorm_handle; torch/nn/modules/batchnorm.py:
SyncBatchNorm.forward), so a one-process gloo group meets the refusal that every CPU replica of a larger group meets.
Exit 1 while refused, 0 once CPU is supported, 2 on any other error."""
import sys

try:
    import numpy as np
    import torch
    import torch.distributed as dist
    print(f"versions: torch {torch.__version__}, numpy {np.__version__}")
except Exception as e:  # a missing framework cannot measure anything
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)


def outcome(step):
    try:
        step()
        return "ok"
    except ValueError as e:
        return f"ValueError: {e}"


try:
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    x = torch.as_tensor(np.random.default_rng(0).standard_normal((4, 3)), dtype=torch.float32)
    bn = torch.nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.BatchNorm1d(3))
    observed = {"DistributedDataParallel(bn)": outcome(lambda: torch.nn.parallel.DistributedDataParallel(bn)),
                "bn(x) in training": outcome(lambda: bn(x))}
    dist.destroy_process_group()
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
for call, result in observed.items():
    print(f"observed {call}: {result}")
print("expected: a SyncBatchNorm that normalizes CPU tensors with the statistics of every process in its group")
sys.exit(0 if set(observed.values()) == {"ok"} else 1)
