"""`fuzzyseg demo`: both embedded data sets end to end, on CPU, in minutes.

Writes the synthetic VOC-like and REFUGE-like sets (their real layouts) under
OUT/data, runs `fuzzyseg run` on each with the small settings of
:data:`DEMO`, prints the result tables and where the reports are. Rerunning
reuses what is done (an interrupted demo resumes).
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any, Dict, List

from ..rulefiles import rules_dir

RULES = rules_dir()  # examples/rules in a checkout, the packaged copy in a wheel

# Small and fast on 2 CPU cores; the same code path as real data. The student is
# a UNet here (DeepLabV3+, the default for real data, predicts at 1/4 resolution,
# which loses the few-pixel cup of a 128-pixel fundus); a MobileNetV3 encoder
# from scratch (no network: ImageNet weights are used only when cached).
STUDENT = {"arch": "unet", "encoder": "tu-mobilenetv3_small_100", "encoder_weights": "imagenet",
           "model_kwargs": {"decoder_channels": [64, 32, 24, 16, 16]}, "batch_size": 8, "lr": 0.003,
           "epochs": 25}
DEMO: Dict[str, Dict[str, Any]] = {
    "voc": {
        # four classes: with 48 training images a student trained from scratch can
        # learn to tell them apart, so the ceiling says something (7 classes: mIoU ~0.3)
        "synth": {"n_train": 48, "n_val": 24, "classes": ["aeroplane", "car", "cat", "person"]},
        # fine-tuning as docs/FINETUNE.md recommends for these sets (VOC 20 epochs, REFUGE 10)
        "config": {"dataset": "voc", "weak": "boxes", "finetune": {"epochs": 20, "lr": 3e-4},
                   "student": {**STUDENT, "size": 160, "logic_rules": str(RULES / "student_voc.rules")},
                   "students": ["logic", "zero-shot", "gt", "logic+rules"], "main_student": "logic"},
    },
    "refuge": {
        "synth": {"n_train": 40, "n_val": 20},
        "config": {"dataset": "refuge", "weak": "boxes", "finetune": {"epochs": 10, "lr": 3e-4},
                   "student": {**STUDENT, "size": 128, "logic_rules": str(RULES / "student_refuge.rules")},
                   "students": ["logic", "zero-shot", "gt", "logic+rules"], "main_student": "logic"},
    },
}


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="both embedded data sets end to end on CPU, then the result table")
    p.add_argument("--out", default="runs/demo", help="output folder (default ./runs/demo)")
    p.add_argument("--datasets", nargs="+", choices=tuple(DEMO), default=list(DEMO))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default: the demo's promise), auto, cuda")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config option of both runs, e.g. --set student.epochs=5")
    p.add_argument("--n-train", type=int, help="synthetic training images per data set (default: 48 VOC, 40 REFUGE)")
    p.add_argument("--n-val", type=int, help="synthetic validation images per data set (default: 24 VOC, 20 REFUGE)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: up to 2, the machine the demo promises minutes on)")
    p.set_defaults(func=main)


def synthesize(kind: str, root: Path, progress: bool = True, **kw) -> Path:
    """The embedded data set `kind` under `root` (kept when already complete)."""
    from ..errors import ConfigError
    from ..io import load_json, save_json

    done = root / "demo_synth.json"
    want = json.loads(json.dumps({"kind": kind, **kw}))  # as it reads back (tuples are lists)
    if done.is_file():
        if load_json(done) != want:
            raise ConfigError(f"{root} holds a synthetic set made with other settings "
                              f"({load_json(done)}); use another --out")
        return root
    if kind == "voc":
        from ..data.synth_voc import generate_voc

        generate_voc(root, progress=progress, **kw)
    else:
        from ..data.synth_refuge import generate_refuge

        generate_refuge(root, progress=progress, **kw)
    save_json(want, done)
    return root


def demo_config(kind: str, out: Path, seed: int, device: str, sets: List[str]) -> Dict[str, Any]:
    from .. import config as C

    cfg = copy.deepcopy(DEMO[kind]["config"])
    cfg.update(root=str(out / "data" / kind), out=str(out / kind), seed=seed, device=device)
    return C.build(None, cfg, sets)


def main(args: argparse.Namespace) -> int:
    import torch

    from ..pipeline import run
    from ..report import results_table

    from .run import set_threads

    if args.threads is None:
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    set_threads(args.threads)
    out = Path(args.out)
    t0 = time.time()
    results = {}
    for kind in args.datasets:
        synth = dict(DEMO[kind]["synth"])
        for key in ("n_train", "n_val"):
            if getattr(args, key, None):
                synth[key] = getattr(args, key)
        synthesize(kind, out / "data" / kind, progress=not args.quiet, seed=0, **synth)
        cfg = demo_config(kind, out, args.seed, args.device, args.set)
        results[kind] = run(cfg, progress=not args.quiet)
    print(f"\nfuzzyseg demo: done in {(time.time() - t0) / 60:.1f} min\n")
    for kind, metrics in results.items():
        print(f"## {kind} ({metrics['images']['train']} training images with {metrics['weak']}, "
              f"{metrics['images']['val']} validation images)\n")
        print(results_table(metrics))
        print(f"\nreport: {metrics.get('report')}\n")
    return 0
