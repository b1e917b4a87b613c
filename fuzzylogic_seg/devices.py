"""Host-to-device copies that do not make the host wait for the GPU.

A copy from pageable host memory to CUDA waits for the work queued before it
(and ``torch.tensor(data, device="cuda")`` is such a copy): one host sync each.
Copied through pinned memory without blocking, the host goes on queueing work.
"""
from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """``t`` (any device) on ``device``; host tensors go to CUDA pinned and non-blocking.

    Safe with temporaries: PyTorch's pinned-memory allocator keeps the pinned
    block until the copy is done. Do not write to ``t`` in place afterwards if
    it was already pinned (``pin_memory`` then returns it as it is)."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
