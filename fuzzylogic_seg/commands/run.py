"""`fuzzyseg run`: every stage from weak labels to the report (fuzzylogic_seg.pipeline).

Flags mirror the config file (fuzzylogic_seg.config); a flag given overrides
the file, ``--set a.b=v`` overrides both. Rerunning the same command reuses
finished stages and resumes an interrupted one from its last checkpoint.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict

from . import CLASSES_HELP


def add_run_flags(p: argparse.ArgumentParser, require: bool = True) -> None:
    """The flags of `fuzzyseg run` (also used by `fuzzyseg demo` for overrides)."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=("voc", "refuge"), help="data set kind")
    g.add_argument("--root", help="data set root (VOC: the folder holding VOCdevkit or VOC2012; REFUGE: "
                                  "the folder holding train/ val/ or the REFUGE-1 folders)")
    g.add_argument("--weak", choices=("boxes", "scribbles", "points", "tags"), help="weak-label kind")
    g.add_argument("--weak-dir", help="a weak-label folder, as `fuzzyseg data weak` writes it, to use "
                                      "instead of reading/simulating them")
    g.add_argument("--classes", metavar="LIST|FILE", help=CLASSES_HELP)
    g.add_argument("--max-train", type=int, help="use the first N training images (quick runs)")
    g.add_argument("--max-val", type=int, help="use the first N validation images")
    g = p.add_argument_group("run")
    g.add_argument("--config", help="YAML/JSON config file (e.g. OUT/config.yaml of an earlier run)")
    g.add_argument("--out", help="output folder")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    g.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's, one per core); not part of the config")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config option, e.g. --set student.lr=0.001 --set finetune.lr=3e-4")
    g = p.add_argument_group("SAM and fine-tuning")
    g.add_argument("--sam-type", choices=("embedded", "vit_b", "vit_l", "vit_h"),
                   help="default: the --sam-checkpoint's own type (told from its weights), "
                        "else embedded")
    g.add_argument("--sam-checkpoint",
                   help="SAM weights: Meta's sam_vit_{b,l,h}_*.pth or an embedded model's file "
                        "(its type is told from the weights when --sam-type is left out)")
    g.add_argument("--rules", nargs="+", metavar="FILE", help="rule files for logic fine-tuning "
                                                             "(default: examples/rules for the data set)")
    g.add_argument("--finetune-epochs", type=int)
    g.add_argument("--compile-loss", metavar="MODE",
                   help="torch.compile the logic loss (finetune.compile_loss): default, or "
                        "reduce-overhead on a GPU (with CUDA graphs); a one-time compile (~30 s) "
                        "for a faster loss in long runs; or cuda-graphs: the eager loss replayed "
                        "as CUDA graphs, no compile (GPU only). Default: eager")
    g.add_argument("--methods", nargs="+", choices=("weak-mask", "zero-shot", "logic"),
                   help="pseudo-label methods (default: all three)")
    g = p.add_argument_group("student")
    g.add_argument("--students", nargs="+", metavar="VARIANT",
                   help="students to train: logic, zero-shot, weak-mask, gt (the ceiling), and "
                        "<method>+rules for the student rule loss (default: logic zero-shot gt)")
    g.add_argument("--main-student", help="the student whose predictions go to OUT/predictions/val")
    g.add_argument("--arch", help="smp architecture (deeplabv3plus, unet, fpn, ...)")
    g.add_argument("--encoder", help="smp encoder (resnet18, mobilenet_v2, tu-<timm name>, ...)")
    g.add_argument("--encoder-weights", help="imagenet (used if cached locally), none, or a file")
    g.add_argument("--student-epochs", type=int)
    g.add_argument("--student-size", type=int, help="longest side of student inputs (multiple of 32)")
    g.add_argument("--batch-size", type=int, help="the students' batch size (student.batch_size, default 8)")
    g.add_argument("--student-rules", help="rule file applied to the student's own predictions")


def flags_to_config(args: argparse.Namespace) -> Dict[str, Any]:
    """The flags given, as a (partial, nested) config dict; absent flags are left out."""
    def put(d: Dict[str, Any], path: str, value: Any) -> None:
        if value is None:
            return
        *head, last = path.split(".")
        for k in head:
            d = d.setdefault(k, {})
        d[last] = value

    out: Dict[str, Any] = {}
    for flag, path in (("dataset", "dataset"), ("root", "root"), ("weak", "weak"), ("weak_dir", "weak_dir"),
                       ("classes", "classes"), ("max_train", "max_images.train"), ("max_val", "max_images.val"),
                       ("out", "out"), ("seed", "seed"), ("device", "device"),
                       ("sam_type", "sam.type"), ("sam_checkpoint", "sam.checkpoint"),
                       ("rules", "finetune.rules"), ("finetune_epochs", "finetune.epochs"),
                       ("compile_loss", "finetune.compile_loss"),
                       ("methods", "pseudo.methods"), ("students", "students"),
                       ("main_student", "main_student"), ("arch", "student.arch"),
                       ("encoder", "student.encoder"), ("encoder_weights", "student.encoder_weights"),
                       ("student_epochs", "student.epochs"), ("student_size", "student.size"),
                       ("batch_size", "student.batch_size"), ("student_rules", "student.logic_rules")):
        put(out, path, getattr(args, flag, None))
    if getattr(args, "no_amp", False):
        out["amp"] = False
    return out


def set_threads(n) -> None:
    """`--threads N`: torch's intra-op CPU threads (a machine setting, like --device:
    not written to the config, and not part of a stage's fingerprint)."""
    if n is None:
        return
    if n < 1:
        from ..errors import ConfigError

        raise ConfigError(f"--threads must be >= 1, got {n}")
    import torch

    torch.set_num_threads(n)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="every stage: weak labels, SAM fine-tuning, pseudo-labels, students, report",
        description="Run the whole pipeline. Outputs: OUT/pseudo_labels/, OUT/predictions/val/, "
                    "OUT/metrics.json, OUT/report/report.md, OUT/config.yaml (repeat with "
                    "--config OUT/config.yaml), OUT/run.log. Rerun to resume.",
    )
    add_run_flags(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from .. import config as C
    from ..pipeline import run
    from ..report import results_table

    cfg = C.build(args.config, flags_to_config(args), args.set)
    set_threads(args.threads)
    metrics = run(cfg, progress=not args.quiet)
    if "report" in metrics:  # rank 0
        print()
        print(results_table(metrics))
        print(f"\nreport: {metrics['report']}")
    return 0
