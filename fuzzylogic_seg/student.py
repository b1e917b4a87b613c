"""The prompt-free student: an smp segmentation model trained on label maps.

The student learns from label maps (pseudo-labels, or ground truth for the
full-supervision ceiling) with cross-entropy that ignores 255, optionally plus
a fuzzy-logic loss from a rule file evaluated on its own softmax (priors that
need no prompt, e.g. "the cup is ringed by disc"). Any architecture and encoder
of segmentation-models-pytorch's registry; ImageNet encoder weights are used
only when they are already in the local cache (no network is assumed), and the
log says which.

Training is deterministic given the seed (data order, flips and dropout are
derived from (seed, epoch, index), not from RNG state), writes an atomic
checkpoint after every epoch and resumes from it; the same loop runs in one
process or under torchrun (see :mod:`fuzzylogic_seg.distributed`).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from . import distributed as D
from .devices import native_bf16
from .errors import CheckpointError, ConfigError, DatasetError, DivergenceError
from .io import load_optimizer_state, load_torch, save_index_png, save_json, save_torch

NUM_CLASSES = {"voc": 21, "refuge": 3}
IGNORE = 255
STUDENT_FORMAT = "fuzzyseg-student/1"
# ImageNet statistics: what every smp/timm ImageNet encoder expects.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------- config
@dataclass
class StudentConfig:
    """Everything that decides a student's training (the `student:` config section)."""

    arch: str = "deeplabv3plus"
    encoder: str = "resnet18"
    # "imagenet" (or another smp weight name, or a local file): used when cached, else none.
    encoder_weights: Optional[str] = "imagenet"
    model_kwargs: Dict[str, Any] = field(default_factory=dict)  # passed to smp.create_model
    size: int = 256            # longest image side in pixels; a multiple of 32
    epochs: int = 30
    batch_size: int = 8        # global batch (split over DDP ranks)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hflip: bool = True
    scale_aug: Optional[List[float]] = None  # [lo, hi]: random rescale then crop/pad to size (None: off)
    color_jitter: float = 0.0  # s: brightness, contrast, saturation each scaled by U(1-s, 1+s) (0: off)
    boundary_ignore: int = 0   # r: label pixels within r pixels of another class are ignored (VOC's void band)
    label_smoothing: float = 0.0  # cross-entropy label smoothing (soft targets)
    logic_rules: Optional[str] = None   # rule file applied to the student's own softmax
    logic_weight: float = 0.1
    bn: str = "train"          # "train" | "frozen" (BatchNorm in eval mode: exact DDP equality)
    num_workers: int = 0
    amp: bool = True           # autocast on CUDA (ignored on CPU)

    def __post_init__(self):
        if self.size % 32:
            raise ConfigError(f"student size {self.size} must be a multiple of 32 (the encoder's stride)")
        if self.scale_aug is not None and not (len(self.scale_aug) == 2 and 0 < self.scale_aug[0] <= self.scale_aug[1]):
            raise ConfigError(f"student scale_aug must be [lo, hi] with 0 < lo <= hi, got {self.scale_aug}")
        if not 0 <= self.color_jitter < 1:
            raise ConfigError(f"student color_jitter must be in [0, 1), got {self.color_jitter}")
        if int(self.boundary_ignore) < 0 or int(self.boundary_ignore) != self.boundary_ignore:
            raise ConfigError(f"student boundary_ignore must be an integer >= 0, got {self.boundary_ignore}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"student label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.bn not in ("train", "frozen"):
            raise ConfigError(f"student bn must be 'train' or 'frozen', got {self.bn!r}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"student {name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "StudentConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown student option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------- encoder weights
def _hf_cached(repo_id: str, filename: str, revision: Optional[str] = None) -> Optional[str]:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    got = try_to_load_from_cache(repo_id, filename, revision=revision)
    return got if isinstance(got, str) else None


def _torch_hub_cached(url: str) -> Optional[str]:
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    return str(path) if path.is_file() else None


def find_encoder_weights(encoder: str, weights: Optional[str]) -> Tuple[Optional[str], str]:
    """Where `weights` for `encoder` lie on this machine, without any network.

    Returns (path or None, reason for the log). `weights` may be None/"none",
    a local file, or a weight name of smp's registry (e.g. "imagenet"); for
    ``tu-`` (timm) encoders any non-empty name means timm's default tag.
    """
    if weights is None or str(weights).lower() in ("none", "null", ""):
        return None, "encoder weights: none requested (random init)"
    if Path(str(weights)).expanduser().is_file():
        return str(Path(str(weights)).expanduser()), f"encoder weights: local file {weights}"
    if encoder.startswith("tu-"):
        import timm

        cfg = timm.models.get_pretrained_cfg(encoder[3:])
        if cfg is None:
            return None, f"encoder weights: timm has no pretrained weights for {encoder}; random init"
        hits = []
        if getattr(cfg, "hf_hub_id", None):
            for fn in ("model.safetensors", "pytorch_model.bin", getattr(cfg, "hf_hub_filename", None)):
                if fn:
                    hits.append(_hf_cached(cfg.hf_hub_id, fn))
        if getattr(cfg, "url", None):
            hits.append(_torch_hub_cached(cfg.url))
        hit = next((h for h in hits if h), None)
        if hit:
            return hit, f"encoder weights: {encoder} from the local cache {hit}"
        return None, (f"encoder weights: {encoder} pretrained weights are not in the local cache "
                      f"(HF hub / torch hub); random init")
    import segmentation_models_pytorch as smp

    entry = smp.encoders.encoders.get(encoder)
    if entry is None:
        raise ConfigError(f"unknown encoder {encoder!r}; smp offers {sorted(smp.encoders.get_encoder_names())} "
                          f"and timm encoders as 'tu-<name>'")
    settings = entry["pretrained_settings"].get(weights)
    if settings is None:
        raise ConfigError(f"encoder {encoder} has no weights named {weights!r}; "
                          f"choose one of {sorted(entry['pretrained_settings'])} or none")
    hit = _hf_cached(settings["repo_id"], "model.safetensors", settings.get("revision"))
    if hit:
        return hit, f"encoder weights: {encoder}/{weights} from the local cache {hit}"
    return None, (f"encoder weights: {encoder}/{weights} not in the local cache "
                  f"(huggingface {settings['repo_id']}); random init")


def _load_state(path: str) -> Dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return sd.get("state_dict", sd) if isinstance(sd, dict) else sd


def build_model(cfg: StudentConfig, num_classes: int, seed: int = 0, log: Log = _print,
                weights: bool = True) -> torch.nn.Module:
    """smp.create_model(arch, encoder, classes) with cached encoder weights when present.

    `weights=False` skips the weight lookup (loading a trained student).
    """
    import segmentation_models_pytorch as smp

    path, reason = find_encoder_weights(cfg.encoder, cfg.encoder_weights) if weights else (None, "")
    if reason:
        log(reason)
    kwargs = dict(cfg.model_kwargs)
    torch.manual_seed(D.derive_seed(seed, 7))  # initialisation depends on the seed only
    try:
        if path and cfg.encoder.startswith("tu-"):
            # timm reads a local file when the pretrained config names one.
            kwargs["pretrained_cfg_overlay"] = dict(file=path, source="file")
            model = smp.create_model(cfg.arch, encoder_name=cfg.encoder, encoder_weights=True,
                                     classes=num_classes, **kwargs)
        else:
            model = smp.create_model(cfg.arch, encoder_name=cfg.encoder, encoder_weights=None,
                                     classes=num_classes, **kwargs)
            if path:
                try:  # smp's encoders drop their classifier keys themselves
                    model.encoder.load_state_dict(_load_state(path))
                except RuntimeError as exc:
                    raise ConfigError(f"encoder weights {path} do not fit {cfg.encoder}: {exc}") from exc
    except KeyError as exc:  # smp signals unknown arch/encoder names with KeyError
        raise ConfigError(f"cannot build student {cfg.arch}/{cfg.encoder}: {exc.args[0]}") from exc
    return model


# Set by the student's own options, not by model_kwargs.
_RESERVED_KWARGS = ("encoder_name", "encoder_weights", "classes", "in_channels")


def check_model(cfg: StudentConfig, num_classes: int = 2) -> None:
    """Build the student's architecture on the meta device (no memory, ~0.1 s), so
    that an unknown arch, encoder or `model_kwargs` key is a ConfigError before a
    run's first stage, not after its SAM stages. smp hands an architecture's unknown
    keyword arguments to the encoder, and only timm encoders (`tu-NAME`) read them:
    for smp's own encoders a misspelt key would be dropped without a word."""
    import difflib
    import inspect

    import segmentation_models_pytorch as smp

    archs = getattr(smp, "MODEL_ARCHITECTURES_MAPPING", None)  # (smp >= 0.4; older: the build checks)
    if archs is not None and cfg.arch.lower() not in archs:
        near = difflib.get_close_matches(cfg.arch.lower(), list(archs), n=1)
        raise ConfigError(f"unknown student arch {cfg.arch!r}" + (f"; did you mean {near[0]}?" if near else ".")
                          + f" Known: {', '.join(archs)}")
    kwargs = dict(cfg.model_kwargs or {})
    reserved = [k for k in kwargs if k in _RESERVED_KWARGS]
    if reserved:
        raise ConfigError(f"student.model_kwargs cannot set {', '.join(reserved)}: the student's "
                          "encoder, encoder_weights and the data set's classes decide them")
    if archs is not None and not cfg.encoder.startswith("tu-"):
        encoders = smp.encoders.get_encoder_names()
        if cfg.encoder not in encoders:
            near = difflib.get_close_matches(cfg.encoder, encoders, n=3)
            raise ConfigError(f"unknown student encoder {cfg.encoder!r}"
                              + (f"; did you mean {' or '.join(near)}?" if near else ".")
                              + " smp's encoders: `python -c \"import segmentation_models_pytorch as smp; "
                              "print(smp.encoders.get_encoder_names())\"`; timm's as tu-NAME")
        params = [n for n, p in inspect.signature(archs[cfg.arch.lower()].__init__).parameters.items()
                  if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                  and n not in _RESERVED_KWARGS]
        for k in kwargs:
            if k not in params:
                near = difflib.get_close_matches(k, params, n=1)
                raise ConfigError(f"unknown student.model_kwargs key {k!r} for {cfg.arch}"
                                  + (f"; did you mean {near[0]}?" if near else ".")
                                  + f" Known: {', '.join(params)} (other keys reach timm encoders only, "
                                  "`tu-NAME`)")
    try:
        with torch.device("meta"):
            smp.create_model(cfg.arch, encoder_name=cfg.encoder, encoder_weights=None,
                             classes=num_classes, **kwargs)
    except KeyError as exc:  # smp's way of saying: no such encoder
        raise ConfigError(f"cannot build student {cfg.arch}/{cfg.encoder}: {exc.args[0]}") from exc
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        raise ConfigError(f"cannot build student {cfg.arch}/{cfg.encoder} with model_kwargs "
                          f"{kwargs}: {exc}") from exc


# ---------------------------------------------------------------- label files
def write_label(labels: torch.Tensor, path: Path, kind: str, palette: Optional[list] = None) -> Path:
    """LongTensor [H, W] -> VOC palette PNG (or `palette`: a labelmap's colours) or
    REFUGE grey 0/128/255 PNG (atomic)."""
    if kind == "refuge":
        from .data.refuge import refuge_to_disk

        return save_index_png(refuge_to_disk(labels.cpu()), path, palette=False)
    return save_index_png(labels.cpu(), path, palette=palette or True)


# -------------------------------------------------------------- image geometry
def letterbox_size(h: int, w: int, size: int) -> Tuple[int, int]:
    from .data.transforms import scaled_size

    return scaled_size(h, w, size)[0]


def normalize(image_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [3, H, W] (or float in [0, 1]) -> ImageNet-normalised float."""
    mean = torch.tensor(IMAGENET_MEAN, device=image_u8.device).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image_u8.device).view(-1, 1, 1)
    x = image_u8.float() / 255.0 if not image_u8.is_floating_point() else image_u8
    return (x - mean) / std


def color_jitter(image_u8: torch.Tensor, valid: torch.Tensor, u: Sequence[float], strength: float) -> torch.Tensor:
    """Photometric augmentation: brightness, contrast, saturation, each a factor
    1 + strength * (2u - 1) for `u` in [0, 1)^3; contrast and saturation about
    the valid pixels' mean grey. Returns float [3, H, W] in [0, 1], padding 0."""
    x = image_u8.float() / 255.0
    b, c, s = (1.0 + strength * (2 * v - 1) for v in u[:3])
    m = valid.float()
    x = x * b
    mean = (_grey(x) * m).sum() / m.sum().clamp_min(1.0)
    x = (x - mean) * c + mean
    grey = _grey(x)
    x = (x - grey) * s + grey
    return x.clamp(0, 1) * m


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luma (ITU-R 601) of an RGB [3, H, W] tensor, as [1, H, W]."""
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]


def boundary_void(label: torch.Tensor, radius: int) -> torch.Tensor:
    """`label` [H, W] with every pixel within `radius` (Chebyshev) of a pixel of
    another class set to IGNORE -- VOC's void band along outlines, for any label
    map. Ignored pixels (and the frame) are not boundaries."""
    if radius <= 0:
        return label
    lab = label.long()
    known = lab != IGNORE
    k = 2 * radius + 1
    hi = F.max_pool2d(torch.where(known, lab, -1).float()[None, None], k, stride=1, padding=radius)[0, 0]
    big = float(max(int(lab[known].max()) if known.any() else 0, 0) + 1)
    lo = -F.max_pool2d(-torch.where(known, lab.float(), big)[None, None], k, stride=1, padding=radius)[0, 0]
    out = lab.clone()
    out[known & (hi != lo)] = IGNORE
    return out


def letterbox(image_u8: torch.Tensor, label: Optional[torch.Tensor], size: int):
    """Resize the longest side to `size`, pad bottom/right to size x size.

    The data layer's resampling (bilinear with anti-aliasing for the image,
    nearest pixel centre for labels). Returns (uint8 image [3,S,S] padded with
    0, label [S,S] with 255 on padding or None, valid [S,S] bool).
    """
    from .data.transforms import resize_image
    from .weak.types import resize_labels

    _, h, w = image_u8.shape
    nh, nw = letterbox_size(h, w, size)
    out = torch.zeros(3, size, size, dtype=torch.uint8)
    out[:, :nh, :nw] = resize_image(image_u8, (nh, nw))
    valid = torch.zeros(size, size, dtype=torch.bool)
    valid[:nh, :nw] = True
    lab = None
    if label is not None:
        if tuple(label.shape) != (h, w):
            raise DatasetError(f"label of shape {tuple(label.shape)} does not match image of shape {(h, w)}")
        lab = torch.full((size, size), IGNORE, dtype=torch.long)
        lab[:nh, :nw] = resize_labels(label.long(), (nh, nw))
    return out, lab, valid


def rescale_crop(img: torch.Tensor, lab: torch.Tensor, valid: torch.Tensor, factor: float,
                 fy: float, fx: float):
    """Scale augmentation of a letterboxed S x S triple: resize by `factor`, then
    crop S x S at fractions (fy, fx) of the slack (factor > 1) or pad
    bottom/right (factor < 1: image 0, label 255, not valid)."""
    from .data.transforms import resize_image
    from .weak.types import resize_labels

    size = img.shape[-1]
    n = max(1, round(size * factor))
    img, lab = resize_image(img, (n, n)), resize_labels(lab, (n, n))
    valid = resize_labels(valid.to(torch.uint8), (n, n)).bool()
    return (_crop_or_pad(img, size, fy, fx), _crop_or_pad(lab, size, fy, fx, IGNORE),
            _crop_or_pad(valid, size, fy, fx))


def _crop_or_pad(t: torch.Tensor, size: int, fy: float, fx: float, value=0) -> torch.Tensor:
    """The S x S window of an n x n tensor (last two axes) that :func:`rescale_crop`
    keeps: cropped at fractions (fy, fx) of the slack, or padded bottom/right."""
    n = t.shape[-1]
    if n >= size:
        y, x = int(fy * (n - size)), int(fx * (n - size))
        return t[..., y:y + size, x:x + size]
    return F.pad(t, (0, size - n, 0, size - n), value=value)


# ------------------------------------------------------------------- datasets
class GroundTruth:
    """Label source: the sample's ground truth (the full-supervision ceiling)."""

    def __call__(self, sample: Dict[str, Any]) -> torch.Tensor:
        if "gt" not in sample:
            raise DatasetError(f"sample {sample.get('id')} has no ground truth (dataset built with with_gt=False)")
        return torch.as_tensor(sample["gt"]).long()


class StudentDataset(torch.utils.data.Dataset):
    """Letterboxed (image, label) pairs from a sample dataset and a label source.

    Flips are drawn from (seed, epoch, index) so a resumed epoch repeats the
    interrupted one exactly; `set_epoch` before iterating. Letterboxed uint8
    images are cached in memory when `cache` (small data sets). `present=C`
    adds each image's :func:`present_classes` vector of C classes. `boxes=True`
    (with `present=C`) adds ``inbox`` [C, S, S] bool: the pixel lies in a weak
    box of that class, rasterised at the image's own size (pixel centre inside
    the half-open box) and then letterboxed, rescaled, cropped and flipped
    exactly like the label (nearest pixel centre; 0 on padding).
    """

    def __init__(self, base, labels: Callable[[Dict[str, Any]], torch.Tensor], size: int,
                 seed: int = 0, hflip: bool = True, cache: Optional[bool] = None, present: int = 0,
                 scale: Optional[Sequence[float]] = None, jitter: float = 0.0, boundary_ignore: int = 0,
                 boxes: bool = False):
        if boxes and not present:
            raise ConfigError("StudentDataset: boxes=True needs present=<number of classes>")
        self.base, self.labels, self.size, self.boxes = base, labels, size, bool(boxes)
        self.seed, self.hflip, self.epoch, self.present = seed, hflip, 0, present
        self.scale = tuple(scale) if scale else None
        self.jitter, self.boundary_ignore = float(jitter), int(boundary_ignore)
        self.cache = len(base) <= 2000 if cache is None else cache
        self._memo: Dict[int, Tuple] = {}

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _load(self, i: int):
        if i in self._memo:
            return self._memo[i]
        sample = self.base[i]
        img, lab, valid = letterbox(torch.as_tensor(sample["image"]), self.labels(sample), self.size)
        lab = boundary_void(lab, self.boundary_ignore)
        present = present_classes(sample, self.present) if self.present else None
        if self.boxes:  # (classes [K], their box maps [K, S, S]): compact for the cache
            present = (present, *letterbox_box_maps(sample, self.present, self.size))
        item = (sample["id"], img, lab, valid, present)
        if self.cache:
            self._memo[i] = item
        return item

    def __getitem__(self, i: int) -> Dict[str, Any]:
        sid, img, lab, valid, present = self._load(i)
        maps = None
        if self.boxes:
            present, box_classes, maps = present
        if self.scale:
            u = torch.rand(3, generator=D.generator(self.seed, 13, self.epoch, i)).tolist()
            factor = self.scale[0] + u[0] * (self.scale[1] - self.scale[0])
            if maps is not None:
                maps = rescale_crop_maps(maps, factor, u[1], u[2])
            img, lab, valid = rescale_crop(img, lab, valid, factor, u[1], u[2])
        if self.hflip and torch.rand(1, generator=D.generator(self.seed, 11, self.epoch, i)).item() < 0.5:
            img, lab, valid = img.flip(-1), lab.flip(-1), valid.flip(-1)
            if maps is not None:
                maps = maps.flip(-1)
        if self.jitter > 0:
            u = torch.rand(3, generator=D.generator(self.seed, 17, self.epoch, i)).tolist()
            img = color_jitter(img, valid, u, self.jitter)
        out = {"id": sid, "image": normalize(img), "label": lab, "valid": valid}
        if present is not None:
            out["present"] = present
        if maps is not None:
            inbox = torch.zeros(self.present, *maps.shape[-2:], dtype=torch.bool)
            inbox[box_classes] = maps
            out["inbox"] = inbox
        return out


def _resize_maps(maps: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """bool [K, H, W] -> [K, h, w] by nearest pixel centre (resize_labels per map)."""
    if maps.shape[0] == 0:
        return torch.zeros(0, *size, dtype=torch.bool)
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps.clone()
    return F.interpolate(maps[None].float(), size=tuple(size), mode="nearest-exact")[0] > 0.5


def letterbox_box_maps(sample: Dict[str, Any], num_classes: int, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(classes [K], bool [K, S, S]): for each class with a weak box, the union of
    its boxes rasterised at the image's size (pixel centre in the half-open box,
    :func:`fuzzylogic_seg.compose.box_pixels`), then letterboxed like the label."""
    from .compose import box_pixels

    weak = sample.get("weak")
    if weak is None or weak.boxes.shape[0] == 0:
        raise DatasetError(f"sample {sample.get('id')} has no weak boxes for the student's box rules "
                           f"(box facts need weak labels with boxes)")
    _, h, w = torch.as_tensor(sample["image"]).shape
    labels = weak.box_labels.long()
    keep = (labels >= 0) & (labels < num_classes)
    classes = labels[keep].unique()
    full = torch.zeros(len(classes), h, w, dtype=torch.bool)
    for b, c in zip(weak.boxes[keep], labels[keep]):
        x0, y0, x1, y1 = box_pixels(b, h, w)
        full[int((classes == c).nonzero()[0, 0]), y0:y1, x0:x1] = True
    nh, nw = letterbox_size(h, w, size)
    out = torch.zeros(len(classes), size, size, dtype=torch.bool)
    out[:, :nh, :nw] = _resize_maps(full, (nh, nw))
    return classes, out


def rescale_crop_maps(maps: torch.Tensor, factor: float, fy: float, fx: float) -> torch.Tensor:
    """:func:`rescale_crop` for bool maps [K, S, S] (padding False)."""
    size = maps.shape[-1]
    n = max(1, round(size * factor))
    return _crop_or_pad(_resize_maps(maps, (n, n)), size, fy, fx)


def present_classes(sample: Dict[str, Any], num_classes: int) -> torch.Tensor:
    """[C] float: the classes an image's weak labels name (tags, boxes, points,
    scribbles), background always -- what image-level student rules may use."""
    from .facts import tag_vector

    weak = sample.get("weak")
    if weak is None:
        raise DatasetError(f"sample {sample.get('id')} has no weak labels for the student's rules")
    named = [torch.as_tensor(x).long().flatten() for x in (weak.box_labels, weak.point_labels, weak.scribble)
             if x is not None]
    named = torch.cat(named) if named else torch.zeros(0, dtype=torch.long)
    named = named[(named >= 0) & (named < num_classes)]
    present = torch.maximum(tag_vector(weak.tags, num_classes), tag_vector(named.unique(), num_classes))
    present[0] = 1.0
    return present


# ------------------------------------------------------------- logic on the student
def _refuge_facts(logits: torch.Tensor, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """Facts on a REFUGE student's softmax over (background, rim, cup), [B, H, W] each.

    near_cup: the cup probability max-pooled over a (2r+1)^2 window with r =
    2% of the input side, i.e. "within r pixels of the cup" (the rim rings
    the cup, so those pixels are disc).
    """
    p = logits.float().softmax(1)
    cup = p[:, 2]
    r = max(1, round(0.02 * max(logits.shape[-2:])))
    return {
        "background": p[:, 0],
        "rim": p[:, 1],
        "disc": (p[:, 1] + p[:, 2]).clamp(0, 1),
        "cup": cup,
        "near_cup": F.max_pool2d(cup[:, None], 2 * r + 1, stride=1, padding=r)[:, 0],
    }


VOC_BOX_FACTS = ("inbox", "outside", "rowin", "colin", "valid", "boxed")


def _voc_facts(logits: torch.Tensor, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """Facts for a VOC student: seg(class, pixel) logits [B, C, H, W]; present(class) [B, C].

    With the training items' weak boxes (``batch["inbox"]``, StudentDataset
    ``boxes=True``), also, as 0/1 floats at the student's resolution and after
    its augmentation: inbox(class, row, col) [B, C, H, W] (in a box of that
    class), rowin(class, row) [B, C, H] and colin(class, col) [B, C, W] (the
    row / column crosses such a box), outside(row, col) [B, H, W] (an image
    pixel in no box), valid(row, col) [B, H, W] (an image pixel, not padding)
    and boxed(class) [B, C] (a box of the class is in view). Rule files that use
    them make the pipeline build the dataset with ``boxes=True``
    (:attr:`StudentLogic.needs_boxes`); examples/rules/student_voc.rules.
    """
    facts = {"seg": logits.float()}
    if "present" in batch:
        facts["present"] = batch["present"].to(logits.device).float()
    if "inbox" in batch:
        inbox = batch["inbox"].to(logits.device).float()
        valid = batch["valid"].to(logits.device).float()
        facts.update(inbox=inbox, rowin=inbox.amax(3), colin=inbox.amax(2), valid=valid,
                     outside=valid * (1 - inbox.amax(1)), boxed=inbox.flatten(2).amax(2))
    return facts


STUDENT_FACTS: Dict[str, Callable] = {"refuge": _refuge_facts, "voc": _voc_facts}
# What each student fact says (``fuzzyseg rules facts --for student-voc``; a test checks
# the names against what STUDENT_FACTS builds).
STUDENT_FACT_DOCS: Dict[str, Dict[str, str]] = {
    "refuge": {
        "background": "the student's background probability [B, H, W]",
        "rim": "its rim probability (disc minus cup)",
        "disc": "rim + cup",
        "cup": "its cup probability",
        "near_cup": "the cup probability max-pooled over 2% of the input side: within reach of the cup",
    },
    "voc": {
        "seg": "the student's class logits, seg(class, row, col); declare it softmax(class)",
        "present": "the class is in the image's weak labels, present(class)",
        "inbox": "the pixel lies in a weak box of the class, inbox(class, row, col)",
        "rowin": "the row crosses a box of the class, rowin(class, row)",
        "colin": "the column crosses a box of the class, colin(class, col)",
        "outside": "an image pixel in no box, outside(row, col)",
        "valid": "an image pixel, not padding, valid(row, col)",
        "boxed": "a box of the class is in view, boxed(class)",
    },
}


class StudentLogic:
    """A rule file evaluated on the student's own predictions (a loss term).

    Facts come from ``STUDENT_FACTS[kind]`` (documented there); the rule file
    declares the ones it uses. Padding pixels are excluded through the
    ``pixel`` domain when the file declares that sort.
    """

    def __init__(self, rules: str, kind: str, num_classes: Optional[int] = None):
        import fuzzylogic

        from .rulefiles import resolve_rule_file

        self.path = str(resolve_rule_file(rules))
        self.theory = fuzzylogic.load(self.path)
        self.kind = kind
        self.facts = STUDENT_FACTS[kind]
        self.predicates = tuple(self.theory.required_facts)
        self.pixel_domain = "pixel" in self.theory.sorts
        self.needs_boxes = kind == "voc" and bool(set(self.predicates) & set(VOC_BOX_FACTS))
        n = int(num_classes or NUM_CLASSES[kind])
        probe = {"present": torch.ones(1, n), "valid": torch.ones(1, 4, 4, dtype=torch.bool),
                 "inbox": torch.ones(1, n, 4, 4, dtype=torch.bool)}
        available = set(self.facts(torch.zeros(1, n, 4, 4), probe))
        unknown = set(self.predicates) - available
        if unknown:
            from .rule_facts import located

            program = self.theory.program
            decl = next(d for d in program.predicates if d.name in unknown)
            raise ConfigError(located(
                program, decl.pos, f"predicate {decl.name!r} is not a fact of the {kind} student"
                + (f" (nor are {', '.join(sorted(unknown - {decl.name}))})" if len(unknown) > 1 else ""),
                hint=f"the {kind} student provides {', '.join(sorted(available))}"))

    def __call__(self, logits: torch.Tensor, batch: Dict[str, Any]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        facts = {k: v for k, v in self.facts(logits, batch).items() if k in self.predicates}
        domains = {"pixel": batch["valid"].to(logits.device)} if self.pixel_domain else None
        ev = self.theory.evaluate(domains=domains, validate=False, **facts)
        return ev.loss, {k: v.detach().float().mean() for k, v in ev.truth.items()}


# ------------------------------------------------------------------- training
def per_image_ce(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean over images of each image's mean cross-entropy over its labelled pixels.

    Per-image means make a global batch split over DDP ranks average to the
    same value as the whole batch in one process.
    """
    ce = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE, reduction="none",
                         label_smoothing=label_smoothing)
    valid = (labels != IGNORE).float()
    per = (ce * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1.0)
    return per.mean()


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if native_bf16(device) else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    import contextlib

    return contextlib.nullcontext()


def _freeze_bn(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


@dataclass
class TrainResult:
    model: torch.nn.Module
    history: List[Dict[str, Any]]
    resumed_from: Optional[int]


def train_student(
    cfg: StudentConfig,
    dataset: StudentDataset,
    kind: str,
    out_dir,
    *,
    seed: int = 0,
    ctx: Optional[D.DistContext] = None,
    fingerprint: str = "",
    log: Log = _print,
    on_epoch_end: Optional[Callable[[int, Dict[str, Any]], None]] = None,
    progress: bool = True,
    logic: Optional["StudentLogic"] = None,
    num_classes: Optional[int] = None,
) -> TrainResult:
    """Train a student; ``out_dir/checkpoint.pt`` after every epoch, resumed when present.

    The checkpoint is used only if its `fingerprint` (of config, data and
    seed, chosen by the caller) matches. `on_epoch_end(epoch, record)` runs
    after the checkpoint is written (tests raise there to simulate a crash).
    ``logic``: the :class:`StudentLogic` of ``cfg.logic_rules`` when the caller
    has built it already (else it is built here). Returns the trained
    (unwrapped) model and the per-epoch history; the caller saves the final
    model (:func:`save_student`). ``num_classes``: the data set's (default: the
    kind's, 21 for VOC and 3 for REFUGE).
    """
    from tqdm import tqdm

    ctx = ctx or D.DistContext()
    device = ctx.device
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    num_classes = int(num_classes or NUM_CLASSES[kind])
    model = build_model(cfg, num_classes, seed=seed, log=log if ctx.is_main else (lambda m: None)).to(device)
    if logic is None and cfg.logic_rules:
        logic = StudentLogic(cfg.logic_rules, kind, num_classes)
    # foreach: the per-tensor loop's arithmetic, batched (same weights; CUDA's default)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            foreach=True)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not native_bf16(device)) \
        if device.type == "cuda" else None

    history: List[Dict[str, Any]] = []
    start, resumed = 0, None
    if ckpt_path.is_file():
        state = load_torch(ckpt_path, map_location=device)
        if state.get("fingerprint") == fingerprint and state.get("format") == STUDENT_FORMAT:
            model.load_state_dict(state["model"])
            load_optimizer_state(opt, state["optimizer"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            history = list(state["history"])
            start = resumed = int(state["epoch"]) + 1
            log(f"student: resuming from {ckpt_path} after epoch {start}")
        else:
            log(f"student: ignoring {ckpt_path} (made by a different configuration)")

    per_rank = D.per_rank_batch(cfg.batch_size, ctx)
    n_rank = len(dataset) // ctx.world_size  # (the sampler drops the tail, see make_sampler)
    if n_rank < per_rank:
        raise ConfigError(f"student batch size {cfg.batch_size} is larger than the {len(dataset)} training images")
    sampler = D.make_sampler(dataset, ctx, seed=D.derive_seed(seed, 3) % (2 ** 31), shuffle=True)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=per_rank, sampler=sampler, drop_last=True, num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
    )
    steps_per_epoch = len(loader)
    total = cfg.epochs * steps_per_epoch
    net = D.wrap_model(model, ctx)

    for epoch in range(start, cfg.epochs):
        torch.manual_seed(D.derive_seed(seed, 5, epoch, ctx.rank))  # dropout: a function of (seed, epoch, rank)
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        net.train()
        if cfg.bn == "frozen":
            _freeze_bn(net)
        t0 = time.time()
        sums: Dict[str, float] = {"loss": 0.0, "ce": 0.0, "logic": 0.0}
        rule_sums: Dict[str, float] = {}
        bar = tqdm(loader, desc=f"student {out_dir.name} epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (progress and ctx.is_main))
        for it, batch in enumerate(bar):
            step = epoch * steps_per_epoch + it
            lr = cfg.lr * (1 - step / total) ** 0.9  # poly schedule, a function of the step
            for g in opt.param_groups:
                g["lr"] = lr
            x = batch["image"].to(device, non_blocking=True)
            y = batch["label"].to(device, non_blocking=True)
            with _autocast(device, use_amp):
                logits = net(x)
            ce = per_image_ce(logits, y, cfg.label_smoothing)
            loss = ce
            if logic is not None:
                lg, sats = logic(logits.float(), {k: v for k, v in batch.items() if k != "image"})
                loss = ce + cfg.logic_weight * lg
                sums["logic"] += float(lg.detach())
                for k, v in sats.items():
                    rule_sums[k] = rule_sums.get(k, 0.0) + float(v)
            if not torch.isfinite(loss):
                raise DivergenceError(f"student loss is {float(loss)} at epoch {epoch + 1}, step {it}: "
                                      "lower student.lr (on CUDA, or set student.amp=false), and rerun")
            opt.zero_grad(set_to_none=True)
            if scaler is not None and scaler.is_enabled():
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            sums["loss"] += float(loss.detach())
            sums["ce"] += float(ce.detach())
            bar.set_postfix(loss=f"{sums['loss'] / (it + 1):.3f}")
        names = sorted(rule_sums)
        vals = D.all_reduce_mean([sums["loss"], sums["ce"], sums["logic"]] + [rule_sums[k] for k in names], ctx)
        vals = [v / max(1, steps_per_epoch) for v in vals]
        rec = {"epoch": epoch + 1, "loss": vals[0], "ce": vals[1], "lr": lr,
               "seconds": round(time.time() - t0, 3), "rules": dict(zip(names, vals[3:]))}
        if logic is not None:
            rec["logic"] = vals[2]
        history.append(rec)
        if ctx.is_main:
            save_torch({
                "format": STUDENT_FORMAT, "fingerprint": fingerprint, "epoch": epoch,
                "model": D.unwrap_model(net).state_dict(), "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "history": history,
            }, ckpt_path)
            log(f"student {out_dir.name}: epoch {epoch + 1}/{cfg.epochs} loss {rec['loss']:.4f}"
                + (f" logic {rec['logic']:.4f}" if "logic" in rec else "") + f" ({rec['seconds']:.1f}s)")
        D.barrier(ctx)
        if on_epoch_end is not None:
            on_epoch_end(epoch, rec)
    return TrainResult(D.unwrap_model(net), history, resumed)


# ------------------------------------------------------------ saving / loading
def save_student(path, model: torch.nn.Module, cfg: StudentConfig, kind: str,
                 extra: Optional[Dict[str, Any]] = None, class_list=None) -> Path:
    """The trained student as one file: weights plus everything that rebuilds it.

    ``class_list``: a data set's own classes (:class:`fuzzylogic_seg.data.classes.ClassList`);
    their names (and labelmap colours) are stored as ``class_names`` (``class_colors``)
    so that predictions say which class each label is. The VOC classes are not stored
    (a student of the 21 VOC classes is written as before)."""
    state = {
        "format": STUDENT_FORMAT,
        "dataset": kind,
        "classes": NUM_CLASSES[kind] if class_list is None else len(class_list),
        "config": cfg.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    if class_list is not None and not class_list.is_voc:
        state["class_names"] = list(class_list.names)
        if class_list.has_colors:
            state["class_colors"] = [list(c) if c is not None else None for c in class_list.colors]
    return save_torch(state, path)


def default_class_names(kind: str, n: int) -> List[str]:
    """The class names of a student saved without its own (``kind``'s classes)."""
    if kind == "refuge":
        from .data.refuge import REFUGE_CLASSES

        names = list(REFUGE_CLASSES)
    else:
        from .io import VOC_CLASSES

        names = list(VOC_CLASSES)
    return names if len(names) == n else [str(i) for i in range(n)]


class Student:
    """A trained student for inference: ``Student.load(path).predict(image)``."""

    def __init__(self, model: torch.nn.Module, cfg: StudentConfig, kind: str, device="cpu",
                 class_names: Optional[Sequence[str]] = None, palette: Optional[list] = None):
        self.cfg, self.kind, self.device = cfg, kind, torch.device(device)
        self.model = model.to(self.device).eval()
        self.class_names = list(class_names) if class_names is not None else None
        self.palette = palette  # a labelmap's colours for the label PNGs (None: VOC's)

    @classmethod
    def load(cls, path, device="cpu") -> "Student":
        state = load_torch(path)
        if not isinstance(state, dict) or state.get("format") != STUDENT_FORMAT:
            raise CheckpointError(f"{path}: not a fuzzyseg student (expected format {STUDENT_FORMAT})")
        if "config" not in state or "state_dict" not in state:
            raise CheckpointError(f"{path}: a training checkpoint (for resuming), not a trained "
                                  "student: use the model.pt beside it")
        cfg = StudentConfig.from_dict(state["config"])
        kind = state["dataset"]
        n = int(state["classes"])
        model = build_model(cfg, n, weights=False)
        try:
            model.load_state_dict(state["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: weights do not fit {cfg.arch}/{cfg.encoder} ({exc})") from exc
        names = state.get("class_names") or default_class_names(kind, n)
        if len(names) != n:
            raise CheckpointError(f"{path}: {len(names)} class names for a {n}-class student")
        palette = None
        if state.get("class_colors"):
            from .data.classes import ClassList

            palette = ClassList(tuple(names), tuple(tuple(c) if c else None
                                                    for c in state["class_colors"])).palette()
        return cls(model, cfg, kind, device, class_names=names, palette=palette)

    @torch.no_grad()
    def _low_logits(self, image_u8: torch.Tensor) -> torch.Tensor:
        """uint8 [3, H, W] -> class logits [1, C, nh, nw] at the student's scale."""
        image_u8 = torch.as_tensor(image_u8)
        if image_u8.ndim != 3 or image_u8.shape[0] != 3:
            raise DatasetError(f"expected an RGB image [3, H, W], got shape {tuple(image_u8.shape)}")
        _, h, w = image_u8.shape
        img, _, _ = letterbox(image_u8, None, self.cfg.size)
        nh, nw = letterbox_size(h, w, self.cfg.size)
        x = normalize(img.to(self.device))[None]
        with _autocast(self.device, self.cfg.amp):
            logits = self.model(x)
        return logits.float()[:, :, :nh, :nw]

    @torch.no_grad()
    def predict_logits(self, image_u8: torch.Tensor) -> torch.Tensor:
        """uint8 [3, H, W] -> class logits [C, H, W] at the image's own size."""
        h, w = torch.as_tensor(image_u8).shape[-2:]
        return _full_size(self._low_logits(image_u8), int(h), int(w))[0]

    @torch.no_grad()
    def predict(self, image_u8: torch.Tensor) -> torch.Tensor:
        """uint8 [3, H, W] -> LongTensor [H, W] of classes."""
        h, w = (int(v) for v in torch.as_tensor(image_u8).shape[-2:])
        low = self._low_logits(image_u8)
        if low.shape[1] * h * w <= _FULL_LOGITS:
            return _full_size(low, h, w)[0].argmax(0).cpu()
        # A large photo: all classes' logits at full size would take C x 4 bytes a
        # pixel (6 GB for 50 MP and 21 classes); one class at a time, keeping the
        # running best (">": ties keep the lower class, as argmax does).
        best = label = None
        for c in range(low.shape[1]):
            up = _full_size(low[:, c:c + 1], h, w)[0, 0]
            if best is None:
                best, label = up, torch.zeros(h, w, dtype=torch.long, device=up.device)
            else:
                better = up > best
                best = torch.where(better, up, best)
                label[better] = c
        return label.cpu()


# class logits at full image size above which predict() upsamples one class at a time
_FULL_LOGITS = 1 << 26  # (256 MB of float32)


def _full_size(low: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Logits [1, C, nh, nw] at the student's scale -> [1, C, h, w] at the image's."""
    return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)


def predict_dataset(student: Student, dataset, out_dir, progress: bool = True,
                    desc: str = "predict", model: Optional[str] = None) -> List[str]:
    """Write ``out_dir/ID.png`` for every sample of `dataset` (label formats of docs/DATA.md)."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    ids = []
    for i in tqdm(range(len(dataset)), desc=desc, leave=False, disable=not progress):
        sample = dataset[i]
        write_label(student.predict(sample["image"]), out_dir / f"{sample['id']}.png", student.kind,
                    getattr(student, "palette", None))
        ids.append(sample["id"])
    summary = {"count": len(ids), "dataset": student.kind, "model": model, "ids": ids}
    names = getattr(student, "class_names", None)
    if names is not None and student.kind == "voc" and not _is_voc(names):
        summary["classes"] = list(names)  # label value i is classes[i] (255: none)
    save_json(summary, out_dir / "summary.json")
    return ids


def _is_voc(names: Sequence[str]) -> bool:
    from .io import VOC_CLASSES

    return tuple(names) == tuple(VOC_CLASSES)
