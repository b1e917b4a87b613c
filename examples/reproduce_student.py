"""Reproduce the student results of README.md ("The segmentation pipeline"): the demo pipeline on both
embedded data sets over several seeds, as mean ± std, and the two claims checked:

1. the student trained on logic pseudo-labels beats the one trained on zero-shot
   pseudo-labels (VOC-like mIoU; REFUGE-like disc and cup Dice), and
2. it reaches at least 90% of the full-supervision ceiling (same student, same
   schedule, trained on the ground-truth masks).

    .venv/bin/python examples/reproduce_student.py --out runs/reproduce --seeds 0 1 2

The data sets are the demo's (fixed, seed 0); the seed changes SAM fine-tuning and
the students. Stages that do not depend on the seed (weak labels, weak-mask and
zero-shot pseudo-labels) are computed once and copied into the other seeds' runs
(their stage fingerprints are checked again there). Rerunning resumes.
Writes OUT/summary.md and OUT/summary.json.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from fuzzylogic_seg.commands.demo import DEMO, demo_config, synthesize
from fuzzylogic_seg.io import save_json
from fuzzylogic_seg.pipeline import run, setup_logging
from fuzzylogic_seg.report import seeds_table

SEED_FREE = ("weak", "pseudo-weak-mask", "pseudo-zero-shot")
CLAIM_KEYS = {"voc": ("miou",), "refuge": ("dice_disc", "dice_cup")}


def share_seed_free(src: Path, dst: Path) -> None:
    """Copy the seed-independent stages of run `src` into run `dst` (if not there yet)."""
    for stage in SEED_FREE:
        marker = src / "stages" / f"{stage}.json"
        if marker.is_file() and not (dst / "stages" / f"{stage}.json").exists():
            (dst / "stages").mkdir(parents=True, exist_ok=True)
            shutil.copy2(marker, dst / "stages" / marker.name)
    for sub in ("weak", "pseudo_labels/weak-mask", "pseudo_labels/zero-shot", "cache"):
        if (src / sub).is_dir() and not (dst / sub).exists():
            shutil.copytree(src / sub, dst / sub)
    for q in ("weak-mask", "zero-shot"):
        f = src / "pseudo_labels" / f"{q}.quality.json"
        if f.is_file() and not (dst / "pseudo_labels" / f.name).exists():
            shutil.copy2(f, dst / "pseudo_labels" / f.name)


def claims(kind: str, per_seed) -> dict:
    """Per student trained on logic pseudo-labels ("logic", and "logic+rules" where
    the configuration has it) and per metric: does it beat the zero-shot student,
    does it reach 90% of the ceiling (means over seeds)."""
    out = {}
    variants = [v for v in per_seed[0]["students"] if v.startswith("logic")]
    for v in sorted(variants):
        for k in CLAIM_KEYS[kind]:
            logic = np.array([m["students"][v][k] for m in per_seed])
            zero = np.array([m["students"]["zero-shot"][k] for m in per_seed])
            ceil = np.array([m["students"]["gt"][k] for m in per_seed])
            out.setdefault(v, {})[k] = {
                "student": logic.mean(), "zero_shot": zero.mean(), "ceiling": ceil.mean(),
                "share_of_ceiling": logic.mean() / ceil.mean(),
                "beats_zero_shot": bool(logic.mean() > zero.mean()),
                "reaches_90pct": bool(logic.mean() >= 0.9 * ceil.mean())}
    return out


def ceiling_table(kind: str, per_seed) -> str:
    """Each student's share of the ceiling: mean over seeds / ceiling mean, and the
    per-seed ratios as mean ± std (the same seed's ceiling)."""
    keys = CLAIM_KEYS[kind]
    variants = [v for v in per_seed[0]["students"] if v != "gt"]
    order = {v: i for i, v in enumerate(("weak-mask", "zero-shot", "logic", "logic+rules"))}
    lines = ["| student | " + " | ".join(f"{k}: % of ceiling (per-seed ratio)" for k in keys) + " |",
             "|" + "---|" * (len(keys) + 1)]
    for v in sorted(variants, key=lambda v: (order.get(v, 99), v)):
        cells = []
        for k in keys:
            x = np.array([m["students"][v][k] for m in per_seed])
            c = np.array([m["students"]["gt"][k] for m in per_seed])
            r = x / c
            cells.append(f"{100 * x.mean() / c.mean():.1f}% ({100 * r.mean():.1f} ± "
                         f"{100 * (r.std(ddof=1) if r.size > 1 else 0):.1f})")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/reproduce")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--datasets", nargs="+", choices=tuple(DEMO), default=list(DEMO))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    t0 = time.time()
    summary, parts = {}, ["# Student results over seeds " + ", ".join(map(str, args.seeds)), ""]
    for kind in args.datasets:
        synthesize(kind, out / "data" / kind, seed=0, **DEMO[kind]["synth"])
        per_seed = []
        for seed in args.seeds:
            cfg = demo_config(kind, out, seed, args.device, args.set)
            cfg["out"] = str(out / kind / f"seed{seed}")
            if seed != args.seeds[0]:
                share_seed_free(out / kind / f"seed{args.seeds[0]}", Path(cfg["out"]))
            per_seed.append(run(cfg, progress=False))
        setup_logging(out)  # the summary's own messages
        summary[kind] = {"per_seed": per_seed, "claims": claims(kind, per_seed)}
        parts += [f"## {kind}", "", seeds_table(per_seed), "", ceiling_table(kind, per_seed), ""]
        for v, per_key in summary[kind]["claims"].items():
            for k, c in per_key.items():
                parts.append(f"- {k}: {v} student {c['student']:.3f} vs zero-shot student "
                             f"{c['zero_shot']:.3f} ({'beats' if c['beats_zero_shot'] else 'does NOT beat'}"
                             f" it); {100 * c['share_of_ceiling']:.1f}% of the ceiling "
                             f"{c['ceiling']:.3f} ({'>=' if c['reaches_90pct'] else '<'} 90%)")
        parts.append("")
    # the command as run (every option that changes the numbers: data sets, --set, threads)
    cmd = ["--out", args.out, "--seeds", *map(str, args.seeds)]
    if args.datasets != list(DEMO):
        cmd += ["--datasets", *args.datasets]
    for item in args.set:
        cmd += ["--set", item]
    if args.threads != 1:
        cmd += ["--threads", str(args.threads)]
    if args.device != "cpu":
        cmd += ["--device", args.device]
    parts.append(f"Command: `.venv/bin/python examples/reproduce_student.py {shlex.join(cmd)}` "
                 f"({(time.time() - t0) / 60:.1f} min).")
    text = "\n".join(parts)
    (out / "summary.md").write_text(text + "\n")
    save_json(summary, out / "summary.json")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
