"""Generic synthetic scenes for pretraining the embedded SAM (a stand-in for SA-1B).

A scene is a textured background with several random shapes painted over it
(ellipses, polygons, blobs, rings, rotated rectangles, thin curves), some of
them NESTED (a shape inside a shape, the outer mask includes the inner one),
some LOW-CONTRAST (a fill colour a few grey levels from what lies beneath,
often with blurred edges), then noise, vignetting and blur. Every visible
region comes with its mask, so any region can be the target of a prompt.

This generator is deliberately generic and shares no code or statistics with
the evaluation data sets (``fuzzylogic_seg/data/synth_*.py``): it must not
teach the model the test distribution. Everything is drawn from the numpy
``Generator`` passed in, so a scene is a pure function of its seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import ConfigError

SHAPE_KINDS = ("ellipse", "polygon", "blob", "ring", "rect", "thin")
# Shapes that can hold a nested child (a ring's hole or a thin curve cannot).
_FILLED = ("ellipse", "polygon", "blob", "rect")


@dataclass
class Scene:
    image: np.ndarray                 # [H, W, 3] uint8 RGB
    masks: np.ndarray                 # [M, H, W] bool, visible region of each object
    kinds: List[str]                  # shape kind of each mask
    parent: List[int]                 # index of the enclosing object, -1 for none
    low_contrast: np.ndarray          # [M] bool
    nested: np.ndarray = field(init=False)  # [M] bool: lies inside another object

    def __post_init__(self):
        self.nested = np.array([p >= 0 for p in self.parent], dtype=bool)


# ----------------------------------------------------------------- textures
def _upsample(low: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a [gh, gw, C] float grid to [h, w, C] (smooth fields)."""
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(low[..., c], dtype=np.float32), "F")
                        .resize((w, h), Image.BILINEAR)) for c in range(low.shape[2])]
    return np.stack(chans, axis=-1).astype(np.float32)


def _texture(rng: np.random.Generator, h: int, w: int, amp: float,
             window: Optional[Tuple[slice, slice]] = None) -> np.ndarray:
    """A [h, w, 1] zero-mean texture: smooth noise, stripes, speckle or a gradient.

    ``window`` (rows, cols): only that part of it, with the same values and the
    same draws from ``rng`` as the whole."""
    rows, cols = window if window is not None else (slice(0, h), slice(0, w))
    hh, ww = rows.stop - rows.start, cols.stop - cols.start
    kind = rng.choice(["smooth", "stripes", "speckle", "gradient", "flat"], p=[.3, .2, .2, .2, .1])
    if kind == "flat" or amp <= 0:
        return np.zeros((hh, ww, 1), np.float32)
    if kind in ("stripes", "gradient"):
        yy, xx = np.mgrid[rows, cols].astype(np.float32)
    if kind == "smooth":
        g = int(rng.integers(3, 12))
        t = _upsample(rng.normal(size=(g, g, 1)), h, w)[rows, cols]
    elif kind == "stripes":
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(4, max(5.0, 0.25 * max(h, w)))
        t = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period
                   + rng.uniform(0, 2 * np.pi))[..., None]
    elif kind == "speckle":
        t = rng.normal(size=(h, w, 1)).astype(np.float32)[rows, cols] * 0.7
    else:
        theta = rng.uniform(0, 2 * np.pi)
        t = ((xx * np.cos(theta) + yy * np.sin(theta)) / max(h, w) - 0.5)[..., None] * 2
    return (t * amp).astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    g = int(rng.integers(2, 6))
    base = _upsample(rng.uniform(20, 235, size=(g, g, 3)), h, w)
    return base + _texture(rng, h, w, rng.uniform(0, 30))


# ------------------------------------------------------------------- shapes
def _polygon_mask(h: int, w: int, pts: np.ndarray) -> np.ndarray:
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in pts.tolist()], fill=255)
    return np.asarray(img) > 127


def _radial(cx, cy, radii, angles, rot) -> np.ndarray:
    a = angles + rot
    return np.stack([cx + radii * np.cos(a), cy + radii * np.sin(a)], axis=1)


def _shape(rng: np.random.Generator, kind: str, h: int, w: int,
           cx: float, cy: float, r: float) -> np.ndarray:
    """Rasterise one shape of size ~r around (cx, cy) as a bool [h, w] mask."""
    rot = rng.uniform(0, 2 * np.pi)
    if kind == "ellipse":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        ax, ay = r, r * rng.uniform(0.35, 1.0)
        pts = np.stack([ax * np.cos(t), ay * np.sin(t)], 1)
        c, s = np.cos(rot), np.sin(rot)
        pts = pts @ np.array([[c, s], [-s, c]]) + [cx, cy]
        return _polygon_mask(h, w, pts)
    if kind == "polygon":
        n = int(rng.integers(3, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        return _polygon_mask(h, w, _radial(cx, cy, r * rng.uniform(0.55, 1.0, n), ang, rot))
    if kind == "blob":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        rad = np.ones_like(t)
        for k in range(2, 6):
            rad += rng.uniform(0, 0.28) / np.sqrt(k) * np.sin(k * t + rng.uniform(0, 2 * np.pi))
        return _polygon_mask(h, w, _radial(cx, cy, r * np.clip(rad, 0.3, None), t, rot))
    if kind == "rect":
        ax, ay = r, r * rng.uniform(0.2, 1.0)
        pts = np.array([[-ax, -ay], [ax, -ay], [ax, ay], [-ax, ay]])
        c, s = np.cos(rot), np.sin(rot)
        return _polygon_mask(h, w, pts @ np.array([[c, s], [-s, c]]) + [cx, cy])
    if kind == "ring":
        outer = _shape(rng, "ellipse", h, w, cx, cy, r)
        # The hole: the same construction shrunk (a fresh ellipse, so rings vary).
        inner = _shape(rng, "ellipse", h, w, cx, cy, r * rng.uniform(0.35, 0.7))
        return outer & ~inner
    if kind == "thin":
        scale = max(h, w) / 256.0
        width = max(1, int(round(rng.uniform(1.5, 5) * scale)))
        heading = rng.uniform(0, 2 * np.pi)
        pts = [(cx, cy)]
        for _ in range(int(rng.integers(3, 8))):
            heading += rng.uniform(-0.7, 0.7)
            step = rng.uniform(0.3, 0.7) * r
            x, y = pts[-1]
            pts.append((x + step * np.cos(heading), y + step * np.sin(heading)))
        img = Image.new("L", (w, h), 0)
        ImageDraw.Draw(img).line(pts, fill=255, width=width, joint="curve")
        return np.asarray(img) > 127
    raise ConfigError(f"unknown shape kind {kind!r}")


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion by a (2r+1)^2 square, via an integral image (fast, no scipy)."""
    if radius <= 0:
        return mask
    k = 2 * radius + 1
    pad = np.pad(mask.astype(np.int32), radius + 1, constant_values=0)
    ii = pad.cumsum(0).cumsum(1)
    s = ii[k:, k:] - ii[:-k, k:] - ii[k:, :-k] + ii[:-k, :-k]
    return s[: mask.shape[0], : mask.shape[1]] == k * k


def _blur_window(mask: np.ndarray, blur: float) -> Tuple[slice, slice]:
    """Rows and columns outside which ``_soft(mask, blur)`` is exactly 0: the mask's
    box grown by more than the reach of PIL's Gaussian blur (three box passes,
    each of radius under blur + 1)."""
    rows, cols = np.any(mask, 1), np.any(mask, 0)
    r = np.flatnonzero(rows)
    c = np.flatnonzero(cols)
    m = 3 * (int(np.ceil(blur)) + 2) if blur > 0 else 0
    h, w = mask.shape
    return (slice(max(0, r[0] - m), min(h, r[-1] + 1 + m)),
            slice(max(0, c[0] - m), min(w, c[-1] + 1 + m)))


def _soft(mask: np.ndarray, blur: float) -> np.ndarray:
    """Alpha matte [h, w, 1] of a mask, with edges blurred by `blur` pixels."""
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    return (np.asarray(img, dtype=np.float32) / 255.0)[..., None]


def _fill(rng: np.random.Generator, canvas: np.ndarray, mask: np.ndarray,
          low_contrast: bool, window: Optional[Tuple[slice, slice]] = None) -> np.ndarray:
    """The colour and texture a shape is painted with ([h, w, 3], or its ``window``)."""
    h, w, _ = canvas.shape
    if low_contrast:
        # A few grey levels away from what lies beneath: hard to see, easy to box.
        under = canvas[mask].mean(0)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction) + 1e-6
        colour = under + direction * rng.uniform(8, 28) * np.sqrt(3)
        amp = rng.uniform(0, 6)
    else:
        colour = rng.uniform(0, 255, size=3)
        amp = rng.uniform(0, 35)
    return colour[None, None, :].astype(np.float32) + _texture(rng, h, w, amp, window)


# -------------------------------------------------------------------- scene
def generate_scene(rng: np.random.Generator, height: int, width: int,
                   n_objects: Tuple[int, int] = (2, 6), p_nested: float = 0.4,
                   p_low_contrast: float = 0.3) -> Scene:
    """One random scene of size (height, width) with the masks of its regions."""
    h, w = int(height), int(width)
    size = min(h, w)
    min_area = max(12, int(0.0015 * h * w))
    canvas = _background(rng, h, w)
    masks: List[np.ndarray] = []
    kinds: List[str] = []
    parent: List[int] = []
    low: List[bool] = []

    def paint(kind: str, m: np.ndarray, par: int) -> int:
        lc = bool(rng.random() < p_low_contrast)
        blur_max = 1.0 if kind == "thin" else (3.0 if lc else 1.5)
        blur = rng.uniform(0, blur_max) * size / 256 if rng.random() < 0.6 else 0.0
        # Painted only where the matte is nonzero (the same values as painting the
        # whole canvas, in a fraction of the time: the pretraining's data cost).
        win = _blur_window(m, blur)
        a = _soft(m[win], blur)
        canvas[win] = canvas[win] * (1 - a) + _fill(rng, canvas, m, lc, win) * a
        masks.append(m)
        kinds.append(kind)
        parent.append(par)
        low.append(lc)
        return len(masks) - 1

    for _ in range(int(rng.integers(n_objects[0], n_objects[1] + 1))):
        kind = str(rng.choice(SHAPE_KINDS, p=[.22, .18, .22, .12, .14, .12]))
        r = rng.uniform(0.1, 0.38) * size
        cx, cy = rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h
        m = _shape(rng, kind, h, w, cx, cy, r)
        if m.sum() < min_area:
            continue
        idx = paint(kind, m, -1)
        # Nested regions: up to two levels, each inside an eroded parent.
        level, host, host_r = 0, idx, r
        while kind in _FILLED and level < 2 and rng.random() < (p_nested if level == 0 else 0.3):
            inner = _erode(masks[host], max(1, int(0.06 * host_r)))
            ys, xs = np.nonzero(inner)
            if len(ys) < min_area:
                break
            j = int(rng.integers(len(ys)))
            kind_c = str(rng.choice(_FILLED))
            host_r = host_r * rng.uniform(0.25, 0.6)
            mc = _shape(rng, kind_c, h, w, xs[j], ys[j], host_r) & inner
            if mc.sum() < min_area:
                break
            host, kind, level = paint(kind_c, mc, host), kind_c, level + 1

    # Visible masks: later objects occlude earlier ones, except an object's own
    # descendants (a nested region belongs to its parent's mask).
    n = len(masks)
    desc = [set() for _ in range(n)]
    for i in range(n):
        p = parent[i]
        while p >= 0:
            desc[p].add(i)
            p = parent[p]
    visible = []
    for i in range(n):
        v = masks[i].copy()
        for j in range(i + 1, n):
            if j not in desc[i]:
                v &= ~masks[j]
        visible.append(v)

    canvas = _finish(rng, canvas)
    keep = [i for i in range(n) if visible[i].sum() >= min_area]
    remap = {old: new for new, old in enumerate(keep)}
    return Scene(
        image=canvas,
        masks=np.stack([visible[i] for i in keep]) if keep else np.zeros((0, h, w), bool),
        kinds=[kinds[i] for i in keep],
        parent=[remap.get(parent[i], -1) for i in keep],
        low_contrast=np.array([low[i] for i in keep], dtype=bool),
    )


def _finish(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Global photometric effects: vignetting, contrast, blur, noise; -> uint8."""
    h, w, _ = canvas.shape
    if rng.random() < 0.5:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        d2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (0.5 * max(h, w)) ** 2
        canvas = canvas * (1 - rng.uniform(0.1, 0.6) * np.clip(d2, 0, 1.5))[..., None]
    if rng.random() < 0.5:
        canvas = (canvas - 128) * rng.uniform(0.7, 1.2) + 128 + rng.uniform(-25, 25)
    img = np.clip(canvas, 0, 255).astype(np.uint8)
    if rng.random() < 0.2:
        img = np.asarray(Image.fromarray(img).filter(
            ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2) * min(h, w) / 256)))
    if rng.random() < 0.7:
        noise = rng.normal(0, rng.uniform(1, 10), size=img.shape)
        img = np.clip(img + noise, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


# ------------------------------------------------------------------ prompts
def mask_box(mask: np.ndarray, nonzero: Optional[Tuple[np.ndarray, np.ndarray]] = None
             ) -> np.ndarray:
    """Tight box of a mask, x0 y0 x1 y1 in half-open pixel coordinates (x1 exclusive).
    ``nonzero``: ``np.nonzero(mask)`` if already at hand."""
    ys, xs = np.nonzero(mask) if nonzero is None else nonzero
    if len(xs) == 0:
        raise ConfigError("empty mask has no box")
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def jitter_box(rng: np.random.Generator, box: np.ndarray, height: int, width: int,
               frac: float = 0.1, max_px: Optional[float] = None) -> np.ndarray:
    """SAM's box noise: each side moved by N(0, frac * side), clipped, kept in the image."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    std = frac * np.array([bw, bh, bw, bh])
    d = rng.normal(0, 1, 4) * std
    lim = 2 * std if max_px is None else np.minimum(2 * std, max_px)
    out = box + np.clip(d, -lim, lim)
    out[[0, 2]] = np.clip(out[[0, 2]], 0, width)
    out[[1, 3]] = np.clip(out[[1, 3]], 0, height)
    # Keep a valid (non-empty) box.
    out[2] = max(out[2], out[0] + 1)
    out[3] = max(out[3], out[1] + 1)
    return out.astype(np.float32)


def sample_points(rng: np.random.Generator, mask: np.ndarray, n_pos: int, n_neg: int,
                  near: Optional[np.ndarray] = None,
                  nonzero: Optional[Tuple[np.ndarray, np.ndarray]] = None
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """Positive points inside `mask`, negative ones outside it (within box `near` if
    given and possible); returns (coords [K, 2] as x, y pixel centres, labels [K]).
    ``nonzero``: ``np.nonzero(mask)`` if already at hand."""
    h, w = mask.shape
    pts, labels = [], []
    ys, xs = np.nonzero(mask) if nonzero is None else nonzero
    for _ in range(n_pos):
        j = int(rng.integers(len(ys)))
        pts.append((xs[j], ys[j]))
        labels.append(1)
    if n_neg:
        outside = ~mask
        if near is not None:
            x0, y0, x1, y1 = [int(v) for v in np.round(near)]
            region = np.zeros_like(mask)
            region[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
            if (outside & region).any():
                outside = outside & region
        ny, nx = np.nonzero(outside)
        for _ in range(n_neg):
            if len(ny) == 0:
                break
            j = int(rng.integers(len(ny)))
            pts.append((nx[j], ny[j]))
            labels.append(0)
    return np.asarray(pts, np.float32).reshape(-1, 2), np.asarray(labels, np.int64)
