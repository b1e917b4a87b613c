"""Reproduce the pseudo-label results table of docs/FINETUNE.md.

    .venv/bin/python examples/reproduce_pseudo.py [--work runs/pseudo] [--seeds 0 1 2]
        [--settings voc-boxes refuge-boxes voc-scribbles voc-tags voc-points] [--device cpu]
        [--sam-type embedded --sam-checkpoint FILE] [--threads 1]

Writes the embedded synthetic data sets (``fuzzyseg data synth``, their default
seed 0: the reported data; rules and settings were chosen on sets generated
with other seeds), the weak labels of each setting once (``fuzzyseg data
weak``-equivalent, seed 0, shared by every method and seed), then runs
``fuzzyseg pseudo-label`` for each method and training seed, and writes
``WORK/results.json`` and ``WORK/results.md`` (mean +- std over the seeds;
weak-mask and zero-shot do not depend on the seed and are run once).
Finished runs (a summary.json present) are not run again.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# name -> data set, weak kind, rule file, epochs, headline metric, metric label
SETTINGS = {
    "voc-boxes": ("voc", "boxes", "voc_boxes.rules", 20, "miou", "pseudo-label mIoU"),
    "refuge-boxes": ("refuge", "boxes", "refuge.rules", 10, "dice_mean",
                     "mean of disc and cup Dice"),
    "voc-scribbles": ("voc", "scribbles", "scribbles.rules", 10, "miou", "pseudo-label mIoU"),
    "voc-tags": ("voc", "tags", "tags.rules", 60, "miou", "pseudo-label mIoU"),
    "voc-points": ("voc", "points", "points.rules", 10, "miou", "pseudo-label mIoU"),
}
METHODS = ("weak-mask", "zero-shot", "logic")
RULES = Path(__file__).resolve().parent / "rules"


def cli(*argv) -> int:
    from fuzzylogic_seg.cli import main

    return main([str(a) for a in argv])


def run(args) -> dict:
    from fuzzylogic_seg.commands.pseudo import ensure_weak_dir

    work = Path(args.work)
    data = {"voc": work / "data" / "voc", "refuge": work / "data" / "refuge"}
    for kind, root in data.items():
        if not (root / "synth.json").is_file() and not any(root.glob("*")):
            # (--smoke: four training images a set, to check the script, not the numbers)
            cli("data", "synth", kind, root, *(("--n-train", 4, "--n-val", 1) if args.smoke else ()))
    results = {}
    for name in args.settings:
        kind, weak, rules, epochs, metric, label = SETTINGS[name]
        epochs = 1 if args.smoke else epochs
        weak_dir = ensure_weak_dir(kind, data[kind], "train", weak, work / "weak" / name, 0)
        rows = {}
        for method in METHODS:
            seeds = args.seeds if method == "logic" else args.seeds[:1]
            vals, extra = [], []
            for seed in seeds:
                out = work / name / method / f"seed{seed}"
                if not (out / "summary.json").is_file():
                    argv = ["pseudo-label", "--dataset", kind, "--root", data[kind], "--weak", weak,
                            "--method", method, "--out", out, "--weak-dir", weak_dir,
                            "--seed", seed, "--device", args.device, "--epochs", epochs,
                            "--rules", RULES / rules, "--sam-type", args.sam_type,
                            "--cache-dir", work / "embeddings"]
                    if args.sam_checkpoint:
                        argv += ["--sam-checkpoint", args.sam_checkpoint]
                    if args.threads:
                        argv += ["--threads", args.threads]
                    if cli(*argv) != 0:
                        raise SystemExit(f"run failed: {name} {method} seed {seed}")
                s = json.loads((out / "summary.json").read_text())
                vals.append(s[metric])
                extra.append({k: s.get(k) for k in ("dice_disc", "dice_cup", "miou", "coverage",
                                                    "vcdr_mae", "seconds")})
            rows[method] = {"values": vals, "mean": statistics.mean(vals),
                            "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0,
                            "seeds": list(seeds), "runs": extra}
        best = max(rows["weak-mask"]["mean"], rows["zero-shot"]["mean"])
        results[name] = {"metric": metric, "label": label, "rows": rows,
                         "margin": rows["logic"]["mean"] - best,
                         "margin_min_seed": min(rows["logic"]["values"]) - best}
    return results


def table(results: dict) -> str:
    lines = ["| setting | metric | weak-mask | zero-shot | logic (mean ± std) | logic − best baseline |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        if name.startswith("_"):
            continue
        rw = r["rows"]
        lines.append(
            f"| {name} | {r['label']} | {rw['weak-mask']['mean']:.3f} | {rw['zero-shot']['mean']:.3f} "
            f"| {rw['logic']['mean']:.3f} ± {rw['logic']['std']:.3f} (n={len(rw['logic']['values'])}) "
            f"| {r['margin']:+.3f} |")
    refuge = results.get("refuge-boxes")
    if refuge:
        lines.append("")
        lines.append("REFUGE-like, per region (Dice): " + "; ".join(
            f"{m}: disc {statistics.mean(x['dice_disc'] for x in refuge['rows'][m]['runs']):.3f}, "
            f"cup {statistics.mean(x['dice_cup'] for x in refuge['rows'][m]['runs']):.3f}"
            for m in METHODS))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/pseudo")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sam-type", default="embedded")
    ap.add_argument("--sam-checkpoint", default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1, as the published tables were made: CPU "
                         "float sums depend on the thread count; 0: torch's default)")
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny run that checks the script (4 training images a set, 1 epoch); "
                         "its numbers mean nothing")
    args = ap.parse_args(argv)
    results = run(args)
    from fuzzylogic_seg.io import save_json

    from fuzzylogic_seg.sam.build import load_sam, model_fingerprint

    sam = load_sam(args.sam_type, args.sam_checkpoint)
    results["_sam"] = {"type": args.sam_type, "weights": getattr(sam, "weights_path", None),
                       "fingerprint": model_fingerprint(sam)}
    save_json(results, Path(args.work) / "results.json")
    md = table(results)
    (Path(args.work) / "results.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
