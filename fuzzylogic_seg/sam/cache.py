"""On-disk cache of SAM image embeddings (for fine-tuning with a frozen encoder).

With the image encoder frozen, an image's embedding never changes, so it is
computed once and a fine-tuning epoch costs decoder time only. Layout:
``DIR/<model fingerprint[:16]>/<image id>.pt`` holding the embedding (fp32 or,
with ``fp16=True``, half the disk), the input and original sizes, the full
model fingerprint and a hash of the image bytes. An entry whose image bytes,
fingerprint or precision differ from the request is stale and recomputed;
another model's embeddings live in another folder. Writes are atomic, reads
are ``torch.load(weights_only=True)``; an unreadable entry is recomputed.
"""
from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError
from ..io import load_torch, save_torch
from .build import model_fingerprint
from .forward import PromptableSAM, _to_hwc_uint8

Size = Tuple[int, int]


@dataclass
class CachedEmbedding:
    embedding: torch.Tensor  # [C, h, w] float32 on the requested device
    input_size: Size         # after ResizeLongestSide, before padding
    orig_size: Size


def image_hash(image) -> str:
    """Hash of an image's pixels (uint8 [3, H, W] tensor or [H, W, 3] array, same result)."""
    arr = np.ascontiguousarray(_to_hwc_uint8(image))
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def encoder_fingerprint(model) -> str:
    """Fingerprint of what determines an embedding: the image encoder's weights,
    its input size and the pixel normalisation."""
    sam = getattr(model, "sam", model)
    h = hashlib.blake2b(digest_size=16)
    h.update(model_fingerprint(sam.image_encoder).encode())
    h.update(f"{sam.image_encoder.img_size}|{sam.pixel_mean.flatten().tolist()}|"
             f"{sam.pixel_std.flatten().tolist()}|{sam.image_format}".encode())
    return h.hexdigest()


def _safe_name(image_id: str) -> str:
    """A file name for any image id (ids may hold '/', spaces...), collision-free."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(image_id))[-80:].lstrip(".") or "img"
    return f"{stem}-{hashlib.blake2b(str(image_id).encode(), digest_size=4).hexdigest()}.pt"


class EmbeddingCache:
    """``cache.get(model, image_id, image)`` -> CachedEmbedding, computed at most once."""

    def __init__(self, directory: Union[str, Path], model_fingerprint: str, fp16: bool = False,
                 compute: str = "fp32"):
        self.root = Path(directory)
        self.fingerprint = str(model_fingerprint)
        self.fp16 = bool(fp16)
        # the precision the encoder ran in (fp32, or bf16 under AMP): entries made
        # in another are recomputed, so results do not depend on which machine
        # filled a shared cache first (entries without the field were fp32)
        self.compute = str(compute)
        self.dir = self.root / self.fingerprint[:16]
        self.hits = self.misses = self.stale = 0

    @classmethod
    def for_model(cls, directory, model, fp16: bool = False, compute: str = "fp32"
                  ) -> "EmbeddingCache":
        return cls(directory, encoder_fingerprint(model), fp16=fp16, compute=compute)

    def path(self, image_id: str) -> Path:
        return self.dir / _safe_name(image_id)

    # ------------------------------------------------------------------ read
    def lookup(self, image_id: str, image, device="cpu",
               digest: Optional[str] = None) -> Optional[CachedEmbedding]:
        """The cached entry if present and current, else None (counts a miss/stale)."""
        p = self.path(image_id)
        if not p.is_file():
            self.misses += 1
            return None
        try:
            entry = load_torch(p)
        except CheckpointError as exc:
            warnings.warn(f"embedding cache: recomputing unreadable entry ({exc})")
            self.stale += 1
            return None
        digest = digest or image_hash(image)
        if (not isinstance(entry, dict) or entry.get("fingerprint") != self.fingerprint
                or entry.get("image_hash") != digest or entry.get("fp16") != self.fp16
                or entry.get("compute", "fp32") != self.compute):
            self.stale += 1
            return None
        self.hits += 1
        return CachedEmbedding(entry["embedding"].to(device=device, dtype=torch.float32),
                               tuple(entry["input_size"]), tuple(entry["orig_size"]))

    def store(self, image_id: str, digest: str, embedding: torch.Tensor, input_size: Size,
              orig_size: Size) -> None:
        emb = embedding.detach().to("cpu", torch.float16 if self.fp16 else torch.float32)
        save_torch({"fingerprint": self.fingerprint, "image_hash": digest,
                    "image_id": str(image_id), "fp16": self.fp16, "compute": self.compute,
                    "embedding": emb.contiguous().clone(),
                    "input_size": [int(s) for s in input_size],
                    "orig_size": [int(s) for s in orig_size]}, self.path(image_id))

    # --------------------------------------------------------------- compute
    def get(self, model: PromptableSAM, image_id: str, image, device=None) -> CachedEmbedding:
        return self.get_many(model, [image_id], [image], device=device)[0]

    @torch.no_grad()
    def get_many(self, model: PromptableSAM, image_ids: Sequence[str], images: Sequence,
                 device=None, batch_size: int = 8, progress: bool = False) -> List[CachedEmbedding]:
        """Embeddings of several images, encoding the missing ones in batches."""
        from tqdm import tqdm

        if len(image_ids) != len(images):
            raise ConfigError(f"{len(image_ids)} ids for {len(images)} images")
        device = device if device is not None else model.device
        out: List[Optional[CachedEmbedding]] = [None] * len(images)
        todo = []
        for i, (iid, im) in enumerate(zip(image_ids, images)):
            d = image_hash(im)
            out[i] = self.lookup(iid, im, device, digest=d)
            if out[i] is None:
                todo.append((i, d))
        was_training = model.training
        model.eval()
        bar = tqdm(total=len(todo), desc="embedding images", disable=not progress or not todo,
                   dynamic_ncols=True)
        try:
            for s in range(0, len(todo), batch_size):
                chunk = todo[s:s + batch_size]
                x, ins, origs = model.preprocess_batch([images[i] for i, _ in chunk])
                emb = model.embed(x)
                for (i, d), e, ins_, orig in zip(chunk, emb, ins, origs):
                    self.store(image_ids[i], d, e, ins_, orig)
                    stored = e.to(torch.float16) if self.fp16 else e
                    out[i] = CachedEmbedding(stored.to(device=device, dtype=torch.float32),
                                             ins_, orig)
                bar.update(len(chunk))
        finally:
            bar.close()
            model.train(was_training)
        return out  # type: ignore[return-value]
