"""The embedded VOC-like data set, written in the real VOC 2012 layout.

`generate_voc(OUT)` writes OUT/VOCdevkit/VOC2012/{JPEGImages, SegmentationClass,
SegmentationObject, Annotations, ImageSets/Segmentation} so the demo and the
tests go through the real loader. Each image (seeded by (seed, split, index),
so one image does not depend on the others):

- a size with VOC-like variety (longest side in `size`, aspect 4:3, 3:4, 1:1
  or 3:2);
- a cluttered background: a two-colour gradient, low-frequency shading, a
  fine grain and 0-3 plain distractor shapes whose colours are drawn from the
  object colours (colour alone does not tell object from background);
- 1-3 objects of the chosen classes, each a composite shape that does not
  fill its box (fuselage + wings, hull + sail, body + head + ears, ...) with a
  class texture (stripes, checks, grain, gradients) over colours whose ranges
  overlap between classes; later objects occlude earlier ones and may be
  truncated by the frame;
- a palette mask with VOC's 5-pixel void (255) band along every object
  outline (not along the frame), the instance mask, and an XML with one
  <object> per visible instance: <name>, 1-based inclusive <bndbox> of its
  visible pixels, <truncated>, <occluded>, <difficult> (1 when under 1% of
  the image is visible).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from ..errors import ConfigError
from ..io import VOC_CLASSES, atomic_path, save_image, save_index_png, save_json
from ..weak.morph import dilate, erode

DEFAULT_CLASSES = ("aeroplane", "bird", "boat", "bottle", "car", "cat", "person")
VOID_RADIUS = 2     # band = dilate(r) minus erode(r): 2r+1 = 5 pixels wide, as VOC's


# ------------------------------------------------------------ small helpers
def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Low-frequency noise in [0, 1] (bilinear upsampling of a coarse random grid)."""
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    coarse = rng.random((gh, gw)).astype(np.float32)
    img = Image.fromarray(coarse, mode="F").resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32).clip(0, 1)


def hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i],
                    dtype=np.float32)


def soft_alpha(mask: np.ndarray) -> np.ndarray:
    """A hard mask with a one-pixel soft edge (anti-aliasing look)."""
    img = Image.fromarray((mask * 255).astype(np.uint8), mode="L").filter(ImageFilter.BoxBlur(1))
    return np.asarray(img, dtype=np.float32) / 255.0


def grid(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return ys, xs


# ------------------------------------------------------------------ textures
def texture(kind: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A brightness pattern in [0, 1] of one texture kind."""
    ys, xs = grid(h, w)
    theta = rng.uniform(0, math.pi)
    if kind == "stripes":
        period = rng.uniform(5, 9)
        u = xs * math.cos(theta) + ys * math.sin(theta)
        return 0.5 + 0.5 * np.sin(2 * math.pi * u / period)
    if kind == "hstripes":
        period = rng.uniform(4, 7)
        return (np.sin(2 * math.pi * ys / period) > 0).astype(np.float32)
    if kind == "checks":
        p = rng.uniform(5, 9)
        return (((xs // p) + (ys // p)) % 2).astype(np.float32)
    if kind == "grain":
        return np.clip(smooth_noise(rng, h, w, 2.0) * 0.7 + rng.random((h, w)) * 0.3, 0, 1)
    if kind == "spots":
        f = rng.uniform(0.5, 0.8)
        return ((np.sin(xs * f) * np.sin(ys * f)) > 0.45).astype(np.float32)
    if kind == "vgradient":
        return np.tile(np.linspace(0, 1, w, dtype=np.float32), (h, 1)) ** 0.7
    if kind == "smooth":
        return smooth_noise(rng, h, w, max(h, w) / 3)
    raise ConfigError(f"unknown texture {kind!r}")


# -------------------------------------------------------------- class models
# Each class: a texture, hue choices (overlapping between classes), and a
# shape drawer that paints primitives into [0, 1]^2 box coordinates.
Prim = Tuple[str, Sequence[float], str]       # (kind, coords, part)


def _aeroplane(rng) -> List[Prim]:
    body = ("ellipse", (0.0, 0.38, 1.0, 0.62), "body")
    sweep = rng.uniform(0.1, 0.25)
    wing = ("polygon", (0.35, 0.5, 0.55 + sweep, 0.0, 0.7 + sweep, 0.0, 0.6, 0.5,
                        0.7 + sweep, 1.0, 0.55 + sweep, 1.0), "body")
    tail = ("polygon", (0.0, 0.5, 0.08, 0.15, 0.18, 0.15, 0.15, 0.5), "body")
    return [body, wing, tail]


def _bird(rng) -> List[Prim]:
    return [("ellipse", (0.1, 0.35, 0.75, 0.9), "body"),
            ("ellipse", (0.6, 0.15, 0.9, 0.5), "body"),
            ("polygon", (0.88, 0.28, 1.0, 0.36, 0.88, 0.42), "accent"),
            ("polygon", (0.25, 0.55, 0.0, 0.3 + rng.uniform(-0.2, 0.1), 0.5, 0.5), "body")]


def _boat(rng) -> List[Prim]:
    return [("polygon", (0.0, 0.65, 1.0, 0.65, 0.85, 1.0, 0.15, 1.0), "body"),
            ("rectangle", (0.47, 0.05, 0.53, 0.68), "accent"),
            ("polygon", (0.55, 0.08, 0.55, 0.6, 0.55 + rng.uniform(0.3, 0.42), 0.6), "sail")]


def _bottle(rng) -> List[Prim]:
    return [("rectangle", (0.1, 0.38, 0.9, 1.0), "body"),
            ("polygon", (0.1, 0.4, 0.35, 0.22, 0.65, 0.22, 0.9, 0.4), "body"),
            ("rectangle", (0.35, 0.04, 0.65, 0.25), "body"),
            ("rectangle", (0.32, 0.0, 0.68, 0.07), "accent")]


def _car(rng) -> List[Prim]:
    return [("rectangle", (0.0, 0.4, 1.0, 0.82), "body"),
            ("polygon", (0.2, 0.42, 0.32, 0.08, 0.72, 0.08, 0.85, 0.42), "body"),
            ("polygon", (0.3, 0.4, 0.37, 0.15, 0.68, 0.15, 0.76, 0.4), "window"),
            ("ellipse", (0.1, 0.62, 0.32, 1.0), "wheel"),
            ("ellipse", (0.68, 0.62, 0.9, 1.0), "wheel")]


def _cat(rng) -> List[Prim]:
    return [("ellipse", (0.0, 0.4, 0.75, 1.0), "body"),
            ("ellipse", (0.55, 0.12, 0.95, 0.55), "body"),
            ("polygon", (0.58, 0.25, 0.62, 0.0, 0.72, 0.18), "body"),
            ("polygon", (0.78, 0.18, 0.88, 0.0, 0.93, 0.25), "body"),
            ("rectangle", (0.0, 0.3, 0.06, 0.75), "body")]


def _person(rng) -> List[Prim]:
    return [("ellipse", (0.32, 0.0, 0.68, 0.2), "skin"),
            ("rectangle", (0.15, 0.2, 0.85, 0.62), "body"),
            ("rectangle", (0.2, 0.6, 0.45, 1.0), "accent"),
            ("rectangle", (0.55, 0.6, 0.8, 1.0), "accent"),
            ("rectangle", (0.0, 0.22, 0.15, 0.55), "skin"),
            ("rectangle", (0.85, 0.22, 1.0, 0.55), "skin")]


CLASS_MODELS: Dict[str, Dict] = {
    # aspect: (height / width) range of the object's frame
    "aeroplane": {"draw": _aeroplane, "texture": "vgradient", "hues": (0.58, 0.0, 0.62),
                  "sat": (0.0, 0.35), "aspect": (0.45, 0.7)},
    "bird": {"draw": _bird, "texture": "grain", "hues": (0.08, 0.12, 0.6),
             "sat": (0.4, 0.8), "aspect": (0.7, 1.0)},
    "boat": {"draw": _boat, "texture": "hstripes", "hues": (0.0, 0.6, 0.62),
             "sat": (0.5, 0.9), "aspect": (0.8, 1.1)},
    "bottle": {"draw": _bottle, "texture": "smooth", "hues": (0.3, 0.08, 0.55),
               "sat": (0.5, 0.9), "aspect": (2.0, 3.0)},
    "car": {"draw": _car, "texture": "spots", "hues": (0.0, 0.6, 0.15),
            "sat": (0.5, 0.9), "aspect": (0.5, 0.7)},
    "cat": {"draw": _cat, "texture": "stripes", "hues": (0.07, 0.1, 0.0),
            "sat": (0.2, 0.7), "aspect": (0.65, 0.9)},
    "person": {"draw": _person, "texture": "checks", "hues": (0.0, 0.6, 0.3, 0.15),
               "sat": (0.3, 0.8), "aspect": (1.8, 2.6)},
}
PART_SHADE = {"body": None, "accent": 0.45, "window": 0.3, "wheel": 0.12, "sail": 1.0, "skin": None}


def _draw_object(rng, cls: str, frame: Tuple[float, float, float, float], flip: bool,
                 h: int, w: int) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """(object mask [H, W] bool, part masks) of one object in frame (x, y, fw, fh)."""
    fx, fy, fw, fh = frame
    parts: Dict[str, Image.Image] = {}
    for kind, coords, part in CLASS_MODELS[cls]["draw"](rng):
        pts = []
        for j in range(0, len(coords), 2):
            u, v = coords[j], coords[j + 1]
            if flip:
                u = 1.0 - u
            pts.append((fx + u * fw, fy + v * fh))
        if kind in ("ellipse", "rectangle"):
            (x0, y0), (x1, y1) = pts
            pts = [(min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1))]
        img = parts.setdefault(part, Image.new("L", (w, h), 0))
        getattr(ImageDraw.Draw(img), kind)(pts, fill=255)
    arrs = {p: np.asarray(im) > 127 for p, im in parts.items()}
    mask = np.zeros((h, w), dtype=bool)
    for a in arrs.values():
        mask |= a
    return mask, arrs


def _colour(rng, model: Dict) -> np.ndarray:
    hue = float(rng.choice(model["hues"])) + rng.uniform(-0.03, 0.03)
    return hsv_to_rgb(hue % 1.0, rng.uniform(*model["sat"]), rng.uniform(0.45, 0.95))


def render_image(rng: np.random.Generator, h: int, w: int, classes: Sequence[str],
                 max_objects: int = 3):
    """(image uint8 [H, W, 3], labels uint8 [H, W], instances uint8 [H, W], objects)."""
    # Background: gradient between two colours, shading, grain and distractors.
    ys, xs = grid(h, w)
    c_top = hsv_to_rgb(rng.random(), rng.uniform(0.1, 0.6), rng.uniform(0.4, 0.95))
    c_bot = hsv_to_rgb(rng.random(), rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.85))
    t = (ys / max(h - 1, 1))[..., None]
    img = c_top * (1 - t) + c_bot * t
    img *= (0.75 + 0.5 * smooth_noise(rng, h, w, max(h, w) / 4))[..., None]
    img += (rng.random((h, w, 1)).astype(np.float32) - 0.5) * 0.08
    for _ in range(int(rng.integers(0, 4))):
        model = CLASS_MODELS[str(rng.choice(list(classes)))]
        col = _colour(rng, model)                      # object colours in the background
        bw, bh = rng.uniform(0.1, 0.4) * w, rng.uniform(0.1, 0.4) * h
        x0, y0 = rng.uniform(-0.1, 0.9) * w, rng.uniform(-0.1, 0.9) * h
        d = Image.new("L", (w, h), 0)
        shape = "ellipse" if rng.random() < 0.5 else "rectangle"
        getattr(ImageDraw.Draw(d), shape)([(x0, y0), (x0 + bw, y0 + bh)], fill=255)
        a = soft_alpha(np.asarray(d) > 127)[..., None] * rng.uniform(0.6, 1.0)
        img = img * (1 - a) + col * (0.85 + 0.15 * smooth_noise(rng, h, w, 20))[..., None] * a

    labels = np.zeros((h, w), dtype=np.uint8)
    inst = np.zeros((h, w), dtype=np.uint8)
    n_obj = int(rng.integers(1, max_objects + 1))
    drawn = []
    for k in range(n_obj):
        cls = str(rng.choice(list(classes)))
        model = CLASS_MODELS[cls]
        aspect = rng.uniform(*model["aspect"])
        extent = rng.uniform(0.3, 0.7) * min(h, w)      # the frame's larger side
        fw, fh = (extent, extent * aspect) if aspect <= 1 else (extent / aspect, extent)
        fx = rng.uniform(-0.12 * fw, w - 0.88 * fw)
        fy = rng.uniform(-0.12 * fh, h - 0.88 * fh)
        mask, parts = _draw_object(rng, cls, (fx, fy, fw, fh), bool(rng.random() < 0.5), h, w)
        if not mask.any():
            continue
        base = _colour(rng, model)
        pattern = texture(model["texture"], rng, h, w)
        shade = 0.6 + 0.55 * pattern
        col = base * shade[..., None]
        for part, pm in parts.items():
            v = PART_SHADE.get(part)
            if part == "skin":
                col = np.where(pm[..., None], hsv_to_rgb(0.07, 0.45, rng.uniform(0.55, 0.9)), col)
            elif v is not None:
                col = np.where(pm[..., None], np.full(3, v, np.float32) * (0.8 + 0.2 * shade[..., None]), col)
        a = soft_alpha(mask)[..., None]
        img = img * (1 - a) + col * a
        labels[mask] = VOC_CLASSES.index(cls)
        inst[mask] = len(drawn) + 1
        drawn.append({"name": cls, "full_area": int(mask.sum())})
    img = img + rng.normal(0, 0.02, img.shape).astype(np.float32)
    image = (img.clip(0, 1) * 255).round().astype(np.uint8)

    # Visible instances, their boxes and flags; then the void band along outlines.
    objects = []
    inst_t = torch.from_numpy(inst.astype(np.int64))
    band = torch.zeros(h, w, dtype=torch.bool)
    for k, obj in enumerate(drawn, 1):
        vis = inst_t == k
        area = int(vis.sum())
        if area == 0:
            continue
        rows = torch.nonzero(vis.any(1)).flatten()
        cols = torch.nonzero(vis.any(0)).flatten()
        x0, x1 = int(cols[0]), int(cols[-1]) + 1
        y0, y1 = int(rows[0]), int(rows[-1]) + 1
        band |= dilate(vis, VOID_RADIUS) & ~erode(vis, VOID_RADIUS, frame_outside=False)
        objects.append({
            "name": obj["name"], "bndbox": (x0 + 1, y0 + 1, x1, y1),   # VOC: 1-based inclusive
            "truncated": int(x0 == 0 or y0 == 0 or x1 == w or y1 == h),
            "occluded": int(area < 0.8 * obj["full_area"]),
            "difficult": int(area < 0.01 * h * w),
        })
    labels[band.numpy()] = 255
    return image, labels, inst, objects


def annotation_xml(image_id: str, h: int, w: int, objects: List[Dict]) -> str:
    lines = ["<annotation>", "\t<folder>VOC2012</folder>", f"\t<filename>{image_id}.jpg</filename>",
             "\t<source>", "\t\t<database>fuzzyseg synthetic VOC</database>", "\t</source>",
             "\t<size>", f"\t\t<width>{w}</width>", f"\t\t<height>{h}</height>",
             "\t\t<depth>3</depth>", "\t</size>", "\t<segmented>1</segmented>"]
    for o in objects:
        x0, y0, x1, y1 = o["bndbox"]
        lines += ["\t<object>", f"\t\t<name>{o['name']}</name>", "\t\t<pose>Unspecified</pose>",
                  f"\t\t<truncated>{o['truncated']}</truncated>",
                  f"\t\t<occluded>{o['occluded']}</occluded>",
                  f"\t\t<difficult>{o['difficult']}</difficult>", "\t\t<bndbox>",
                  f"\t\t\t<xmin>{x0}</xmin>", f"\t\t\t<ymin>{y0}</ymin>",
                  f"\t\t\t<xmax>{x1}</xmax>", f"\t\t\t<ymax>{y1}</ymax>", "\t\t</bndbox>",
                  "\t</object>"]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


ASPECTS = (3 / 4, 4 / 3, 1.0, 2 / 3)   # height / width


def image_size_for(rng: np.random.Generator, size: Tuple[int, int]) -> Tuple[int, int]:
    longest = int(rng.integers(size[0], size[1] + 1))
    aspect = float(rng.choice(ASPECTS))
    if aspect <= 1:
        return max(16, round(longest * aspect)), longest
    return longest, max(16, round(longest / aspect))


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def generate_voc(out, *, seed: int = 0, n_train: int = 48, n_val: int = 24,
                 size: Tuple[int, int] = (160, 240), classes: Sequence[str] = DEFAULT_CLASSES,
                 max_objects: int = 3, progress: bool = True) -> Path:
    """Write the VOC-like set under OUT/VOCdevkit/VOC2012; returns that folder."""
    classes = tuple(classes)
    unknown = [c for c in classes if c not in CLASS_MODELS]
    if unknown or not classes:
        raise ConfigError(f"synthetic VOC classes must be among {', '.join(CLASS_MODELS)}; "
                          f"got {', '.join(unknown) or 'none'}")
    lo, hi = (size, size) if isinstance(size, int) else tuple(size)
    if lo < 32 or hi < lo:
        raise ConfigError(f"bad synthetic image size range {lo}-{hi} (need 32 <= min <= max)")
    if n_train < 1 or n_val < 0:
        raise ConfigError("need at least one training image")
    voc = Path(out) / "VOCdevkit" / "VOC2012"
    splits = {"train": (0, n_train), "val": (1, n_val)}
    lists: Dict[str, List[str]] = {}
    jobs = [(s, code, i) for s, (code, n) in splits.items() for i in range(n)]
    it = jobs
    if progress:
        from tqdm import tqdm

        it = tqdm(jobs, desc="synth voc", unit="img")
    for split, code, i in it:
        rng = np.random.default_rng([int(seed), code, i])
        image_id = f"{2008 + code}_{i:06d}"
        h, w = image_size_for(rng, (lo, hi))
        image, labels, inst, objects = render_image(rng, h, w, classes, max_objects)
        save_image(image, voc / "JPEGImages" / f"{image_id}.jpg")
        save_index_png(labels, voc / "SegmentationClass" / f"{image_id}.png")
        save_index_png(inst, voc / "SegmentationObject" / f"{image_id}.png")
        _write_text(voc / "Annotations" / f"{image_id}.xml", annotation_xml(image_id, h, w, objects))
        lists.setdefault(split, []).append(image_id)
    for split, ids in lists.items():
        _write_text(voc / "ImageSets" / "Segmentation" / f"{split}.txt", "\n".join(ids) + "\n")
    _write_text(voc / "ImageSets" / "Segmentation" / "trainval.txt",
                "\n".join(lists.get("train", []) + lists.get("val", [])) + "\n")
    save_json({"generator": "fuzzylogic_seg.data.synth_voc", "seed": seed, "n_train": n_train,
               "n_val": n_val, "size": [lo, hi], "classes": list(classes),
               "max_objects": max_objects}, Path(out) / "synth.json")
    return voc
