"""`fuzzyseg predict --model RUN --images DIR --out DIR`: segment new images, no prompts.

RUN is a run folder of `fuzzyseg run` (its main student, or --variant) or a
student file (``model.pt``). Every image in DIR (jpg, png, bmp, tif) gets
``OUT/NAME.png`` in the data set's label format (VOC palette PNG of class
indices; REFUGE grey 0 cup / 128 rim / 255 background) and OUT/summary.json.
Images are read as they are displayed (EXIF orientation applied: a phone's
photo is not segmented sideways), so each label has its image's displayed size.
OUT may not be DIR when that would overwrite input images.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="segment new images with a trained student (no prompts)")
    p.add_argument("--model", required=True, help="run folder of `fuzzyseg run`, or a student model.pt")
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--out", required=True, help="output folder for label PNGs")
    p.add_argument("--variant", help="which student of a run folder (default: its main student)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


def resolve_model(model: str, variant: str = None) -> Path:
    """A run folder or a model file -> the student file."""
    from ..errors import CheckpointError

    path = Path(model)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such run folder or model file")
    if variant is None:
        cfg_path = path / "config.yaml"
        if not cfg_path.is_file():
            raise CheckpointError(f"{path}: not a run folder (no config.yaml); pass the model.pt itself")
        from ..config import load_file

        variant = load_file(cfg_path).get("main_student", "logic")
    found = path / "students" / variant / "model.pt"
    if not found.is_file():
        have = sorted(d.name for d in (path / "students").glob("*") if (d / "model.pt").is_file())
        raise CheckpointError(f"{found}: the run has no trained student {variant!r} "
                              + (f"(it has: {', '.join(have)}; --variant picks one)" if have
                                 else "(none has finished training)"))
    return found


class ImageFolder:
    """Images of a folder as samples {"id", "image"} (sorted by name)."""

    def __init__(self, folder):
        from ..data.base import IMAGE_SUFFIXES
        from ..errors import DatasetError

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DatasetError("no such image folder", self.folder)
        files = [p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        self.paths = sorted(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES)
        self.skipped = sorted(p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES
                              and p.name != "summary.json")
        if not self.paths:
            raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder", self.folder)
        stems = [p.stem for p in self.paths]
        dup = {s for s in stems if stems.count(s) > 1}
        if dup:
            raise DatasetError(f"several images share the name {sorted(dup)[0]!r} (outputs are NAME.png)",
                               self.folder)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from ..data.base import read_image

        return {"id": self.paths[i].stem, "image": read_image(self.paths[i], exif_transpose=True)}


def main(args: argparse.Namespace) -> int:
    from ..data.base import IMAGE_SUFFIXES
    from ..distributed import resolve_device
    from ..errors import ConfigError
    from ..student import Student, _is_voc, predict_dataset

    path = resolve_model(args.model, args.variant)
    student = Student.load(path, resolve_device(args.device))
    images = ImageFolder(args.images)
    out = Path(args.out).resolve()
    clash = [p.name for p in images.paths if (out / f"{p.stem}.png") == p.resolve()]
    if clash:
        raise ConfigError(f"--out {args.out} would overwrite input images ({', '.join(clash[:3])}"
                          f"{'...' if len(clash) > 3 else ''}): choose another output folder")
    if images.skipped:
        print(f"skipped {len(images.skipped)} file(s) that are not images of a known type "
              f"({', '.join(IMAGE_SUFFIXES)}): {', '.join(images.skipped[:5])}"
              f"{'...' if len(images.skipped) > 5 else ''}")
    ids = predict_dataset(student, images, args.out, progress=not args.quiet, model=str(path))
    print(f"{len(ids)} label images ({student.kind} format) written to {args.out} by {path}")
    if student.kind == "voc" and student.class_names and not _is_voc(student.class_names):
        print("classes (label value: name): "
              + ", ".join(f"{i}: {n}" for i, n in enumerate(student.class_names)))
    return 0
