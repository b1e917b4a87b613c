"""`fuzzyseg run`: every stage, from weak labels to the report, resumable.

Stages (outputs under OUT; each finished stage leaves ``OUT/stages/NAME.json``
with a fingerprint of everything that decided it, and is reused on the next
run while the fingerprint matches):

1. ``weak``: the training split's weak labels, written to ``OUT/weak/train``
   (real ones where the data set has them, else simulated from the masks by
   the seeded protocol), or a given weak-label folder (``weak_dir``).
2. ``pseudo-<method>``: pseudo-labels of the training split in
   ``OUT/pseudo_labels/<method>/`` (weak-mask, zero-shot, logic; the logic
   method fine-tunes SAM first, in ``OUT/finetune/``, with its own per-epoch
   checkpoint), and their quality against the masks (evaluation only).
3. ``student-<variant>``: a prompt-free student per variant (see
   :data:`fuzzylogic_seg.config.VARIANTS`) in ``OUT/students/<variant>/``
   (per-epoch checkpoint, ``model.pt``, ``history.json``), its predictions on
   the validation split (the main student's in ``OUT/predictions/val/``) and
   their metrics.
4. ``OUT/metrics.json`` and the report ``OUT/report/report.md``.

Training stages read datasets built with ``with_gt=False`` from the weak-label
folder, so ground-truth pixels cannot reach a trained weight or a label; masks
are read only to score outputs. Under torchrun the students train with DDP on
every rank; the other stages run on rank 0 while the rest wait.
"""
from __future__ import annotations

import copy
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from . import config as C
from . import distributed as D
from .devices import native_bf16
from .errors import ConfigError
from .io import load_json, save_json

LOGGER = "fuzzylogic_seg"
log = logging.getLogger(LOGGER + ".pipeline")


# ------------------------------------------------------------------- data sets
def make_dataset(kind: str, root, split: str, ids: Optional[List[str]] = None, classes=None, **kw):
    """The data layer's loader for `kind`, optionally restricted to `ids` (in their order);
    `classes`: VOC layout's class list (default: labelmap.txt or the VOC classes)."""
    from .data.base import SegDataset

    if kind == "voc":
        from .data.voc import VOCSegmentation

        return VOCSegmentation(root, split, ids=ids, classes=classes, **kw)
    from .data.refuge import REFUGE, refuge_items

    if ids is None:
        return REFUGE(root, split, **kw)
    by_id = {it.id: it for it in refuge_items(root, split)}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ConfigError(f"REFUGE split {split!r} of {root} has no image {missing[0]!r}")
    ds = REFUGE.__new__(REFUGE)  # REFUGE() takes no id list: build the subset through its base
    SegDataset.__init__(ds, [by_id[i] for i in ids], root=root, split=split, **kw)
    return ds


def split_ids(kind: str, root, split: str, limit: Optional[int], classes=None) -> List[str]:
    """The split's image ids (sorted), the first `limit` of them when given."""
    ids = sorted(make_dataset(kind, root, split, kinds=(), classes=classes).ids)
    return ids[: int(limit)] if limit else ids


def class_names(kind: str) -> List[str]:
    """The kind's default classes (a VOC-layout data set may have its own: Pipeline.class_list)."""
    from .data import DATASETS

    return list(DATASETS[kind].classes)


def resolve_class_list(cfg: Dict[str, Any]):
    """The run's classes (fuzzylogic_seg.data.classes.ClassList): REFUGE's; for VOC layout
    ``cfg["classes"]``, else the VOC2012 folder's labelmap.txt, else the 21 VOC classes."""
    from .data.classes import ClassList, resolve_classes

    if cfg["dataset"] != "voc":
        return ClassList(tuple(class_names(cfg["dataset"])), source=cfg["dataset"])
    from .data.voc import resolve_root

    return resolve_classes(resolve_root(cfg["root"]), cfg.get("classes"))


def has_mask(item) -> bool:
    """The item's mask file is there (weak labels alone need none)."""
    return item.mask is not None and Path(item.mask).is_file()


HEADLINE_KEYS = ("miou", "dice_disc", "dice_cup", "vcdr_mae", "coverage", "pixel_accuracy",
                 "scored_images")  # (the last: only when some masks are missing)


def headline(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """The numbers of metrics.json (per-image rows and per-class IoU stay in the stage files)."""
    return {k: metrics[k] for k in HEADLINE_KEYS if k in metrics}


# --------------------------------------------------------------------- logging
def setup_logging(out: Path, is_main: bool = True) -> logging.Handler:
    """Messages to stdout and to OUT/run.log (appended: a resumed run continues the log)."""
    root = logging.getLogger(LOGGER)
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if getattr(h, "_fuzzyseg", False):
            root.removeHandler(h)
            h.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    handler: logging.Handler
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(out / "run.log")
        handler.setFormatter(fmt)
        handler._fuzzyseg = True
        root.addHandler(handler)
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("%(message)s"))
        console._fuzzyseg = True
        root.addHandler(console)
    else:
        handler = logging.NullHandler()
        handler._fuzzyseg = True
        root.addHandler(handler)
    root.propagate = False
    return handler


# -------------------------------------------------------------------- pipeline
class Pipeline:
    """One run of every stage for the validated config `cfg` (see module doc).

    `hooks`: ``{"student_epoch": f(variant, epoch, record)}`` runs after each
    student epoch's checkpoint (tests raise there to interrupt a run);
    ``{"stage_done": f(name)}`` after each stage.
    """

    def __init__(self, cfg: Dict[str, Any], hooks: Optional[Dict[str, Callable]] = None,
                 progress: bool = True, ctx: Optional[D.DistContext] = None):
        self.cfg = cfg
        self.kind = cfg["dataset"]
        self.out = Path(cfg["out"])
        self.hooks = hooks or {}
        self.progress = progress
        self.ctx = ctx or D.DistContext(device=D.resolve_device(cfg["device"]))
        self.device = self.ctx.device
        if cfg["finetune"].get("compile_loss") is not None:
            from .finetune import compile_options

            # device "auto" is resolved now: cuda-graphs on a CPU stops here, before any stage
            compile_options(cfg["finetune"]["compile_loss"], self.device)
        self._class_list = None
        self._sam = None
        self._given_weak_fp: Optional[str] = None  # fp_weak's hash of a given weak folder
        self._ids: Dict[str, List[str]] = {}
        self._unmasked: Dict[str, List[Path]] = {}

    # ---------------------------------------------------------------- stages
    def _marker(self, name: str) -> Path:
        return self.out / "stages" / f"{name}.json"

    def stage(self, name: str, fp: str, fn: Callable[[], Dict[str, Any]], outputs: List[Path],
              everywhere: bool = False) -> Dict[str, Any]:
        """Run `fn` unless a marker with fingerprint `fp` says it is done and its
        `outputs` exist; returns its result.

        `everywhere`: every rank runs `fn` (DDP training); else rank 0 runs it
        and the others read its marker.
        """
        marker = self._marker(name)
        if marker.is_file():
            done = load_json(marker)
            missing = [p for p in outputs if not p.exists()]
            if done.get("fingerprint") == fp and not missing:
                log.info(f"[{name}] done before: reusing its outputs")
                # Every path through a stage meets exactly one barrier: a slow rank
                # that finds the marker rank 0 just wrote must still match rank 0's
                # barrier, or the ranks' barriers shift by one stage.
                D.barrier(self.ctx)
                return done["result"]
            log.info(f"[{name}] " + (f"output {missing[0]} is missing" if missing else
                                     "configuration changed since the last run") + ": running it again")
        result: Dict[str, Any] = {}
        if self.ctx.is_main:
            # The old marker goes first: the stage rewrites its outputs in place, and
            # an interrupted rewrite must not pass for the old, finished stage.
            marker.unlink(missing_ok=True)
        if everywhere or self.ctx.is_main:
            t0 = time.time()
            log.info(f"[{name}] running")
            result = fn()
            if self.ctx.is_main:
                save_json({"fingerprint": fp, "result": result, "seconds": round(time.time() - t0, 2)},
                          marker)
            log.info(f"[{name}] finished in {time.time() - t0:.1f}s")
        D.barrier(self.ctx)
        if not self.ctx.is_main:  # rank 0 wrote the result (e.g. after scoring its student)
            result = load_json(marker)["result"]
        if "stage_done" in self.hooks:
            self.hooks["stage_done"](name)
        return result

    # ---------------------------------------------------------------- helpers
    def ids(self, split: str) -> List[str]:
        if split not in self._ids:  # listing a split checks every file: once per run
            self._ids[split] = split_ids(self.kind, self.cfg["root"], self.cfg["splits"][split],
                                         self.cfg["max_images"].get(split), self._classes_arg())
        return self._ids[split]

    def dataset(self, split: str, **kw):
        return make_dataset(self.kind, self.cfg["root"], self.cfg["splits"][split], ids=self.ids(split),
                            classes=self._classes_arg(), **kw)

    def unmasked(self, split: str) -> List[Path]:
        """The masks missing for the split's images (none: every image has one)."""
        if split not in self._unmasked:
            ds = self.dataset(split, kinds=())
            self._unmasked[split] = [Path(it.mask) if it.mask is not None else it.image
                                     for it in ds.items if not has_mask(it)]
        return self._unmasked[split]

    def check_masks(self) -> None:
        """Before the first stage: the validation split needs a mask per image (the
        students are scored on it), the `gt` students need the training masks; the
        pseudo-labels are scored on the training images that have one."""
        cfg, train, val = self.cfg, self.cfg["splits"]["train"], self.cfg["splits"]["val"]
        gt = [v for v in cfg.get("students") or [] if C.variant_labels(v) == "gt"]
        missing = self.unmasked("train")
        if missing and gt:
            others = [v for v in cfg["students"] if v not in gt]
            raise ConfigError(
                f"{len(missing)} of {len(self.ids('train'))} images of the training split {train!r} "
                f"have no mask (first: {missing[0]}), but the student(s) {', '.join(gt)} train on "
                "the training masks (the full-supervision ceiling): leave them out, "
                + (f"--students {' '.join(others)}" if others else "e.g. --students logic zero-shot"))
        real = ("boxes", "tags") if self.kind == "voc" else ()
        if missing and not cfg.get("weak_dir") and cfg["weak"] not in real:
            raise ConfigError(
                f"{len(missing)} of {len(self.ids('train'))} images of the training split {train!r} "
                f"have no mask (first: {missing[0]}), and weak labels of kind {cfg['weak']!r} are "
                "simulated from the masks: " + ("use the XML's --weak boxes or --weak tags, or "
                                               if real else "") +
                "give your own with --weak-dir (`fuzzyseg data weak`)")
        if missing:
            scored = len(self.ids("train")) - len(missing)
            log.info(f"{len(missing)} of {len(self.ids('train'))} training images have no mask: "
                     + (f"the pseudo-labels are scored on the other {scored}" if scored else
                        "the pseudo-labels are not scored") + " (training reads only the weak labels)")
        missing = self.unmasked("val") if cfg.get("students") else []
        if missing:
            raise ConfigError(
                f"{len(missing)} of {len(self.ids('val'))} images of the validation split {val!r} "
                f"have no mask (first: {missing[0]}): the students are scored on it, so list only "
                "images with masks there, or name another list with --set splits.val=NAME "
                "(e.g. the ImageSets/Segmentation/NAME.txt of a masks export)")
        if cfg.get("students"):
            # (read now: a mask of an unknown colour or size would otherwise stop the run
            # when the first student is scored, after the fine-tuning and its training)
            val_ds = self.dataset("val", kinds=())
            for i in range(len(val_ds)):
                val_ds.read_gt(i)

    @property
    def class_list(self):
        """The run's classes (resolve_class_list), read once a run."""
        if self._class_list is None:
            self._class_list = resolve_class_list(self.cfg)
        return self._class_list

    def _classes_arg(self):
        return self.class_list if self.kind == "voc" else None

    @property
    def custom_classes(self) -> bool:
        """A VOC-layout data set with classes of its own (not the 21 VOC ones)."""
        return self.kind == "voc" and not self.class_list.is_voc

    def _classes_fp(self) -> List[Any]:
        """The class list's part of a fingerprint: nothing for the VOC classes without
        colours (the fingerprints of runs on them are what they were); a labelmap's
        colours count even with VOC's names (colour masks are read by them)."""
        if self.kind != "voc" or (self.class_list.is_voc and not self.class_list.has_colors):
            return []
        cl = self.class_list
        return [["classes", list(cl.names), [list(c) if c else None for c in cl.colors]]]

    def check_classes(self) -> None:
        """Refuse to resume, in the same OUT, a run made on another class list."""
        marker = self._marker("weak")
        if not marker.is_file():
            return
        try:
            before = load_json(marker).get("result", {}).get("classes")
        except (OSError, ValueError):
            return
        if before is None:  # (runs on the kind's default classes record none)
            before = class_names(self.kind)
        now = list(self.class_list.names)
        if list(before) != now:
            raise ConfigError(
                f"{self.out} holds a run on the classes {', '.join(before)}, but this run's are "
                f"{', '.join(now)} ({self.class_list.source}): its weak labels, pseudo-labels and "
                f"students would not fit; use another --out, or delete {self.out / 'stages'} "
                "to start this folder over")

    @property
    def weak_dir(self) -> Path:
        return Path(self.cfg["weak_dir"]) if self.cfg.get("weak_dir") else self.out / "weak" / "train"

    def train_dataset(self, with_gt: bool = False):
        """The training split as training code sees it: weak labels from their folder."""
        return self.dataset("train", weak_dir=self.weak_dir, with_gt=with_gt)

    def sam(self):
        if self._sam is None:
            from .sam.build import load_sam

            s = self.cfg["sam"]
            self._sam = load_sam(s["type"], s.get("checkpoint"), device=self.device)
        return self._sam

    def _file_fp(self, path: Optional[str]) -> Optional[str]:
        if not path:
            return None
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{path}: no such file")
        st = p.stat()
        return f"{p.resolve()}:{st.st_size}:{int(st.st_mtime)}"

    def _rules_fp(self, paths) -> List[str]:
        """The rule files as parsed, their includes inlined: editing an included
        file changes the fingerprint too."""
        from fuzzylogic.parser import parse_file

        from .rulefiles import resolve_rule_file

        out = []
        for p in paths or []:
            out.append(C.fingerprint(repr(parse_file(resolve_rule_file(p)))))
        return out

    @staticmethod
    def _folder_fp(folder: Path) -> str:
        """A hash of a weak-label folder's contents (manifest, labels, scribbles):
        a folder rewritten in place (`fuzzyseg data weak --out` again) reruns what
        was trained on it."""
        import hashlib

        h = hashlib.blake2b(digest_size=16)
        files = [folder / "weak.json"] + sorted((folder / "labels").glob("*.json")) \
            + sorted((folder / "scribbles").glob("*.png"))
        for f in files:
            if f.is_file():
                h.update(f"{f.relative_to(folder)}|".encode())
                h.update(f.read_bytes())
        return h.hexdigest()

    # ------------------------------------------------------------------ weak
    def fp_weak(self) -> str:
        c = self.cfg
        if c.get("weak_dir") and self._given_weak_fp is None:
            # (read once a run: a user's folder does not change during it)
            self._given_weak_fp = self._folder_fp(Path(c["weak_dir"]))
        given = self._given_weak_fp
        return C.fingerprint("weak", self.kind, c["root"], c["splits"]["train"], self.ids("train"), c["weak"],
                             c.get("weak_seed", 0), c.get("weak_dir"), given, *self._classes_fp())

    def run_weak(self) -> Dict[str, Any]:
        if self.cfg.get("weak_dir"):
            from .weak.store import WeakStore

            store = WeakStore(self.weak_dir)
            store.require_kind(self.cfg["weak"])
            return {"folder": str(self.weak_dir), "images": len(store), "given": True,
                    **self._classes_record()}
        from .weak.store import save_split
        from tqdm import tqdm

        ds = self.dataset("train", kinds=(self.cfg["weak"],), seed=self.cfg.get("weak_seed", 0))
        items = ((ds.ids[i], ds.weak_labels(i, _image_size(ds, i)))
                 for i in tqdm(range(len(ds)), desc="weak labels", leave=False, disable=not self.progress))
        save_split(self.weak_dir, items, dataset=self.kind, split=self.cfg["splits"]["train"],
                   class_names=list(self.class_list.names),
                   info={"kinds": [self.cfg["weak"]], "seed": self.cfg.get("weak_seed", 0)})
        return {"folder": str(self.weak_dir), "images": len(ds), "given": False, **self._classes_record()}

    def _classes_record(self) -> Dict[str, Any]:
        """What the weak stage's marker records of the classes (check_classes reads it)."""
        return {"classes": list(self.class_list.names)} if self.custom_classes else {}

    # ---------------------------------------------------------------- pseudo
    def pseudo_dir(self, method: str) -> Path:
        return self.out / "pseudo_labels" / method

    def fp_pseudo(self, method: str) -> str:
        c = self.cfg
        parts: List[Any] = ["pseudo", method, self.fp_weak(), _without(c["pseudo"], "methods")]
        if method != "weak-mask":
            checkpoint = c["sam"].get("checkpoint")
            if not checkpoint and c["sam"]["type"] == "embedded":  # the shipped weights
                from .sam.build import embedded_weights_path

                checkpoint = embedded_weights_path()
            parts += [c["sam"]["type"], self._file_fp(checkpoint and str(checkpoint))]
            if c["amp"] and native_bf16(self.device):  # (fp32 keeps the fingerprints it had)
                parts.append("amp-bf16")
        if method == "logic":
            ft = dict(c["finetune"])
            parts += [ft, self._rules_fp(ft.get("rules") or self._default_rules()), c["seed"]]
        return C.fingerprint(*parts)

    def _default_rules(self) -> List[str]:
        """The rule files the fine-tuner picks when none are given (for the fingerprint)."""
        from .finetune import default_rules

        try:
            return [str(default_rules(self.kind, self.cfg["weak"]))]
        except ConfigError:  # the fine-tuner will say so itself
            return []

    def run_pseudo(self, method: str) -> Dict[str, Any]:
        from .pseudo import make_pseudo_labels

        ft = dict(self.cfg["finetune"])
        opts = _without(self.cfg["pseudo"], "methods")
        kw: Dict[str, Any] = dict(dataset_kind=self.kind, weak=self.cfg["weak"], seed=self.cfg["seed"],
                                  device=str(self.device), progress=self.progress and self.ctx.is_main,
                                  cache_dir=str(self.out / "cache" / "sam"), evaluate=False)
        if method == "logic":
            kw["rules"] = ft.pop("rules", None)
            if "epochs" in ft:
                kw["epochs"] = ft.pop("epochs")
            ft.setdefault("out_dir", str(self.out / "finetune"))
            ft.setdefault("amp", self.cfg["amp"] and self.device.type == "cuda")
            kw["tuner_options"] = ft
        elif method == "zero-shot":
            kw["tuner_options"] = {"amp": self.cfg["amp"] and self.device.type == "cuda"}
        # logic fine-tunes its SAM in place: a copy, so that a zero-shot stage run
        # after it (another method order, a rerun) still gets the frozen model
        sam = None if method == "weak-mask" else (
            copy.deepcopy(self.sam()) if method == "logic" else self.sam())
        out = self.pseudo_dir(method)
        summary = make_pseudo_labels(method, self.train_dataset(), sam=sam, out_dir=out, **kw, **opts)
        return {"folder": str(out), "quality": self._score_pseudo(method),
                "seconds": summary.get("seconds"), "images": summary.get("n_images")}

    def _score_pseudo(self, method: str, note: str = "") -> Optional[Dict[str, Any]]:
        """The headline scores of a method's pseudo-labels on the training images that
        have a mask (None when none has); the full metrics go to METHOD.quality.json."""
        if len(self.unmasked("train")) == len(self.ids("train")):
            return None
        folder = self.pseudo_dir(method)
        quality = self.score("train", folder, f"{method} pseudo-labels{note}")
        save_json(quality, folder.parent / f"{method}.quality.json")
        return headline(quality)

    def score_late(self, method: str, result: Dict[str, Any]) -> Dict[str, Any]:
        """Pseudo-labels made when the training split had no mask, and masks there now:
        score them now (the labels do not depend on the masks) and keep the score in
        the stage's marker, rather than make them again."""
        if result.get("quality") is not None or not self.ctx.is_main:
            return result
        quality = self._score_pseudo(method, " (masks added since they were made)")
        if quality is None:
            return result
        result = {**result, "quality": quality}
        marker = self._marker(f"pseudo-{method}")
        done = load_json(marker)
        save_json({**done, "result": result}, marker)
        return result

    def score(self, split: str, folder: Path, desc: str) -> Dict[str, Any]:
        """The metrics (metrics.py) of the label images in `folder` (masks read here only).

        The evaluator of `fuzzyseg evaluate`: uncertain pixels (255; REFUGE:
        written as background) count as misses.
        """
        from .commands.evaluate import evaluate_predictions

        ds = self.dataset(split, kinds=())
        missing = set(self.unmasked(split))
        if missing:  # scored on the images that have a mask, and saying so
            ids = [it.id for it in ds.items if has_mask(it)]
            ds = make_dataset(self.kind, self.cfg["root"], self.cfg["splits"][split], ids=ids,
                              classes=self._classes_arg(), kinds=())
            log.info(f"scoring {desc} on the {len(ids)} of {len(ids) + len(missing)} images with a mask")
        else:
            log.info(f"scoring {desc}")
        metrics = evaluate_predictions(ds, folder, progress=False, per_image=True)
        if missing:
            metrics["scored_images"] = len(ds)
        return metrics

    # --------------------------------------------------------------- student
    def student_dir(self, variant: str) -> Path:
        return self.out / "students" / variant

    def predictions_dir(self, variant: str) -> Path:
        if variant == self.cfg["main_student"]:
            return self.out / "predictions" / "val"
        return self.student_dir(variant) / "predictions" / "val"

    def fp_student(self, variant: str, val: bool = True) -> str:
        c = self.cfg
        base = C.variant_labels(variant)
        labels_fp = C.fingerprint("gt", self.kind, c["root"], self.ids("train"), *self._classes_fp()) \
            if base == "gt" else self.fp_pseudo(base)
        scfg = C.student_config(c, variant)
        parts = ["student", variant, labels_fp, scfg.to_dict(), self._rules_fp([scfg.logic_rules]
                 if scfg.logic_rules else []), c["seed"], self.ctx.world_size]
        if val:
            parts += [c["splits"]["val"], self.ids("val"), variant == c["main_student"]]
        return C.fingerprint(*parts)

    def run_student(self, variant: str) -> Dict[str, Any]:
        from .student import (GroundTruth, Student, StudentDataset, StudentLogic, predict_dataset,
                              save_student, train_student)

        scfg = C.student_config(self.cfg, variant)
        base = C.variant_labels(variant)
        if base == "gt":
            train = self.train_dataset(with_gt=True)
            labels = GroundTruth()
        else:
            train = self.train_dataset()
            labels = PseudoLabels(self.pseudo_dir(base), self.kind)
        n_classes = len(self.class_list)
        logic = StudentLogic(scfg.logic_rules, self.kind, n_classes) if scfg.logic_rules else None
        data = StudentDataset(train, labels, scfg.size, seed=self.cfg["seed"], hflip=scfg.hflip,
                              scale=scfg.scale_aug, jitter=scfg.color_jitter, boundary_ignore=scfg.boundary_ignore,
                              present=n_classes if logic is not None and self.kind == "voc" else 0,
                              boxes=logic is not None and logic.needs_boxes)
        sdir = self.student_dir(variant)
        hook = self.hooks.get("student_epoch")
        result = train_student(
            scfg, data, self.kind, sdir, seed=self.cfg["seed"], ctx=self.ctx,
            fingerprint=self.fp_student(variant, val=False), log=log.info,
            on_epoch_end=(lambda e, rec: hook(variant, e, rec)) if hook else None,
            progress=self.progress, logic=logic, num_classes=n_classes,
        )
        if not self.ctx.is_main:
            return {}
        save_json(result.history, sdir / "history.json")
        save_student(sdir / "model.pt", result.model, scfg, self.kind,
                     extra={"variant": variant, "seed": self.cfg["seed"], "run": str(self.out)},
                     class_list=self.class_list if self.custom_classes else None)
        student = Student(result.model, scfg, self.kind, self.device, class_names=self.class_list.names,
                          palette=self.class_list.palette() if self.custom_classes else None)
        val = self.dataset("val", kinds=())
        pred_dir = self.predictions_dir(variant)
        predict_dataset(student, val, pred_dir, progress=self.progress, desc=f"predict {variant}",
                        model=str(sdir / "model.pt"))
        metrics = self.score("val", pred_dir, f"student {variant}")
        save_json(metrics, sdir / "metrics.json")
        return {"model": str(sdir / "model.pt"), "predictions": str(pred_dir), "metrics": headline(metrics),
                "epochs": len(result.history), "resumed_from_epoch": result.resumed_from}

    # ------------------------------------------------------------------ run
    def run(self) -> Dict[str, Any]:
        cfg = self.cfg
        self.check_classes()  # (before config.yaml is rewritten)
        if self.ctx.is_main:
            C.write(cfg, self.out / "config.yaml")
        D.barrier(self.ctx)
        D.seed_everything(cfg["seed"])
        if cfg.get("deterministic", True):
            D.set_deterministic(True)
        log.info(f"fuzzyseg run: {self.kind} from {cfg['root']}, weak labels {cfg['weak']}, "
                 f"device {self.device}, out {self.out}")
        if self.kind == "voc" and self.class_list.source != "VOC":
            log.info(f"classes: {self.class_list.describe()}")
        n_train, batch = len(self.ids("train")), int(cfg["student"]["batch_size"])
        if cfg.get("students") and n_train < batch:  # (found now, not after the SAM stages)
            raise ConfigError(f"student batch size {batch} is larger than the {n_train} training "
                              "images: lower it (--batch-size N, or --set student.batch_size=N)")
        self.check_rules()
        self.check_masks()
        self.stage("weak", self.fp_weak(), self.run_weak, [self.weak_dir / "weak.json"])
        pseudo = {}
        for method in cfg["pseudo"]["methods"]:
            folder = self.pseudo_dir(method)
            pseudo[method] = self.stage(f"pseudo-{method}", self.fp_pseudo(method),
                                        lambda m=method: self.run_pseudo(m),
                                        [folder / f"{i}.png" for i in self.ids("train")])
            pseudo[method] = self.score_late(method, pseudo[method])
        students = {}
        for variant in cfg["students"]:
            preds = self.predictions_dir(variant)
            students[variant] = self.stage(f"student-{variant}", self.fp_student(variant),
                                           lambda v=variant: self.run_student(v),
                                           [self.student_dir(variant) / "model.pt"]
                                           + [preds / f"{i}.png" for i in self.ids("val")], everywhere=True)
        metrics = self.collect(pseudo, students)
        if self.ctx.is_main:
            save_json(metrics, self.out / "metrics.json")
            path = self.render_report(metrics)
            metrics["report"] = str(path)
            log.info(f"metrics: {self.out / 'metrics.json'}; report: {path}")
        D.barrier(self.ctx)
        return metrics

    def check_rules(self) -> None:
        """Bind every rule file the run will use to its facts now (ConfigError naming
        the file and line), not when its stage comes, after the SAM stages."""
        from . import rule_facts as rf

        cfg = self.cfg
        if "logic" in cfg["pseudo"]["methods"]:
            paths = cfg["finetune"].get("rules") or self._default_rules()
            for p in [paths] if isinstance(paths, str) else paths:
                rf.check_file_for(p, cfg["weak"], dataset=self.kind)
        if any(v.endswith("+rules") for v in cfg.get("students") or []):
            rf.check_file_for(cfg["student"]["logic_rules"], f"student-{self.kind}")

    def collect(self, pseudo: Dict[str, Any], students: Dict[str, Any]) -> Dict[str, Any]:
        s = self.cfg["student"]
        metrics: Dict[str, Any] = {
            "dataset": self.kind, "weak": self.cfg["weak"], "seed": self.cfg["seed"],
            "sam": self.cfg["sam"]["type"], "student_model": f"{s['arch']}/{s['encoder']}",
            "main_student": self.cfg["main_student"],
            "splits": self.cfg["splits"], "images": {k: len(self.ids(k)) for k in ("train", "val")},
            **({"classes": list(self.class_list.names)} if self.custom_classes else {}),
            "pseudo_labels": {m: r["quality"] for m, r in pseudo.items() if r.get("quality")},
            "students": {v: r["metrics"] for v, r in students.items()},
        }
        ceiling = metrics["students"].get("gt")
        if ceiling:
            metrics["ceiling"] = ceiling
            metrics["relative_to_ceiling"] = {
                v: {k: m[k] / ceiling[k] for k in ("miou", "dice_disc", "dice_cup")
                    if m.get(k) is not None and ceiling.get(k)}
                for v, m in metrics["students"].items() if v != "gt"}
        return metrics

    # ---------------------------------------------------------------- report
    def render_report(self, metrics: Dict[str, Any]) -> Path:
        from . import report

        histories = {}
        for v in self.cfg["students"]:
            p = self.student_dir(v) / "history.json"
            if p.is_file():
                histories[v] = load_json(p)
        ft = self.out / "finetune" / "history.json"
        return report.render(
            self.out / "report", metrics, student_histories=histories,
            finetune_history=load_json(ft) if ft.is_file() else None,
            overlays=self.overlay_rows(), config_path=str(self.out / "config.yaml"),
            class_names=list(self.class_list.names) if self.custom_classes else None,
            palette=self.class_list.palette() if self.custom_classes else None,
        )

    def overlay_rows(self) -> List[Dict[str, Any]]:
        """A few training images: weak label, zero-shot and logic pseudo-labels, student, truth."""
        from .pseudo import read_label
        from .student import Student

        n = int(self.cfg["report"].get("overlays", 4))
        if n <= 0:
            return []
        train = self.train_dataset()
        model = self.student_dir(self.cfg["main_student"]) / "model.pt"
        student = Student.load(model, self.device) if model.is_file() else None
        rows = []
        for i in range(min(n, len(train))):
            s = train[i]
            row: Dict[str, Any] = {"id": s["id"], "image": s["image"].permute(1, 2, 0).numpy(),
                                   "weak": s["weak"]}
            for method, panel in (("zero-shot", "zero-shot SAM"), ("logic", "logic SAM")):
                p = self.pseudo_dir(method) / f"{s['id']}.png"
                row[panel] = read_label(p, self.kind).numpy() if p.is_file() else None
            row["student"] = student.predict(s["image"]).numpy() if student else None
            row["ground truth"] = train.read_gt(i).numpy() if has_mask(train.items[i]) else None
            rows.append(row)
        return rows


class PseudoLabels:
    """Student label source: pseudo-labels written by :mod:`fuzzylogic_seg.pseudo`."""

    def __init__(self, folder, kind: str):
        self.folder, self.kind = Path(folder), kind

    def __call__(self, sample: Dict[str, Any]) -> torch.Tensor:
        from .errors import DatasetError
        from .pseudo import read_label

        path = self.folder / f"{sample['id']}.png"
        if not path.is_file():
            raise DatasetError("pseudo-label missing for this training image", path)
        return read_label(path, self.kind)


def _image_size(ds, i: int):
    from .data.base import image_size

    return image_size(ds.items[i].image)


def _without(d: Dict[str, Any], *keys: str) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


def run(cfg: Dict[str, Any], hooks: Optional[Dict[str, Callable]] = None, progress: bool = True
        ) -> Dict[str, Any]:
    """Validate `cfg`, run every stage (joining torchrun's group when started by it)."""
    cfg = C.validate(cfg)
    ctx = D.init_distributed(cfg["device"])
    setup_logging(Path(cfg["out"]), ctx.is_main)
    try:
        return Pipeline(cfg, hooks=hooks, progress=progress, ctx=ctx).run()
    finally:
        D.cleanup(ctx)
