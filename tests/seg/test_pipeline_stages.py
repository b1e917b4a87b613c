"""Pipeline bookkeeping without training: stage markers, fingerprints of what a
stage read, the SAM each pseudo-label method gets, file modes."""
from __future__ import annotations

import os

import pytest
import torch

from fuzzylogic_seg import config as C
from fuzzylogic_seg.io import save_json
from fuzzylogic_seg.pipeline import Pipeline


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from fuzzylogic_seg.data.synth_refuge import generate_refuge

    root = tmp_path_factory.mktemp("refuge")
    generate_refuge(root, n_train=2, n_val=1, size=64, progress=False)
    return root


def pipeline(data, out, **over) -> Pipeline:
    cfg = C.build(None, {"dataset": "refuge", "root": str(data), "out": str(out), "device": "cpu",
                         "students": ["logic"], "main_student": "logic", **over})
    return Pipeline(cfg, progress=False)


def test_an_interrupted_rerun_does_not_leave_the_old_marker_behind(data, tmp_path):
    p = pipeline(data, tmp_path)
    out = tmp_path / "thing.txt"

    def write(text):
        def fn():
            out.write_text(text)
            return {"text": text}
        return fn

    assert p.stage("thing", "fp1", write("old"), [out]) == {"text": "old"}

    def interrupted():
        out.write_text("half new")  # the stage rewrites its outputs in place...
        raise KeyboardInterrupt  # ... and is stopped

    with pytest.raises(KeyboardInterrupt):
        p.stage("thing", "fp2", interrupted, [out])
    # the first run's marker must not vouch for the half-rewritten output
    assert not p._marker("thing").exists()
    assert p.stage("thing", "fp1", write("old again"), [out]) == {"text": "old again"}


def test_a_given_weak_folder_rewritten_in_place_changes_the_fingerprint(data, tmp_path):
    from fuzzylogic_seg.commands.pseudo import ensure_weak_dir

    weak = ensure_weak_dir("refuge", data, "train", "boxes", tmp_path / "weak", 0)
    fp1 = pipeline(data, tmp_path / "a", weak_dir=str(weak)).fp_weak()
    assert pipeline(data, tmp_path / "a", weak_dir=str(weak)).fp_weak() == fp1
    label = sorted((weak / "labels").glob("*.json"))[0]
    label.write_text(label.read_text().replace("[", "[ ", 1))  # any edit of the contents
    assert pipeline(data, tmp_path / "a", weak_dir=str(weak)).fp_weak() != fp1


def test_editing_an_included_rule_file_changes_the_rules_fingerprint(data, tmp_path):
    (tmp_path / "common.rules").write_text(
        "sort region\nsort row\nsort col\npredicate mask(region, row, col) logits\n"
        "rule some [weight = 1]: forall a: exists r, c: mask(a, r, c)\n")
    main = tmp_path / "main.rules"
    main.write_text('include "common.rules"\n')
    p = pipeline(data, tmp_path / "o")
    before = p._rules_fp([main])
    (tmp_path / "common.rules").write_text(
        (tmp_path / "common.rules").read_text().replace("weight = 1", "weight = 2"))
    assert p._rules_fp([main]) != before


def test_the_logic_stage_fine_tunes_a_copy_not_the_sam_zero_shot_gets(data, tmp_path,
                                                                      monkeypatch):
    import fuzzylogic_seg.pseudo as pseudo_mod

    p = pipeline(data, tmp_path, sam={"type": "embedded", "checkpoint": None})
    frozen = {k: v.clone() for k, v in p.sam().state_dict().items()}
    seen = {}

    def fake(method, dataset, sam=None, out_dir=None, **kw):
        seen[method] = sam
        if method == "logic":  # fine-tuning trains the model it is given, in place
            with torch.no_grad():
                for q in sam.parameters():
                    q.add_(1.0)
        out_dir.mkdir(parents=True, exist_ok=True)
        return {"seconds": 0.0, "n_images": 0}

    monkeypatch.setattr(pseudo_mod, "make_pseudo_labels", fake)
    monkeypatch.setattr(Pipeline, "score", lambda self, *a, **k: {})
    p.run_weak()
    p.run_pseudo("logic")
    p.run_pseudo("zero-shot")
    assert seen["zero-shot"] is p.sam() and seen["logic"] is not p.sam()
    assert all(torch.equal(v, frozen[k]) for k, v in seen["zero-shot"].state_dict().items())


def test_outputs_get_the_usual_file_mode_not_mkstemps_private_one(tmp_path):
    mask = os.umask(0o022)
    try:
        path = save_json({"a": 1}, tmp_path / "x.json")
    finally:
        os.umask(mask)
    assert (path.stat().st_mode & 0o777) == 0o644


def test_a_student_batch_larger_than_the_training_set_is_refused_before_any_stage(data, tmp_path):
    from fuzzylogic_seg.errors import ConfigError
    from fuzzylogic_seg.pipeline import run

    cfg = C.build(None, {"dataset": "refuge", "root": str(data), "out": str(tmp_path / "o"),
                         "device": "cpu", "students": ["weak-mask"], "main_student": "weak-mask",
                         "pseudo": {"methods": ["weak-mask"]}})
    assert cfg["student"]["batch_size"] > 2  # the fixture has 2 training images
    with pytest.raises(ConfigError, match="larger than the 2 training images"):
        run(cfg, progress=False)
    assert not (tmp_path / "o" / "stages").exists()


def test_a_given_weak_folder_without_the_chosen_kind_stops_the_weak_stage(data, tmp_path):
    from fuzzylogic_seg.commands.pseudo import ensure_weak_dir
    from fuzzylogic_seg.errors import ConfigError

    weak = ensure_weak_dir("refuge", data, "train", "points", tmp_path / "weak", 0)
    p = pipeline(data, tmp_path / "a", weak_dir=str(weak))  # weak: boxes, the default
    with pytest.raises(ConfigError, match="holds no boxes.*--weak points"):
        p.run_weak()
    assert pipeline(data, tmp_path / "b", weak_dir=str(weak), weak="points").run_weak()["given"]


def test_compile_loss_reaches_the_fine_tuner_and_cuda_graphs_on_a_cpu_stop_the_run_first(
        data, tmp_path, monkeypatch):
    import fuzzylogic_seg.distributed as D
    import fuzzylogic_seg.pseudo as pseudo_mod
    from fuzzylogic_seg.errors import ConfigError

    seen = {}

    def fake(method, dataset, sam=None, out_dir=None, **kw):
        seen[method] = kw.get("tuner_options", {})
        out_dir.mkdir(parents=True, exist_ok=True)
        return {"seconds": 0.0, "n_images": 0}

    monkeypatch.setattr(pseudo_mod, "make_pseudo_labels", fake)
    monkeypatch.setattr(Pipeline, "score", lambda self, *a, **k: {})
    p = pipeline(data, tmp_path / "c", finetune={"compile_loss": "default"})
    eager_fp = pipeline(data, tmp_path / "e").fp_pseudo("logic")
    assert p.fp_pseudo("logic") != eager_fp  # compiled arithmetic: a stage of its own
    p.run_weak()
    p.run_pseudo("logic")
    assert seen["logic"]["compile_loss"] == "default"
    # device "auto" resolved to a CPU: the pipeline refuses cuda-graphs before any stage
    monkeypatch.setattr(D, "resolve_device", lambda name: torch.device("cpu"))
    cfg = C.build(None, {"dataset": "refuge", "root": str(data), "out": str(tmp_path / "g"),
                         "device": "auto", "students": ["logic"], "main_student": "logic",
                         "finetune": {"compile_loss": "cuda-graphs"}})
    with pytest.raises(ConfigError, match="needs a CUDA device, got cpu"):
        Pipeline(cfg, progress=False)
    assert not (tmp_path / "g" / "stages").exists()


def test_a_rule_file_that_cannot_bind_stops_the_run_before_any_stage(data, tmp_path):
    from fuzzylogic_seg.errors import ConfigError
    from fuzzylogic_seg.pipeline import run

    bad = tmp_path / "prior.rules"  # REFUGE boxes, but a prior over scribbles
    bad.write_text("sort region\nsort row\nsort col\npredicate mask(region, row, col) logits\n"
                   "predicate scrib(region, row, col)\n"
                   "rule s: forall a, r, c in scrib(a, r, c): mask(a, r, c)\n")
    cfg = C.build(None, {"dataset": "refuge", "root": str(data), "out": str(tmp_path / "o"),
                         "device": "cpu", "students": ["logic"], "main_student": "logic",
                         "finetune": {"rules": [str(bad)]}, "student": {"batch_size": 2}})
    with pytest.raises(ConfigError, match=r"prior.rules:5:11: predicate 'scrib' cannot be built"):
        run(cfg, progress=False)
    assert not (tmp_path / "o" / "stages").exists()
    # the same for a student rule file over facts the REFUGE student does not have
    student = tmp_path / "student.rules"
    student.write_text("sort pixel[2]\npredicate cup(pixel)\npredicate seg(pixel)\n"
                       "rule r: forall p: cup(p) -> seg(p)\n")
    cfg = C.build(None, {"dataset": "refuge", "root": str(data), "out": str(tmp_path / "p"),
                         "device": "cpu", "students": ["logic+rules"], "main_student": "logic+rules",
                         "student": {"batch_size": 2, "logic_rules": str(student)}})
    with pytest.raises(ConfigError, match=r"student.rules:3:11: predicate 'seg' is not a fact"):
        run(cfg, progress=False)
    assert not (tmp_path / "p" / "stages").exists()
