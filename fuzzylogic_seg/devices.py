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


def native_bf16(device) -> bool:
    """Whether ``device`` computes bfloat16 natively (CUDA, compute capability 8+).

    ``torch.cuda.is_bf16_supported()`` says True on older GPUs too (V100, T4),
    where bf16 is emulated and slower than fp32: AMP in bf16 is used only where
    this is True (fine-tuning and pretraining then run in fp32; the student
    falls back to fp16 with a gradient scaler)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def compute_precision(device, bf16: bool) -> str:
    """The precision an encoder forward runs in, as recorded with cached embeddings:
    "bf16" under AMP; on CUDA with TF32 allowed (cuDNN's default for convolutions)
    "tf32"; else "fp32". Entries of another precision are recomputed."""
    if bf16:
        return "bf16"
    if torch.device(device).type == "cuda" and (torch.backends.cudnn.allow_tf32
                                                or torch.backends.cuda.matmul.allow_tf32):
        return "tf32"
    return "fp32"
