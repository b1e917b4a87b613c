"""Deterministic resizing and padding that keep weak labels and masks aligned.

`ResizePad(size)` scales the longest side to `size` and pads bottom/right to
size x size. The new grid is (round(H s), round(W s)); boxes and points are
scaled by that grid's exact per-axis factors (continuous pixel coordinates:
pixel i covers [i, i+1)), the image is resampled bilinearly with
anti-aliasing, masks and scribbles by nearest pixel centre. Padding: image 0,
mask and scribble 255 (ignored). `meta["size"]` is the resized content
(H, W) before padding; `meta["scale"]` the nominal factor.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..weak.types import IGNORE, resize_labels


def resize_image(image: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """uint8 [3, H, W] -> uint8 [3, h, w], bilinear with anti-aliasing (deterministic on CPU)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image.clone()
    x = image[None].to(torch.float32)
    y = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return y[0].round().clamp(0, 255).to(torch.uint8)


def scaled_size(h: int, w: int, longest: int) -> Tuple[Tuple[int, int], float]:
    scale = longest / max(h, w)
    return (max(1, round(h * scale)), max(1, round(w * scale))), scale


class ResizePad:
    """Longest side to `size`, then pad bottom/right to `size` x `size` (`pad=False`: no padding)."""

    def __init__(self, size: int, pad: bool = True, image_fill: int = 0):
        if int(size) < 1:
            raise ConfigError(f"ResizePad: size must be positive, got {size}")
        self.size = int(size)
        self.pad = pad
        self.image_fill = int(image_fill)

    def __call__(self, sample: Dict) -> Dict:
        image = sample["image"]
        h, w = image.shape[-2:]
        new, scale = scaled_size(h, w, self.size)
        out = dict(sample)
        out["image"] = resize_image(image, new)
        if sample.get("weak") is not None:
            weak = sample["weak"]
            if weak.size is None:
                weak = replace(weak, size=(h, w))
            out["weak"] = weak.resized(scale, size=new)
        if sample.get("gt") is not None:
            out["gt"] = resize_labels(sample["gt"], new)
        meta = dict(sample.get("meta", {}))
        meta.setdefault("orig_size", (h, w))
        meta["scale"] = float(meta.get("scale", 1.0)) * scale
        meta["size"] = new
        out["meta"] = meta
        if self.pad:
            full = (self.size, self.size)
            ph, pw = full[0] - new[0], full[1] - new[1]
            out["image"] = F.pad(out["image"], (0, pw, 0, ph), value=self.image_fill)
            if "gt" in out and out["gt"] is not None:
                out["gt"] = F.pad(out["gt"], (0, pw, 0, ph), value=IGNORE)
            if out.get("weak") is not None:
                out["weak"] = out["weak"].padded(full)
        return out

    def __repr__(self) -> str:
        return f"ResizePad(size={self.size}, pad={self.pad})"


def unpad_resize(labels: torch.Tensor, meta: Dict, mode: str = "nearest-exact") -> torch.Tensor:
    """Undo ResizePad on a prediction [..., S, S]: crop `meta['size']`, resize to `orig_size`.

    Integer label maps use nearest; float score maps may pass mode='bilinear'.
    """
    h, w = meta["size"]
    crop = labels[..., :h, :w]
    oh, ow = meta["orig_size"]
    if (h, w) == (oh, ow):
        return crop.clone()
    lead = crop.shape[:-2]
    x = crop.reshape(-1, 1, h, w)
    is_int = not torch.is_floating_point(x)
    x = x.to(torch.float32)
    kw = {} if mode.startswith("nearest") else {"align_corners": False}
    y = F.interpolate(x, size=(oh, ow), mode=mode, **kw)
    y = y.reshape(*lead, oh, ow)
    return y.round().to(labels.dtype) if is_int else y
