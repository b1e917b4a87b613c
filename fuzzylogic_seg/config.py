"""The run configuration: a YAML/JSON file that mirrors the flags of `fuzzyseg run`.

Precedence: defaults < ``--config FILE`` < explicit flags < ``--set a.b=v``.
The effective configuration is written to ``OUT/config.yaml``, so
``fuzzyseg run --config OUT/config.yaml`` repeats a run exactly.

Sections: ``sam`` (model), ``finetune`` (passed to the logic fine-tuner),
``pseudo`` (pseudo-label methods and options), ``student`` (see
:class:`fuzzylogic_seg.student.StudentConfig`), ``students`` (which students
to train, see :data:`VARIANTS`), ``report``.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from .errors import ConfigError
from .io import atomic_path
from .student import StudentConfig

DATASETS = ("voc", "refuge")
WEAK_KINDS = ("boxes", "scribbles", "points", "tags")
PSEUDO_METHODS = ("weak-mask", "zero-shot", "logic")
SAM_TYPES = ("embedded", "vit_b", "vit_l", "vit_h")

# A student variant: which labels it learns from, and whether the student rule file is applied.
#   <method>          pseudo-labels of that method (weak-mask, zero-shot, logic)
#   <method>+rules    the same labels plus the student's own rule loss
#   gt                ground-truth masks: the full-supervision ceiling
VARIANTS = tuple(PSEUDO_METHODS) + tuple(f"{m}+rules" for m in PSEUDO_METHODS) + ("gt", "gt+rules")

DEFAULTS: Dict[str, Any] = {
    "dataset": None,
    "root": None,
    # VOC layout only: the class list (names, a comma list or a class file; None: the
    # VOC2012 folder's labelmap.txt if there is one, else the 21 Pascal VOC classes)
    "classes": None,
    "weak": "boxes",
    "weak_dir": None,    # a weak-label folder to use instead of writing OUT/weak/train
    "weak_seed": 0,      # seed of the weak-label simulation (fixed across run seeds)
    "out": None,
    "seed": 0,
    "device": "auto",
    "amp": True,
    "deterministic": True,
    "splits": {"train": "train", "val": "val"},
    "max_images": {"train": None, "val": None},  # first N images of each split (quick runs)
    # type None: the checkpoint's own (told from its weights), or embedded without one
    "sam": {"type": None, "checkpoint": None},
    # options of the logic fine-tuner (fuzzylogic_seg.finetune.LogicFineTuner; rules, epochs,
    # lr, batch_size, train, keep_threshold, ...); lr as `fuzzyseg pseudo-label` uses it
    "finetune": {"epochs": 10, "lr": 3e-4},
    "pseudo": {"methods": list(PSEUDO_METHODS)},
    "student": StudentConfig().to_dict(),
    "students": ["logic", "zero-shot", "gt"],
    "main_student": "logic",
    "report": {"overlays": 4},
}


# Sections whose keys are options of another module, passed through unchecked here.
FREE_FORM = ("finetune", "pseudo", "student.model_kwargs")


def _merge(base: Dict[str, Any], over: Dict[str, Any], where: str = "") -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        key = f"{where}.{k}" if where else k
        if k not in out and where not in FREE_FORM:
            raise ConfigError(f"unknown config key {key}; known here: {', '.join(sorted(out))}")
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v, key)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _yaml_load(text: str) -> Any:
    """``yaml.safe_load`` that also reads ``3e-4`` as a float (YAML 1.1, which
    PyYAML follows, needs ``3.0e-4``; a learning rate written the usual way would
    otherwise arrive as the string "3e-4")."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))
    return yaml.load(text, Loader=Loader)


def load_file(path) -> Dict[str, Any]:
    """A YAML or JSON config file -> dict (JSON is YAML, so one reader does both)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = _yaml_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{at}: not valid YAML/JSON ({getattr(exc, 'problem', exc)})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of options, got {type(data).__name__}")
    return data


def parse_set(items: Iterable[str]) -> Dict[str, Any]:
    """``["student.lr=0.01", "students=[logic,gt]"]`` -> nested dict (values parsed as YAML)."""
    import yaml

    out: Dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. student.epochs=10")
        key, raw = item.split("=", 1)
        try:
            value = _yaml_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: cannot parse the value ({exc})") from exc
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def build(file: Optional[str] = None, flags: Optional[Dict[str, Any]] = None,
          sets: Optional[Iterable[str]] = None, defaults: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Defaults, then the file, then the flags given (None = not given), then --set."""
    cfg = copy.deepcopy(defaults or DEFAULTS)
    if file:
        cfg = _merge(cfg, load_file(file))
    if flags:
        cfg = _merge(cfg, {k: v for k, v in flags.items() if v is not None})
    if sets:
        cfg = _merge(cfg, parse_set(sets))
    return validate(cfg)


def validate(cfg: Dict[str, Any]) -> Dict[str, Any]:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    need(cfg.get("dataset") in DATASETS, f"dataset must be one of {', '.join(DATASETS)} (--dataset), "
                                         f"got {cfg.get('dataset')!r}")
    need(bool(cfg.get("root")), "no data set root: give --root (or `root:` in the config file)")
    need(bool(cfg.get("out")), "no output folder: give --out (or `out:` in the config file)")
    need(cfg.get("weak") in WEAK_KINDS, f"weak must be one of {', '.join(WEAK_KINDS)}, got {cfg.get('weak')!r}")
    need(not (cfg["dataset"] == "refuge" and cfg["weak"] == "tags"),
         "weak tags need a multi-class data set (voc): every REFUGE image holds a disc and a "
         "cup, so its tags say nothing; use --weak boxes, scribbles or points")
    classes = cfg.get("classes")
    if classes is not None:
        from .data.classes import parse_classes

        need(cfg["dataset"] == "voc", "classes (--classes) are for data sets in Pascal VOC layout "
                                      "(--dataset voc); REFUGE's are fixed")
        parse_classes(classes)  # a bad list or file stops here (ConfigError naming it)
        if isinstance(classes, str) and Path(classes).expanduser().is_file():
            cfg["classes"] = str(Path(classes).expanduser().resolve())
    _resolve_sam_type(cfg["sam"])
    need(cfg["sam"].get("type") in SAM_TYPES, f"sam.type must be one of {', '.join(SAM_TYPES)}")
    need(cfg["sam"].get("type") == "embedded" or bool(cfg["sam"].get("checkpoint")),
         f"sam.type {cfg['sam'].get('type')} needs a checkpoint (--sam-checkpoint FILE)")
    methods = cfg["pseudo"].get("methods") or []
    bad = [m for m in methods if m not in PSEUDO_METHODS]
    need(not bad, f"unknown pseudo-label method(s) {bad}; known: {', '.join(PSEUDO_METHODS)}")
    ckpt = cfg["sam"].get("checkpoint")
    # (found now, not after the weak-label stages: every SAM stage reads it)
    need(not ckpt or all(m == "weak-mask" for m in methods)
         or Path(str(ckpt)).expanduser().is_file(),
         f"{ckpt}: no such SAM checkpoint (--sam-checkpoint / sam.checkpoint)")
    students = cfg.get("students") or []
    need(isinstance(students, list), "students must be a list of variants")
    bad = [s for s in students if s not in VARIANTS]
    need(not bad, f"unknown student variant(s) {bad}; known: {', '.join(VARIANTS)}")
    for s in students:
        base = s.split("+")[0]
        need(base == "gt" or base in methods,
             f"student {s!r} learns from {base} pseudo-labels but pseudo.methods is {methods}")
        need(not s.endswith("+rules") or bool(cfg["student"].get("logic_rules")),
             f"student {s!r} needs a student rule file (student.logic_rules / --student-rules)")
    main = cfg.get("main_student")
    # (no students: a run of the weak labels and pseudo-labels only)
    need(not students or main in students, f"main_student {main!r} is not among the students {students}")
    student = StudentConfig.from_dict(cfg["student"])  # raises on bad student options
    if students:
        from .student import check_model

        check_model(student)  # arch, encoder and model_kwargs, before the first stage
    _need_numbers("student", cfg["student"], StudentConfig().to_dict())
    _need_known_options(cfg)
    _need_numbers("finetune", cfg["finetune"], NUMERIC_FINETUNE)
    if cfg["finetune"].get("compile_loss") is not None:
        from .finetune import compile_options

        # ("auto" is told at run time: the fine-tuner checks cuda-graphs again there)
        device = cfg.get("device")
        compile_options(cfg["finetune"]["compile_loss"], None if device in (None, "auto") else device)
    need(isinstance(cfg.get("seed"), int), f"seed must be an integer, got {cfg.get('seed')!r}")
    # Paths absolute, so that `fuzzyseg run --config OUT/config.yaml` repeats the run
    # from any folder (rule files given by a name the package resolves stay names).
    for k in ("root", "out"):
        cfg[k] = str(Path(cfg[k]).expanduser().resolve())
    if cfg.get("weak_dir"):
        cfg["weak_dir"] = str(Path(cfg["weak_dir"]).expanduser().resolve())
    if cfg["sam"].get("checkpoint"):
        cfg["sam"]["checkpoint"] = _existing_abs(cfg["sam"]["checkpoint"])
    if cfg["finetune"].get("rules"):
        rules = cfg["finetune"]["rules"]
        cfg["finetune"]["rules"] = ([_existing_abs(r) for r in rules] if isinstance(rules, list)
                                    else _existing_abs(rules))
    if cfg["student"].get("logic_rules"):
        cfg["student"]["logic_rules"] = _existing_abs(cfg["student"]["logic_rules"])
    return cfg


# finetune options that must be numbers (a string such as "1e-4" from an old YAML
# reader fails only deep inside the optimizer, after the earlier stages ran)
NUMERIC_FINETUNE = {"epochs": 0, "lr": 0.0, "batch_size": 0, "weight_decay": 0.0,
                    "keep_threshold": 0.0, "roi_margin": 0.0, "lora_rank": 0, "loss_grid": 0}


# What the run itself passes to the fine-tuner (not options of the finetune section).
_SET_BY_RUN = ("self", "sam", "dataset_kind", "weak", "seed", "device", "cache_dir", "progress")


def _need_known_options(cfg: Dict[str, Any]) -> None:
    """The finetune and pseudo sections pass their keys on to the fine-tuner and the
    pseudo-labeller: a misspelt key is refused here, before the first stage, not as
    a TypeError after the SAM stages."""
    import inspect

    from .finetune import LogicFineTuner
    from .tags import TAG_OPTIONS

    tuner = set(inspect.signature(LogicFineTuner.__init__).parameters) - set(_SET_BY_RUN)
    known = {"finetune": tuner | {"rules", "epochs"} | (set(TAG_OPTIONS) if cfg["weak"] == "tags" else set()),
             "pseudo": {"methods", "threshold"}}
    for section, names in known.items():
        for k in cfg[section]:
            if k not in names:
                near = difflib.get_close_matches(k, sorted(names), n=1)
                tags = (f" ({', '.join(TAG_OPTIONS)} only with weak tags)"
                        if section == "finetune" and k in TAG_OPTIONS else "")
                raise ConfigError(f"unknown config key {section}.{k}{tags}"
                                  + (f"; did you mean {section}.{near[0]}?" if near else ".")
                                  + f" Known here: {', '.join(sorted(names))}")


def _need_numbers(section: str, values: Dict[str, Any], kinds: Dict[str, Any]) -> None:
    for k, default in kinds.items():
        v = values.get(k)
        if v is None or isinstance(default, bool) or not isinstance(default, (int, float)):
            continue
        ok = isinstance(v, int) if isinstance(default, int) else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok:
            want = "an integer" if isinstance(default, int) else "a number"
            raise ConfigError(f"{section}.{k} must be {want}, got {v!r}")


def _resolve_sam_type(sam: Dict[str, Any]) -> None:
    """sam.type from the checkpoint when not given; a given type that contradicts the
    checkpoint is refused now, not after the first stages have run."""
    from .errors import CheckpointError
    from .sam.build import detect_sam_type, resolve_sam_type

    ckpt = sam.get("checkpoint")
    if sam.get("type") is None:
        sam["type"] = resolve_sam_type(None, ckpt or None)
        return
    if ckpt and sam["type"] in SAM_TYPES and Path(str(ckpt)).expanduser().is_file():
        try:
            held = detect_sam_type(ckpt)
        except CheckpointError:
            return  # unrecognised: the loader names what is wrong with it
        if held != sam["type"]:
            raise ConfigError(f"sam.type {sam['type']} (--sam-type) but {ckpt} holds the "
                              f"{held} model: pass --sam-type {held}, or leave it out")


def _existing_abs(path: Any) -> Any:
    p = Path(str(path)).expanduser()
    return str(p.resolve()) if p.exists() else path


def student_config(cfg: Dict[str, Any], variant: str) -> StudentConfig:
    """The StudentConfig of one variant: logic_rules only for ``+rules`` variants."""
    d = dict(cfg["student"])
    if not variant.endswith("+rules"):
        d["logic_rules"] = None
    return StudentConfig.from_dict(d)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (what decides a stage's output)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write(cfg: Dict[str, Any], path) -> Path:
    """The effective configuration as YAML (atomic), with a header saying how to repeat it."""
    import yaml

    text = ("# Effective configuration of this run. Repeat it with:\n"
            f"#   fuzzyseg run --config {path}\n") + yaml.safe_dump(cfg, sort_keys=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def variant_labels(variant: str) -> str:
    return variant.split("+")[0]


def list_variants(cfg: Dict[str, Any]) -> List[str]:
    return list(cfg.get("students") or [])
