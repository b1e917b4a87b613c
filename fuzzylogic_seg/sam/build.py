"""Build SAM models: the embedded small SAM and Meta's real checkpoints.

``load_sam(sam_type, checkpoint, device)`` is the one entry point. Real types
(``vit_b``, ``vit_l``, ``vit_h``) are built by
``segment_anything.sam_model_registry`` without weights, and the checkpoint is
then read here with ``torch.load(weights_only=True)`` (segment_anything's own
loader unpickles arbitrary objects) and loaded strictly.

The embedded model is assembled from the same ``segment_anything.modeling``
classes at 256 px and pretrained by this project (``sam/pretrain.py``); its
weights ship in ``fuzzylogic_seg/weights/sam_embedded.pt``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, ConfigError

EMBEDDED_FILENAME = "sam_embedded.pt"
CHECKPOINT_FORMAT = "fuzzyseg-sam-embedded"
PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class EmbeddedConfig:
    """Architecture of the embedded SAM (all from segment_anything.modeling)."""

    img_size: int = 256
    patch_size: int = 16
    embed_dim: int = 160           # image encoder ViT width
    depth: int = 6
    num_heads: int = 5
    global_attn_indexes: Tuple[int, ...] = (2, 5)
    window_size: int = 8           # window attention elsewhere (16x16 tokens -> 2x2 windows)
    prompt_dim: int = 128          # prompt / decoder width (SAM: 256)
    decoder_depth: int = 2
    decoder_mlp_dim: int = 512
    decoder_heads: int = 4         # prompt_dim / 2 (attention downsampling) / heads must be whole
    mask_in_chans: int = 16
    iou_head_hidden_dim: int = 128

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["global_attn_indexes"] = list(self.global_attn_indexes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EmbeddedConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown embedded SAM config keys: {sorted(unknown)}")
        d = dict(d)
        if "global_attn_indexes" in d:
            d["global_attn_indexes"] = tuple(int(i) for i in d["global_attn_indexes"])
        return cls(**d)


# A tiny configuration for tests: 64 px, 4x4 embedding grid, 16x16 low-res masks.
TINY_CONFIG = EmbeddedConfig(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2,
                             global_attn_indexes=(1,), window_size=2, prompt_dim=32,
                             decoder_depth=1, decoder_mlp_dim=64, decoder_heads=2,
                             mask_in_chans=8, iou_head_hidden_dim=32)


def build_embedded(config: EmbeddedConfig = EmbeddedConfig()):
    """A randomly initialised embedded SAM (seed torch before calling for determinism)."""
    from segment_anything.modeling import (ImageEncoderViT, MaskDecoder, PromptEncoder, Sam,
                                           TwoWayTransformer)

    c = config
    if c.img_size % c.patch_size:
        raise ConfigError(f"img_size {c.img_size} is not a multiple of patch_size {c.patch_size}")
    if c.embed_dim % c.num_heads or (c.prompt_dim // 2) % c.decoder_heads:
        raise ConfigError("embed_dim must divide by num_heads and prompt_dim/2 by decoder_heads")
    grid = c.img_size // c.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=c.depth, embed_dim=c.embed_dim, img_size=c.img_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=c.num_heads,
            patch_size=c.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=tuple(c.global_attn_indexes), window_size=c.window_size,
            out_chans=c.prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=c.prompt_dim, image_embedding_size=(grid, grid),
            input_image_size=(c.img_size, c.img_size), mask_in_chans=c.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=c.decoder_depth, embedding_dim=c.prompt_dim,
                                          mlp_dim=c.decoder_mlp_dim, num_heads=c.decoder_heads),
            transformer_dim=c.prompt_dim, iou_head_depth=3,
            iou_head_hidden_dim=c.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    sam.embedded_config = c  # so checkpoints written from it record the architecture
    return sam.eval()


# ------------------------------------------------------------------ locations
def cache_dir() -> Path:
    """The user cache folder: $FUZZYSEG_CACHE, else $XDG_CACHE_HOME/fuzzyseg, else ~/.cache/fuzzyseg."""
    env = os.environ.get("FUZZYSEG_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fuzzyseg"


def package_weights_path() -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / EMBEDDED_FILENAME


def embedded_weights_path() -> Optional[Path]:
    """The embedded SAM's weights: shipped in the package, else made by
    ``fuzzyseg sam pretrain`` in the cache folder; None when neither exists."""
    for p in (package_weights_path(), cache_dir() / EMBEDDED_FILENAME):
        if p.is_file():
            return p
    return None


# ---------------------------------------------------------------- checkpoints
def embedded_checkpoint(sam, config: Optional[EmbeddedConfig] = None, half: bool = False,
                        extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A weights-only-loadable dict for an embedded model (architecture included).

    ``half`` stores float tensors as fp16 (halves the shipped file), except the
    prompt encoder's random Fourier matrix, whose rounding would move every
    positional encoding."""
    config = config or getattr(sam, "embedded_config", None) or EmbeddedConfig()
    state = {}
    for k, v in sam.state_dict().items():
        v = v.detach().cpu()
        if half and v.is_floating_point() and "positional_encoding_gaussian_matrix" not in k:
            v = v.half()
        state[k] = v
    ckpt = {"format": CHECKPOINT_FORMAT, "version": 1, "config": config.to_dict(),
            "state_dict": state}
    if extra:
        ckpt["meta"] = dict(extra)
    return ckpt


def resize_positional_state(state: Mapping[str, torch.Tensor],
                            like: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state`` with the image encoder's positional tables resized to ``like``'s
    shapes, so that weights trained at one image size continue at another: the
    absolute ``pos_embed`` [1, h, w, C] bilinearly, the relative ``rel_pos_h/w``
    [2s - 1, C] linearly (as segment_anything's ``get_rel_pos`` resizes them).
    Other tensors are returned as they are (a load reports any other mismatch)."""
    out = dict(state)
    for k, v in state.items():
        if k not in like or like[k].shape == v.shape:
            continue
        if k.endswith("pos_embed") and v.dim() == 4:
            r = F.interpolate(v.float().permute(0, 3, 1, 2), size=tuple(like[k].shape[1:3]),
                              mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
        elif k.rsplit(".", 1)[-1] in ("rel_pos_h", "rel_pos_w") and v.dim() == 2:
            r = F.interpolate(v.float().t()[None], size=like[k].shape[0], mode="linear")[0].t()
        else:
            continue
        out[k] = r.to(v.dtype).contiguous()
    return out


def _read_checkpoint(path: Path) -> Any:
    from ..io import load_torch

    return load_torch(path, map_location="cpu")


def load_state_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path: PathLike,
                      what: str = "SAM") -> None:
    """load_state_dict(strict) that names the file and the first bad keys on mismatch."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a {what} state dict (expected a mapping of tensors)")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys, first: {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, first: {', '.join(unexpected[:3])}")
        if shape:
            parts.append(f"{len(shape)} shape mismatches, first: {'; '.join(shape[:3])}")
        raise CheckpointError(f"{path}: checkpoint does not fit the {what} model: "
                              + "; ".join(parts))
    model.load_state_dict(state, strict=True)  # copies, casting fp16 -> fp32


_META_WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def meta_sam_type(state: Any) -> Optional[str]:
    """``vit_b``/``vit_l``/``vit_h`` when ``state`` is a state dict of Meta's SAM
    (told by the image encoder's width), else None."""
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    pos = state.get("image_encoder.pos_embed") if isinstance(state, Mapping) else None
    if not isinstance(pos, torch.Tensor) or pos.dim() != 4 or pos.shape[1] != 64:
        return None  # (Meta's models have 64 x 64 tokens; the embedded one 16 x 16)
    return _META_WIDTHS.get(int(pos.shape[-1]))


def detect_sam_type(checkpoint: PathLike) -> str:
    """Which SAM a weights file holds: ``embedded`` (this project's format, or a
    bare state dict of its default architecture) or Meta's ``vit_b``/``vit_l``/
    ``vit_h`` (told by the image encoder's width). Memory-maps the file where it
    can (a vit_h file is 2.5 GB), so only the tensors looked at are read."""
    from ..io import load_torch

    path = Path(checkpoint).expanduser()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # an old (non-zip) file cannot be mapped: read it whole
        obj = load_torch(path)
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        return "embedded"
    meta = meta_sam_type(obj)
    if meta is not None:
        return meta
    pos = obj.get("image_encoder.pos_embed") if isinstance(obj, Mapping) else None
    c = EmbeddedConfig()
    n = c.img_size // c.patch_size
    if isinstance(pos, torch.Tensor) and tuple(pos.shape) == (1, n, n, c.embed_dim):
        return "embedded"
    raise CheckpointError(f"{path}: cannot tell which SAM this checkpoint holds (no "
                          f"image_encoder.pos_embed of a known size); pass --sam-type "
                          f"{{{','.join(SAM_BUILDERS)}}}")


def resolve_sam_type(sam_type: Optional[str], checkpoint: Optional[PathLike]) -> str:
    """``sam_type`` when given; else ``embedded`` without a checkpoint, and the
    checkpoint's own type (:func:`detect_sam_type`) with one."""
    if sam_type:
        return sam_type
    return "embedded" if checkpoint is None else detect_sam_type(checkpoint)


def _load_embedded(checkpoint: Optional[PathLike]):
    path = Path(checkpoint).expanduser() if checkpoint is not None else embedded_weights_path()
    if path is None:
        raise CheckpointError(
            f"no embedded SAM weights (looked for {package_weights_path()} and "
            f"{cache_dir() / EMBEDDED_FILENAME}); run `fuzzyseg sam pretrain` to make them")
    obj = _read_checkpoint(path)
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        try:
            config = EmbeddedConfig.from_dict(obj["config"])
        except (ConfigError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{path}: bad embedded SAM config ({exc})") from exc
        state = obj.get("state_dict")
    else:  # a bare state dict of the default architecture
        meta = meta_sam_type(obj)
        if meta is not None:
            raise CheckpointError(f"{path}: this is Meta's SAM {meta} checkpoint, not the "
                                  f"embedded model: pass --sam-type {meta}")
        config, state = EmbeddedConfig(), obj
    sam = build_embedded(config)
    load_state_strict(sam, state, path, what="embedded SAM")
    sam.weights_path = str(path)
    return sam


def _load_registry(sam_type: str, checkpoint: Optional[PathLike]):
    import segment_anything

    if checkpoint is None:
        raise CheckpointError(
            f"--sam-type {sam_type} needs --sam-checkpoint FILE (Meta's sam_{sam_type}_*.pth); "
            "without one, use the embedded model (--sam-type embedded)")
    path = Path(checkpoint).expanduser()
    state = _read_checkpoint(path)  # before building: fail fast on a missing file
    # Built without a checkpoint: segment_anything's loader uses torch.load without
    # weights_only, so the state dict is read above, safely, and loaded here.
    if isinstance(state, Mapping) and state.get("format") == CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: this is the embedded model's checkpoint (`fuzzyseg sam "
                              f"pretrain`), not Meta's SAM {sam_type}: pass --sam-type embedded")
    sam = segment_anything.sam_model_registry[sam_type](checkpoint=None)
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]  # training checkpoints that wrap the state dict
    meta = meta_sam_type(state)
    if meta is not None and meta != sam_type:
        raise CheckpointError(f"{path}: this is a SAM {meta} checkpoint, not {sam_type}: "
                              f"pass --sam-type {meta}")
    load_state_strict(sam, state, path, what=f"SAM {sam_type}")
    sam.weights_path = str(path)
    return sam.eval()


SAM_BUILDERS: Dict[str, Callable[[Optional[PathLike]], Any]] = {
    "embedded": _load_embedded,
    "vit_b": partial(_load_registry, "vit_b"),
    "vit_l": partial(_load_registry, "vit_l"),
    "vit_h": partial(_load_registry, "vit_h"),
}


def load_sam(sam_type: str = "embedded", checkpoint: Optional[PathLike] = None,
             device: Union[str, torch.device] = "cpu"):
    """A ``segment_anything.modeling.Sam`` in eval mode on `device`.

    ``sam_type`` is a key of :data:`SAM_BUILDERS`; ``checkpoint`` a weights file
    (required for the real types; for ``embedded`` it defaults to the shipped
    weights). Raises CheckpointError for a missing, unsafe or mismatched file.
    """
    if sam_type not in SAM_BUILDERS:
        raise ConfigError(f"unknown SAM type {sam_type!r}; choose one of {sorted(SAM_BUILDERS)}")
    sam = SAM_BUILDERS[sam_type](checkpoint)
    sam.sam_type = sam_type
    return sam.to(device).eval()


def tensor_bytes(t: torch.Tensor) -> bytes:
    """A tensor's values as raw bytes (on the CPU, in memory order), for hashing."""
    t = t.detach().cpu().contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def model_fingerprint(module: torch.nn.Module) -> str:
    """A hash of a module's parameters and buffers (names, shapes, dtypes, values)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()
