"""`fuzzyseg run` end to end (small sizes) on a practitioner's own classes in VOC
layout: pseudo-labels and students of those classes, the class list recorded
(resuming with another is refused), `fuzzyseg predict` naming the classes; and a
default VOC run's fingerprints and student file as they were."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from custom_voc import CLASSES, COLOURS, as_boxes_export, write_custom_voc
from PIL import Image

from fuzzylogic_seg import config as C
from fuzzylogic_seg.cli import main
from fuzzylogic_seg.errors import ConfigError, DatasetError
from fuzzylogic_seg.io import load_json, load_torch
from fuzzylogic_seg.pipeline import Pipeline, run

torch.set_num_threads(1)
pytestmark = pytest.mark.slow

STUDENT = {"arch": "unet", "encoder": "tu-mobilenetv3_small_050", "encoder_weights": None,
           "model_kwargs": {"decoder_channels": [16, 16, 8, 8, 8]}, "size": 64, "epochs": 2,
           "batch_size": 2}


def tiny_config(root: Path, out: Path, **over):
    cfg = {"dataset": "voc", "root": str(root), "out": str(out), "weak": "boxes", "seed": 0,
           "device": "cpu", "finetune": {"epochs": 1}, "students": ["logic", "gt"],
           "main_student": "logic", "student": dict(STUDENT), "report": {"overlays": 2}}
    cfg.update(over)
    return C.build(None, cfg)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom")
    write_custom_voc(root / "labelmap", labelmap=True)
    write_custom_voc(root / "plain", labelmap=False)
    return root


@pytest.fixture(scope="module")
def first(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    metrics = run(tiny_config(data / "labelmap", out), progress=False)
    return out, metrics


def test_a_run_on_labelmap_classes_writes_labels_and_students_of_them(first, data):
    out, metrics = first
    assert metrics["classes"] == list(CLASSES)
    assert "classes" in (out / "run.log").read_text().split("labelmap.txt")[0].splitlines()[-1]
    ids = sorted(p.stem for p in (data / "labelmap/VOCdevkit/VOC2012/JPEGImages").glob("*.jpg"))
    for method in ("weak-mask", "zero-shot", "logic"):
        summary = load_json(out / "pseudo_labels" / method / "summary.json")
        assert summary["classes"] == list(CLASSES)
        quality = load_json(out / "pseudo_labels" / f"{method}.quality.json")
        assert set(quality["per_class_iou"]) == set(CLASSES)
        img = Image.open(out / "pseudo_labels" / method / f"{ids[0]}.png")
        assert img.mode == "P" and img.getpalette()[3:6] == list(COLOURS["mug"])
        assert set(np.unique(np.array(img)).tolist()) <= {0, 1, 2, 255}
    assert metrics["pseudo_labels"]["weak-mask"]["miou"] > 0.6  # boxes around a box and an ellipse
    state = load_torch(out / "students" / "logic" / "model.pt")
    assert state["classes"] == 3 and state["class_names"] == list(CLASSES)
    assert state["class_colors"][1] == list(COLOURS["mug"])
    val = load_json(out / "students" / "logic" / "metrics.json")
    assert set(val["per_class_iou"]) == set(CLASSES)
    assert "classes mug, spoon" in (out / "report" / "report.md").read_text()
    assert (out / "report" / "overlays.png").is_file()


def test_predict_names_the_custom_classes(first, data, tmp_path, capsys):
    out, _ = first
    images = tmp_path / "new"
    images.mkdir()
    src = next((data / "labelmap/VOCdevkit/VOC2012/JPEGImages").glob("*.jpg"))
    (images / src.name).write_bytes(src.read_bytes())
    assert main(["predict", "--model", str(out), "--images", str(images), "--out", str(tmp_path / "p"),
                 "--quiet", "--device", "cpu"]) == 0
    assert "0: background, 1: mug, 2: spoon" in capsys.readouterr().out
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["classes"] == list(CLASSES)
    lab = Image.open(tmp_path / "p" / f"{src.stem}.png")
    assert lab.getpalette()[6:9] == list(COLOURS["spoon"])
    assert set(np.unique(np.array(lab)).tolist()) <= {0, 1, 2}


def test_a_rerun_reuses_everything_and_another_class_list_is_refused(first, data):
    out, metrics = first
    done = []
    again = run(tiny_config(data / "labelmap", out), hooks={"stage_done": done.append}, progress=False)
    assert again["students"] == metrics["students"]
    cfg = tiny_config(data / "labelmap", out, classes="spoon,mug")
    with pytest.raises(ConfigError, match=r"holds a run on the classes background, mug, spoon, but this "
                                          r"run's are background, spoon, mug \(--classes\)"), \
            pytest.warns(UserWarning, match="labelmap.txt lists background, mug, spoon"):
        run(cfg, progress=False)
    # the folder is untouched: its config still repeats the run
    assert C.build(str(out / "config.yaml"))["classes"] is None


def test_a_cli_run_with_classes_records_them(data, tmp_path, capsys):
    out = tmp_path / "run"
    sets = [f"student.{k}={json.dumps(v)}" for k, v in STUDENT.items()]
    argv = ["run", "--dataset", "voc", "--root", str(data / "plain"), "--classes", "mug,spoon",
            "--out", str(out), "--methods", "weak-mask", "--students", "weak-mask",
            "--main-student", "weak-mask", "--device", "cpu", "--quiet", "--set", "report.overlays=1"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    assert C.load_file(out / "config.yaml")["classes"] == "mug,spoon"
    assert load_json(out / "metrics.json")["classes"] == list(CLASSES)
    assert load_torch(out / "students" / "weak-mask" / "model.pt")["class_names"] == list(CLASSES)
    assert "class_colors" not in load_torch(out / "students" / "weak-mask" / "model.pt")
    # without --classes the same folder is refused (the data set has no labelmap: VOC's classes)
    capsys.readouterr()
    assert main([a for a in argv if a not in ("--classes", "mug,spoon")]) == 1
    assert "holds a run on the classes background, mug, spoon" in capsys.readouterr().err


def test_the_student_rule_file_and_tags_work_on_custom_classes(data, tmp_path):
    # the shipped student and tag rules are class-generic: a 3-class student takes them
    out = tmp_path / "rules"
    student = {**STUDENT, "logic_rules": "student_voc.rules"}
    metrics = run(tiny_config(data / "labelmap", out, students=["logic+rules"], main_student="logic+rules",
                              student=student), progress=False)
    assert 0 <= metrics["students"]["logic+rules"]["miou"] <= 1
    assert load_torch(out / "students" / "logic+rules" / "model.pt")["classes"] == 3
    tags = run(tiny_config(data / "labelmap", tmp_path / "tags", weak="tags", students=[],
                           pseudo={"methods": ["logic"]}, finetune={"epochs": 2}), progress=False)
    assert 0 <= tags["pseudo_labels"]["logic"]["miou"] <= 1
    labels = np.array(Image.open(next((tmp_path / "tags" / "pseudo_labels" / "logic").glob("*.png"))))
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 255}


def test_classes_are_refused_for_refuge_and_checked_before_any_stage(tmp_path):
    with pytest.raises(ConfigError, match="Pascal VOC layout"):
        C.build(None, {"dataset": "refuge", "root": str(tmp_path), "out": str(tmp_path / "o"),
                       "classes": "a,b"})
    with pytest.raises(ConfigError, match="duplicate class name 'a'"):
        C.build(None, {"dataset": "voc", "root": str(tmp_path), "out": str(tmp_path / "o"),
                       "classes": ["a", "a"]})


def test_a_labelmaps_colours_count_in_the_fingerprint_even_with_voc_names(tmp_path):
    from fuzzylogic_seg.data.synth_voc import generate_voc
    from fuzzylogic_seg.io import VOC_CLASSES, voc_palette

    voc = generate_voc(tmp_path / "voc", seed=1, n_train=2, n_val=1, size=(48, 64), progress=False)
    pal = voc_palette()
    lines = [f"{n}:{pal[3 * i]},{pal[3 * i + 1]},{pal[3 * i + 2]}::" for i, n in enumerate(VOC_CLASSES)]
    (voc / "labelmap.txt").write_text("\n".join(lines) + "\n")
    p = Pipeline(tiny_config(tmp_path / "voc", tmp_path / "out"), progress=False)
    assert p._classes_fp() and not p.custom_classes  # (VOC's names: outputs as before)
    before = p.fp_weak()
    lines[1] = "aeroplane:1,2,3::"  # colour masks would now read other pixels as aeroplane
    (voc / "labelmap.txt").write_text("\n".join(lines) + "\n")
    assert Pipeline(tiny_config(tmp_path / "voc", tmp_path / "out"), progress=False).fp_weak() != before


def test_default_voc_fingerprints_and_student_files_are_unchanged(tmp_path):
    """The VOC classes add nothing to a fingerprint or a student file (runs made before
    the class option resume as they were)."""
    from fuzzylogic_seg.data.synth_voc import generate_voc
    from fuzzylogic_seg.student import StudentConfig, build_model, save_student

    generate_voc(tmp_path / "voc", seed=1, n_train=2, n_val=1, size=(48, 64), progress=False)
    cfg = tiny_config(tmp_path / "voc", tmp_path / "out")
    p = Pipeline(cfg, progress=False)
    assert p._classes_fp() == [] and not p.custom_classes
    c = p.cfg
    assert p.fp_weak() == C.fingerprint("weak", "voc", c["root"], c["splits"]["train"], p.ids("train"),
                                        c["weak"], 0, None, None)
    scfg = StudentConfig.from_dict(STUDENT)
    save_student(tmp_path / "m.pt", build_model(scfg, 21, weights=False), scfg, "voc")
    state = load_torch(tmp_path / "m.pt")
    assert state["classes"] == 21 and "class_names" not in state


# ------------------------------------------- an annotation tool's export, as it is
@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """Boxes for every image, masks for the validation images only, the split lists in
    ImageSets/Main/ (CVAT's "PASCAL VOC 1.1" plus the masks of its val subset), colour
    masks in the labelmap's colours."""
    root = tmp_path_factory.mktemp("export")
    as_boxes_export(write_custom_voc(root, labelmap=True, rgb_masks=True))
    return root


def test_a_training_split_without_masks_runs_on_its_boxes(export, tmp_path, monkeypatch):
    from fuzzylogic_seg import report

    drawn = {}
    plot = report.plot_overlays
    monkeypatch.setattr(report, "plot_overlays", lambda *a, **k: drawn.update(palette=a[4]) or plot(*a, **k))
    out = tmp_path / "run"
    cfg = tiny_config(export, out, students=["logic"])
    metrics = run(cfg, progress=False)
    assert drawn["palette"][3:9] == list(COLOURS["mug"]) + list(COLOURS["spoon"])  # the labelmap's
    assert metrics["pseudo_labels"] == {} and set(metrics["students"]) == {"logic"}
    assert metrics["students"]["logic"]["miou"] >= 0
    assert not list((out / "pseudo_labels").glob("*.quality.json"))
    assert len(list((out / "pseudo_labels" / "logic").glob("*.png"))) == 4
    assert "4 of 4 training images have no mask: the pseudo-labels are not scored" \
        in (out / "run.log").read_text()
    report = (out / "report" / "report.md").read_text()
    assert "Pseudo-labels are not scored (the training split has no masks)" in report
    assert "share of the full-supervision ceiling" not in report


def test_masks_added_after_a_run_score_its_pseudo_labels_without_making_them_again(export, tmp_path):
    root, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(export, root)
    assert run(tiny_config(root, out, students=["logic"]), progress=False)["pseudo_labels"] == {}
    full = write_custom_voc(tmp_path / "full", labelmap=True, rgb_masks=True)  # (the same drawing)
    voc = root / "VOCdevkit" / "VOC2012"
    train = (voc / "ImageSets" / "Main" / "train.txt").read_text().split()
    for i in train:
        shutil.copy(full / "SegmentationClass" / f"{i}.png", voc / "SegmentationClass" / f"{i}.png")
    label = out / "pseudo_labels" / "logic" / f"{train[0]}.png"
    made = label.stat().st_mtime_ns
    metrics = run(tiny_config(root, out, students=["logic"]), progress=False)
    assert 0 <= metrics["pseudo_labels"]["logic"]["miou"] <= 1
    assert label.stat().st_mtime_ns == made  # scored, not made again
    again = run(tiny_config(root, out, students=["logic"]), progress=False)
    assert again["pseudo_labels"] == metrics["pseudo_labels"]
    assert (out / "run.log").read_text().count("masks added since they were made") == 3  # once a method


def test_pseudo_labels_are_scored_on_the_training_images_that_have_a_mask(tmp_path):
    voc = write_custom_voc(tmp_path / "data", labelmap=True)
    train = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    for i in train[:2]:
        (voc / "SegmentationClass" / f"{i}.png").unlink()
    out = tmp_path / "run"
    metrics = run(tiny_config(tmp_path / "data", out, students=["logic"]), progress=False)
    quality = metrics["pseudo_labels"]["logic"]
    assert quality["scored_images"] == 2 and 0 <= quality["miou"] <= 1
    assert load_json(out / "pseudo_labels" / "logic.quality.json")["images"] == 2
    assert "the pseudo-labels are scored on the other 2" in (out / "run.log").read_text()
    assert "scored on the 2 of 4 training images that have a mask" in (out / "report" / "report.md").read_text()


def test_without_training_masks_the_ceiling_is_refused_before_the_first_stage(export, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"4 of 4 images of the training split 'train' have no mask "
                                          r".*but the student\(s\) gt train on the training masks .*: "
                                          r"leave them out, --students logic$"):
        run(tiny_config(export, out), progress=False)
    with pytest.raises(ConfigError, match="weak labels of kind 'scribbles' are simulated from the "
                                          "masks: use the XML's --weak boxes or --weak tags"):
        run(tiny_config(export, out, weak="scribbles", students=["logic"]), progress=False)
    assert not (out / "stages").exists()


def test_validation_masks_are_checked_before_the_first_stage(export, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(export, root)
    voc = root / "VOCdevkit" / "VOC2012"
    val = (voc / "ImageSets" / "Main" / "val.txt").read_text().split()
    mask = voc / "SegmentationClass" / f"{val[0]}.png"
    arr = np.array(Image.open(mask))
    arr[1, 1] = (255, 0, 255)  # a colour of no class
    Image.fromarray(arr).save(mask)
    out = tmp_path / "run"
    with pytest.raises(DatasetError, match=r"colour\(s\) \(255,0,255\) that no class"):
        run(tiny_config(root, out, students=["logic"]), progress=False)
    assert not (out / "stages").exists()
    mask.unlink()
    with pytest.raises(ConfigError, match=r"1 of 2 images of the validation split 'val' have no mask "
                                          r".*list only images with masks there"):
        run(tiny_config(root, out, students=["logic"]), progress=False)
