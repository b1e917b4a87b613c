"""What is fine-tuned: the mask decoder, the prompt encoder, LoRA in the encoder.

``trainable_parameters(sam, train=("decoder",), lora_rank=0)`` freezes
everything, then unfreezes the chosen parts and returns their parameters:

- ``decoder``: the mask decoder (the default, as in most SAM adaptation work);
- ``prompt_encoder``: the prompt encoder's learned embeddings (and mask path);
- ``lora``: low-rank adapters (Hu et al. 2021) added to the ``qkv`` Linear of
  every image-encoder attention block, W x + (alpha / r) B A x with B = 0 at
  init, so the model's output is unchanged until training moves them;
- ``encoder``: the whole image encoder (full fine-tuning; costly).

While the image encoder is frozen (no ``lora``/``encoder``), its embeddings
never change and can be cached (``sam/cache.py``): see :func:`encoder_frozen`.
"""
from __future__ import annotations

import math
from typing import Iterable, List, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

TRAINABLE = ("decoder", "prompt_encoder", "lora", "encoder")


class LoRALinear(nn.Module):
    """A Linear plus a low-rank update. Keeps the wrapped layer's ``weight`` and
    ``bias`` under the same names, so plain SAM state dicts still load
    (non-strictly for the adapters) and :func:`merge_lora` restores a Linear."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float = None):
        super().__init__()
        if rank <= 0:
            raise ConfigError(f"LoRA rank must be positive, got {rank}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.rank = int(rank)
        self.alpha = float(alpha if alpha is not None else rank)
        self.scaling = self.alpha / self.rank
        # drawn on the CPU whatever the device: the same seed gives the same adapters
        # on a GPU (whose generator would draw other numbers)
        a = torch.empty(rank, self.in_features, dtype=base.weight.dtype)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # as the reference LoRA code
        self.lora_A = nn.Parameter(a.to(base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=base.weight.device,
                                               dtype=base.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scaling

    def merged(self) -> nn.Linear:
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.weight + self.scaling * self.lora_B @ self.lora_A)
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        # frozen stays frozen: a merged encoder layer must not start training
        lin.weight.requires_grad_(self.weight.requires_grad)
        if self.bias is not None:
            lin.bias.requires_grad_(self.bias.requires_grad)
        return lin

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, rank={self.rank}, alpha={self.alpha}"


def _unwrap(model: nn.Module) -> nn.Module:
    """Accept a Sam or a PromptableSAM."""
    return getattr(model, "sam", model)


def _attention_blocks(sam: nn.Module) -> List[nn.Module]:
    enc = sam.image_encoder
    blocks = getattr(enc, "blocks", None)
    if blocks is None:
        raise ConfigError("LoRA: this image encoder has no ViT blocks (image_encoder.blocks)")
    return [b.attn for b in blocks if hasattr(b, "attn") and hasattr(b.attn, "qkv")]


def add_lora(model: nn.Module, rank: int, alpha: float = None) -> int:
    """Wrap every encoder attention's qkv Linear with LoRA (idempotent); returns how many."""
    sam = _unwrap(model)
    n = 0
    for attn in _attention_blocks(sam):
        if isinstance(attn.qkv, LoRALinear):
            if attn.qkv.rank != rank:
                raise ConfigError(f"LoRA already added with rank {attn.qkv.rank}, asked {rank}")
            want = float(alpha if alpha is not None else rank)
            if attn.qkv.alpha != want:  # (alpha is not in the state dict: say so, not keep the old)
                raise ConfigError(f"LoRA already added with alpha {attn.qkv.alpha}, asked {want}")
            continue
        attn.qkv = LoRALinear(attn.qkv, rank, alpha)
        n += 1
    return n


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in _unwrap(model).modules())


def merge_lora(model: nn.Module) -> int:
    """Fold adapters into plain Linears (a SAM that loads with the stock code)."""
    sam = _unwrap(model)
    n = 0
    for attn in _attention_blocks(sam):
        if isinstance(attn.qkv, LoRALinear):
            attn.qkv = attn.qkv.merged()
            n += 1
    return n


def lora_parameters(model: nn.Module) -> List[nn.Parameter]:
    return [p for m in _unwrap(model).modules() if isinstance(m, LoRALinear)
            for p in (m.lora_A, m.lora_B)]


def encoder_frozen(train: Union[str, Sequence[str]]) -> bool:
    """True when the image embeddings cannot change (so they may be cached)."""
    train = (train,) if isinstance(train, str) else tuple(train)
    return not ({"lora", "encoder"} & set(train))


def trainable_parameters(model: nn.Module, train: Union[str, Iterable[str]] = ("decoder",),
                         lora_rank: int = 0, lora_alpha: float = None) -> List[nn.Parameter]:
    """Freeze all of SAM, unfreeze the parts named in `train`; return them.

    ``"lora"`` adds adapters of rank ``lora_rank`` (> 0) first if absent; with
    ``"lora"`` the encoder's own weights stay frozen (only A and B train).
    """
    train = (train,) if isinstance(train, str) else tuple(train)
    bad = [t for t in train if t not in TRAINABLE]
    if bad or not train:
        raise ConfigError(f"train: unknown part(s) {bad or train}; choose from {TRAINABLE}")
    if "lora" in train and lora_rank <= 0 and not has_lora(model):
        raise ConfigError("train includes 'lora' but lora_rank is 0; give --lora-rank > 0")
    sam = _unwrap(model)
    if "lora" in train and not has_lora(sam):
        add_lora(sam, lora_rank, lora_alpha)
    for p in sam.parameters():
        p.requires_grad_(False)
    chosen: List[nn.Parameter] = []
    parts = {"decoder": lambda: sam.mask_decoder.parameters(),
             "prompt_encoder": lambda: sam.prompt_encoder.parameters(),
             "encoder": lambda: (p for n, p in sam.image_encoder.named_parameters()
                                 if "lora_" not in n),
             "lora": lambda: lora_parameters(sam)}
    seen = set()
    for t in train:
        for p in parts[t]():
            if id(p) not in seen:
                seen.add(id(p))
                p.requires_grad_(True)
                chosen.append(p)
    return chosen
