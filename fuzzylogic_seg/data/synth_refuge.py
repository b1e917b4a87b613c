"""The embedded REFUGE-like data set, written in the REFUGE2 layout.

`generate_refuge(OUT)` writes OUT/{train,val,test}/images/NAME.jpg and
OUT/{train,val,test}/mask/NAME.bmp (8-bit grey: 0 cup, 128 rim, 255
background). Each fundus image (seeded by (seed, split, index)):

- a circular field of view on black, orange-red retina with low-frequency
  mottling, vignetting towards the rim of the field and a darker fovea about
  2.5 disc diameters temporal to the disc (left or right eye);
- the optic disc: a bright yellowish, slightly irregular ellipse (radius
  modulated by low harmonics) with a blurred boundary; its contrast to the
  surrounding retina varies and is low in some images;
- the cup: a brighter, paler region inside the disc, offset a little
  temporally, with its own soft edge; vertical cup-to-disc ratio drawn
  uniformly in `cdr` (default 0.3-0.8), the cup kept at least 1 px inside
  the disc so the rim always exists;
- 8-14 vessels radiating from the disc as random-walk polylines thinning
  outwards, darker red, drawn over the disc too;
- Gaussian noise and JPEG compression.
Names follow REFUGE: train g0001 (cup-to-disc >= 0.6) / n0001, val V0001,
test T0001.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import ConfigError
from ..io import save_image, save_json
from .synth_voc import smooth_noise


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _region(xs, ys, cx, cy, rx, ry, harmonics) -> Tuple[np.ndarray, np.ndarray]:
    """(normalised radius rho, boundary radius at each angle) of an irregular ellipse."""
    dx, dy = (xs - cx) / rx, (ys - cy) / ry
    rho = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx)
    bound = np.ones_like(rho)
    for k, a, phi in harmonics:
        bound += a * np.cos(k * theta + phi)
    return rho, bound


def render_fundus(rng: np.random.Generator, size: int, cdr_range=(0.3, 0.8),
                  disc_range=(0.18, 0.28)) -> Tuple[np.ndarray, np.ndarray, Dict]:
    """(image uint8 [S, S, 3], mask uint8 [S, S] in 0/128/255, info)."""
    S = size
    ys, xs = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
    c = S / 2
    fov_r = S * rng.uniform(0.46, 0.5)
    r_fov = np.sqrt((xs - c) ** 2 + (ys - c) ** 2) / fov_r
    fov = _smoothstep((1.0 - r_fov) / 0.02)

    # Retina: orange-red with mottling and vignetting.
    base = np.array([rng.uniform(0.65, 0.85), rng.uniform(0.25, 0.4), rng.uniform(0.08, 0.18)],
                    dtype=np.float32)
    mottle = 0.85 + 0.3 * smooth_noise(rng, S, S, S / 6)
    vignette = 1.0 - rng.uniform(0.35, 0.6) * np.clip(r_fov, 0, 1) ** 2
    img = base * (mottle * vignette)[..., None]

    # Disc geometry (a left or right eye: the disc on one side of the centre).
    side = 1 if rng.random() < 0.5 else -1
    disc_ry = S * rng.uniform(*disc_range) / 2
    disc_rx = disc_ry * rng.uniform(0.85, 1.02)
    dcx = c + side * S * rng.uniform(0.12, 0.22)
    dcy = c + S * rng.uniform(-0.08, 0.08)
    disc_h = [(k, rng.uniform(0.0, 0.04), rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5)]
    rho_d, bound_d = _region(xs, ys, dcx, dcy, disc_rx, disc_ry, disc_h)
    disc = rho_d <= bound_d

    # Fovea: darker blob temporal to the disc.
    fx = dcx - side * 5 * disc_ry
    fy = dcy + disc_ry * rng.uniform(0.0, 0.5)
    fr = disc_ry * 1.4
    fovea = np.exp(-(((xs - fx) ** 2 + (ys - fy) ** 2) / (2 * fr * fr)))
    img *= (1.0 - rng.uniform(0.25, 0.45) * fovea)[..., None]

    # Cup: inside the disc, offset temporally; vertical CDR drawn uniformly.
    target = rng.uniform(*cdr_range)
    cup_ry = disc_ry * target
    cup_rx = min(cup_ry * rng.uniform(0.8, 1.1), disc_rx * 0.9)
    room = max(0.0, (disc_rx - cup_rx) * 0.4)
    ccx = dcx - side * rng.uniform(0, room)
    ccy = dcy + rng.uniform(-0.1, 0.1) * (disc_ry - cup_ry)
    cup_h = [(k, rng.uniform(0.0, 0.05), rng.uniform(0, 2 * math.pi)) for k in (2, 3)]
    rho_c, bound_c = _region(xs, ys, ccx, ccy, cup_rx, cup_ry, cup_h)
    inner = np.asarray(Image.fromarray(disc.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(3))) > 127
    cup = (rho_c <= bound_c) & inner

    # Brightness of disc and cup with soft boundaries; contrast varies per image.
    blur_d = rng.uniform(0.06, 0.25)          # boundary width, relative to the radius
    contrast = rng.uniform(0.25, 1.0)         # low in some images
    disc_col = np.array([0.98, rng.uniform(0.7, 0.85), rng.uniform(0.4, 0.6)], dtype=np.float32)
    a_d = (_smoothstep((bound_d - rho_d) / blur_d + 0.5) * contrast)[..., None]
    img = img * (1 - a_d) + disc_col * (0.9 + 0.1 * mottle[..., None]) * a_d
    blur_c = rng.uniform(0.1, 0.35)
    cup_col = np.array([1.0, rng.uniform(0.88, 0.97), rng.uniform(0.7, 0.85)], dtype=np.float32)
    a_c = (_smoothstep((bound_c - rho_c) / blur_c + 0.5) * rng.uniform(0.5, 0.95))[..., None]
    img = img * (1 - a_c) + cup_col * a_c

    # Vessels: random walks radiating from the disc, thinning outwards.
    vmask = Image.new("L", (S, S), 0)
    draw = ImageDraw.Draw(vmask)
    for _ in range(int(rng.integers(8, 15))):
        ang = rng.uniform(0, 2 * math.pi)
        x = dcx + math.cos(ang) * disc_rx * 0.3
        y = dcy + math.sin(ang) * disc_ry * 0.3
        width = rng.uniform(1.5, 3.5) * S / 256
        steps = int(rng.integers(15, 40))
        for _ in range(steps):
            ang += rng.normal(0, 0.18)
            step = S * 0.02
            nx, ny = x + math.cos(ang) * step, y + math.sin(ang) * step
            draw.line([(x, y), (nx, ny)], fill=255, width=max(1, int(round(width))))
            x, y = nx, ny
            width *= 0.96
    vessels = np.asarray(vmask.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32) / 255.0
    dark = np.array([0.45, 0.12, 0.08], dtype=np.float32)
    a_v = (vessels * rng.uniform(0.55, 0.85))[..., None]
    img = img * (1 - a_v) + dark * a_v

    img = img * fov[..., None]
    img = img + rng.normal(0, rng.uniform(0.01, 0.025), img.shape).astype(np.float32)
    image = (img.clip(0, 1) * 255).round().astype(np.uint8)

    mask = np.full((S, S), 255, dtype=np.uint8)
    mask[disc] = 128
    mask[cup] = 0
    info = {"cdr_target": float(target), "contrast": float(contrast), "side": side}
    return image, mask, info


def generate_refuge(out, *, seed: int = 0, n_train: int = 40, n_val: int = 20, n_test: int = 0,
                    size: int = 256, cdr: Tuple[float, float] = (0.3, 0.8),
                    progress: bool = True) -> Path:
    """Write the REFUGE-like set under OUT (REFUGE2 layout); returns OUT."""
    size = int(size if not isinstance(size, (tuple, list)) else size[0])
    if size < 64:
        raise ConfigError(f"synthetic REFUGE images need size >= 64, got {size}")
    if n_train < 1 or n_val < 0 or n_test < 0:
        raise ConfigError("need at least one training image and non-negative counts")
    if not (0 < cdr[0] <= cdr[1] < 1):
        raise ConfigError(f"cup-to-disc range must lie in (0, 1): {cdr}")
    out = Path(out)
    jobs = [(s, code, i) for code, (s, n) in enumerate((("train", n_train), ("val", n_val),
                                                         ("test", n_test))) for i in range(n)]
    it = jobs
    if progress:
        from tqdm import tqdm

        it = tqdm(jobs, desc="synth refuge", unit="img")
    record: List[Dict] = []
    for split, code, i in it:
        rng = np.random.default_rng([int(seed), 100 + code, i])
        image, mask, info = render_fundus(rng, size, cdr)
        if split == "train":
            name = f"{'g' if info['cdr_target'] >= 0.6 else 'n'}{i + 1:04d}"
        else:
            name = f"{'V' if split == 'val' else 'T'}{i + 1:04d}"
        save_image(image, out / split / "images" / f"{name}.jpg")
        save_image(mask, out / split / "mask" / f"{name}.bmp")
        record.append({"split": split, "name": name, **info})
    save_json({"generator": "fuzzylogic_seg.data.synth_refuge", "seed": seed, "n_train": n_train,
               "n_val": n_val, "n_test": n_test, "size": size, "cdr": list(cdr),
               "images": record}, out / "synth.json")
    return out
