"""Atomic writes and the label-image formats (docs/DATA.md).

Everything a run writes goes through these helpers, so an interrupted run
never leaves a half-written checkpoint, JSON or PNG behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


_FILE_MODE = []  # (read once: setting the umask to read it is process-wide)


def _file_mode() -> int:
    """What a plain ``open(path, "w")`` would give (0o666 less the umask): mkstemp
    makes its files 0o600, which would leave every output private to its writer."""
    if not _FILE_MODE:
        mask = os.umask(0)  # (the only portable way to read the umask)
        os.umask(mask)
        _FILE_MODE.append(0o666 & ~mask)
    return _FILE_MODE[0]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_json(obj: Any, path: PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")
    return Path(path)


def load_json(path: PathLike) -> Any:
    return json.loads(Path(path).read_text())


def save_torch(obj: Any, path: PathLike) -> Path:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_torch(path: PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint safely (weights_only: no pickled code runs)."""
    import torch

    from .errors import CheckpointError

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file (name the .pt/.pth file in it)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt file
        raise CheckpointError(f"{path}: cannot read checkpoint: {_why_unreadable(path, exc)}") \
            from exc


def _why_unreadable(path: Path, exc: Exception) -> str:
    """What is wrong with a file torch.load refused, in words a user can act on
    (torch's own message may be a bare key, or advise weights_only=False)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return str(e)
    if not head:
        return "the file is empty"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):  # torch zip / legacy pickle
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            m = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
            glob = f"such as {m.group(1)}" if m else first
            return (f"it holds objects other than tensors and plain containers ({glob}); "
                    "checkpoints are read with torch.load(weights_only=True), so no code in them "
                    "runs: save the model's state_dict() instead")
        # (torch's first line names zip internals: its gist, not all of it)
        return f"a damaged or truncated PyTorch file ({_short(first)})"
    return (f"not a PyTorch checkpoint: it begins with {head!r} (a text or HTML page, such as "
            "an interrupted or redirected download?)")


def _short(text: str, limit: int = 100) -> str:
    """Its first sentence, or its first ``limit`` characters."""
    first = text.split(". ", 1)[0]
    return first if len(first) <= limit else first[:limit - 3].rstrip() + "..."


_KERNEL_KEYS = ("foreach", "fused")


def load_optimizer_state(opt, state: Any) -> None:
    """``opt.load_state_dict(state)`` keeping ``opt``'s own ``foreach`` / ``fused``
    settings: a state saved by an older version would switch them back (slower)."""
    kept = [{k: g.get(k) for k in _KERNEL_KEYS if k in g} for g in opt.param_groups]
    opt.load_state_dict(state)
    for g, k in zip(opt.param_groups, kept):
        g.update(k)


def _jsonable(x: Any) -> Any:
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


# -------------------------------------------------------------- label images
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
    "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def voc_palette() -> list:
    """The standard Pascal VOC colour map (256 entries, flattened RGB)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def save_index_png(labels, path: PathLike, palette: Union[bool, list] = True) -> Path:
    """Write a [H, W] integer label array as an 8-bit PNG (VOC palette by default; a
    list: that palette, 256 flattened RGB, e.g. a labelmap's colours)."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(np.uint8)
    custom = isinstance(palette, list)
    img = Image.fromarray(arr, mode="P" if custom or palette else "L")
    if custom or palette:
        img.putpalette(palette if custom else voc_palette())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def save_image(array, path: PathLike, format: str = None) -> Path:
    """Write an image array (H, W[, 3], uint8) atomically; format from the suffix."""
    import numpy as np
    from PIL import Image

    path = Path(path)
    fmt = format or {".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}.get(path.suffix.lower(), "PNG")
    img = Image.fromarray(np.asarray(array).astype(np.uint8))
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path
