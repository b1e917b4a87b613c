"""Process setup: seeding, determinism and torch's own distributed training.

One code path serves a single process and ``torchrun --nproc_per_node=N``:
:func:`init_distributed` reads the torchrun environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and starts a
process group (gloo on CPU, nccl on CUDA); without it, it returns a context of
world size 1 and touches nothing. Training code then asks the context for a
sampler, a wrapped model and whether it may write files (rank 0 only).

With ``world_size > 1`` every rank sees ``global_batch / world_size`` images
of the same global batch a single process would see (a
:class:`~torch.utils.data.DistributedSampler` with the same seed shards the
same permutation), and DDP averages the gradients. With per-image loss means
(see :mod:`fuzzylogic_seg.student`) this equals single-process training on the
global batch, up to float summation order, except for BatchNorm statistics:
on CUDA they are synchronised (SyncBatchNorm); on CPU torch has no
SyncBatchNorm, so each rank normalises with its own half batch (use
``bn="frozen"`` where bit-level agreement matters).
"""
from __future__ import annotations

import os
import random
from datetime import timedelta
from dataclasses import dataclass
from typing import Any, List, Optional

import torch

from .errors import ConfigError


# --------------------------------------------------------------------- seeding
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2 ** 32))
    except ImportError:  # pragma: no cover - numpy is a dependency of the seg extra
        pass
    torch.manual_seed(seed)


def set_deterministic(enabled: bool = True) -> None:
    """Ask torch for deterministic kernels where it has them (warn, not fail, elsewhere).

    cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` set before its first use to be
    deterministic; it is set here if the user did not choose a value.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = not enabled
    torch.backends.cudnn.deterministic = enabled


def derive_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (e.g. run seed, epoch, sample index).

    Independent of Python's hash randomisation and of how many random numbers
    were drawn before: resuming at epoch e reproduces epoch e exactly.
    """
    h = 1469598103934665603  # FNV-1a over the decimal parts
    for p in parts:
        for ch in f"{int(p)};".encode():
            h = ((h ^ ch) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


def generator(*parts: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(*parts))
    return g


# ------------------------------------------------------------------ device
def resolve_device(device: Optional[str] = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a ConfigError."""
    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    return dev


# ------------------------------------------------------------- distributed
@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None  # None: no process group (single process)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files and prints progress bars."""
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: Optional[str] = "auto", backend: Optional[str] = None) -> DistContext:
    """Join the torchrun process group if this process was started by torchrun.

    Backend: gloo on CPU, nccl on CUDA (override with `backend`). On CUDA each
    rank uses the GPU ``LOCAL_RANK``. Calling it again in an initialised
    process returns the same context.
    """
    import torch.distributed as dist

    dev = resolve_device(device)
    world = env_world_size()
    if world <= 1:
        return DistContext(device=dev)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if not dist.is_initialized():
        # Ranks other than 0 wait at barriers while rank 0 runs single-process
        # stages (SAM fine-tuning, pseudo-labels): allow hours, not torch's 30 min.
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=timedelta(hours=12))
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev, backend=backend)


def cleanup(ctx: DistContext) -> None:
    import torch.distributed as dist

    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    import torch.distributed as dist

    if ctx.distributed:
        dist.barrier()


def wrap_model(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """DDP-wrap `model` (already on ctx.device) when there are several ranks.

    BatchNorm becomes SyncBatchNorm on CUDA; on CPU torch offers none (see the
    module docstring). Parameters are broadcast from rank 0 by DDP itself.
    """
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if ctx.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DDP(model, device_ids=[ctx.device.index], output_device=ctx.device.index)
    return DDP(model)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def make_sampler(dataset, ctx: DistContext, seed: int, shuffle: bool = True):
    """The same sampler for one process and for many: DistributedSampler over
    ``ctx.world_size`` replicas (1 in a single process), so a single process
    visits exactly the union of what the ranks visit, batch by batch. The tail
    that does not fill every rank is dropped, not padded with repeated images:
    with the loader's drop_last, W ranks then take floor(n / B) steps of the
    same global batches as one process (padding added a step, and an image
    seen twice, whenever W did not divide n)."""
    from torch.utils.data import DistributedSampler

    return DistributedSampler(
        dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed, drop_last=True
    )


def per_rank_batch(global_batch: int, ctx: DistContext) -> int:
    if global_batch % ctx.world_size:
        raise ConfigError(
            f"batch size {global_batch} is not divisible by the {ctx.world_size} processes of the run"
        )
    return global_batch // ctx.world_size


def all_reduce_mean(values: List[float], ctx: DistContext) -> List[float]:
    """Average a few floats (e.g. epoch losses) over the ranks."""
    if not ctx.distributed:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=ctx.device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(t)
    return (t / ctx.world_size).tolist()


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's `obj` on every rank."""
    if not ctx.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
