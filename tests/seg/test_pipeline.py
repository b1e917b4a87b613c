"""`fuzzyseg run` end to end (small sizes), REFUGE-like data:

- an uninterrupted run writes every output of PIPELINE.md;
- a second run on a copy whose TRAINING masks are scrambled, reading the first
  run's weak labels, is interrupted inside a student epoch and resumed: its
  pseudo-labels and the logic student are bit-identical to the first run's
  (training never saw a mask; the resume repeats the interrupted epoch
  exactly), its validation metrics equal, while the ground-truth student
  differs (the scrambling did take effect);
- rerunning a finished run reuses every stage.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fuzzylogic_seg import config as C
from fuzzylogic_seg.io import load_json, load_torch
from fuzzylogic_seg.pipeline import run

torch.set_num_threads(1)
pytestmark = pytest.mark.slow


def tiny_config(root: Path, out: Path, **over):
    cfg = {
        "dataset": "refuge", "root": str(root), "out": str(out), "weak": "boxes", "seed": 0, "device": "cpu",
        "finetune": {"epochs": 1}, "students": ["logic", "gt"], "main_student": "logic",
        "student": {"arch": "unet", "encoder": "tu-mobilenetv3_small_050", "encoder_weights": None,
                    "model_kwargs": {"decoder_channels": [16, 16, 8, 8, 8]}, "size": 64, "epochs": 2,
                    "batch_size": 2},
        "report": {"overlays": 2},
    }
    cfg.update(over)
    return C.build(None, cfg)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from fuzzylogic_seg.data.synth_refuge import generate_refuge

    root = tmp_path_factory.mktemp("refuge")
    generate_refuge(root, n_train=4, n_val=2, size=96, progress=False)
    return root


@pytest.fixture(scope="module")
def first(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    metrics = run(tiny_config(data, out), progress=False)
    return out, metrics


def scrambled_copy(root: Path, dest: Path) -> Path:
    """The data set with every training mask's pixels permuted (validation untouched)."""
    shutil.copytree(root, dest)
    rng = np.random.default_rng(0)
    for mask in sorted((dest / "train" / "mask").iterdir()):
        arr = np.array(Image.open(mask))
        flat = arr.reshape(-1).copy()
        rng.shuffle(flat)
        Image.fromarray(flat.reshape(arr.shape)).save(mask)
    return dest


def test_run_writes_every_output(first, data):
    out, metrics = first
    for method in ("weak-mask", "zero-shot", "logic"):
        pngs = sorted((out / "pseudo_labels" / method).glob("*.png"))
        assert len(pngs) == 4
        with Image.open(pngs[0]) as im:
            assert im.mode == "L" and set(np.unique(np.array(im))) <= {0, 128, 255}
    preds = sorted((out / "predictions" / "val").glob("*.png"))
    assert [p.stem for p in preds] == sorted(p.stem for p in (data / "val" / "images").iterdir())
    saved = load_json(out / "metrics.json")
    assert saved["students"]["logic"]["dice_disc"] == metrics["students"]["logic"]["dice_disc"]
    assert set(saved["pseudo_labels"]) == {"weak-mask", "zero-shot", "logic"}
    for m in saved["pseudo_labels"].values():
        assert 0 <= m["dice_disc"] <= 1 and 0 <= m["dice_cup"] <= 1
    assert saved["ceiling"] == saved["students"]["gt"]
    report = out / "report" / "report.md"
    assert "| student (val) on logic fine-tuned SAM |" in report.read_text()
    assert (out / "report" / "overlays.png").is_file() and (out / "report" / "finetune_curves.png").is_file()
    assert (out / "run.log").read_text().count("[student-logic] finished") == 1
    # the written config repeats the run: same effective config, every stage reused
    again = C.build(str(out / "config.yaml"))
    assert again == tiny_config(Path(again["root"]), out)


def test_scrambled_masks_interrupted_and_resumed_run_matches(first, data, tmp_path):
    out1, m1 = first
    root2 = scrambled_copy(data, tmp_path / "scrambled")
    out2 = tmp_path / "run2"
    cfg = tiny_config(root2, out2, weak_dir=str(out1 / "weak" / "train"))

    class Interrupt(Exception):
        pass

    def crash(variant, epoch, rec):
        if variant == "logic" and epoch == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(cfg, hooks={"student_epoch": crash}, progress=False)
    assert (out2 / "students" / "logic" / "checkpoint.pt").is_file()
    assert not (out2 / "stages" / "student-logic.json").exists()
    m2 = run(cfg, progress=False)
    log = (out2 / "run.log").read_text()
    assert "[pseudo-logic] done before" in log and "resuming from" in log

    for method in ("weak-mask", "zero-shot", "logic"):
        for p in sorted((out1 / "pseudo_labels" / method).glob("*.png")):
            assert p.read_bytes() == (out2 / "pseudo_labels" / method / p.name).read_bytes(), (method, p.name)
    a = load_torch(out1 / "students" / "logic" / "model.pt")["state_dict"]
    b = load_torch(out2 / "students" / "logic" / "model.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert m2["students"]["logic"] == m1["students"]["logic"]
    ga = load_torch(out1 / "students" / "gt" / "model.pt")["state_dict"]
    gb = load_torch(out2 / "students" / "gt" / "model.pt")["state_dict"]
    assert not all(torch.equal(ga[k], gb[k]) for k in ga)


def test_finished_run_is_reused_and_changes_rerun_only_their_stages(first, data, tmp_path):
    out1, m1 = first
    out = tmp_path / "copy"
    shutil.copytree(out1, out)
    # stage fingerprints hold the output folder's files, not its name: a copied run is complete
    cfg = tiny_config(data, out)
    m = run(cfg, progress=False)
    log = (out / "run.log").read_text().split("fuzzyseg run:")[-1]
    assert "running" not in log and m["students"] == m1["students"]
    lost = sorted((out / "pseudo_labels" / "weak-mask").glob("*.png"))[0]
    lost.unlink()  # an output deleted by hand: its stage runs again, the rest is reused
    run(cfg, progress=False)
    log = (out / "run.log").read_text().split("fuzzyseg run:")[-1]
    assert f"[pseudo-weak-mask] output {lost} is missing" in log and lost.is_file()
    assert "[pseudo-logic] done before" in log and "[student-logic] done before" in log
    cfg2 = tiny_config(data, out, students=["logic", "gt"], student={**cfg["student"], "epochs": 1})
    run(cfg2, progress=False)
    log = (out / "run.log").read_text().split("fuzzyseg run:")[-1]
    assert "[student-logic] configuration changed" in log and "[pseudo-logic] done before" in log


def test_student_with_its_own_rules_trains_in_a_finished_run(first, data, tmp_path):
    # A "+rules" student added to a finished run: only its stage runs; the rule
    # file is read once and handed to training (Pipeline.run_student).
    from fuzzylogic_seg.rulefiles import rules_dir

    out1, m1 = first
    out = tmp_path / "copy"
    shutil.copytree(out1, out)
    base = tiny_config(data, out)
    cfg = tiny_config(data, out, students=["logic", "logic+rules"],
                      student={**base["student"],
                               "logic_rules": str(rules_dir() / "student_refuge.rules")})
    m = run(cfg, progress=False)
    log = (out / "run.log").read_text().split("fuzzyseg run:")[-1]
    assert "[pseudo-logic] done before" in log and "[student-logic] done before" in log
    assert m["students"]["logic"] == m1["students"]["logic"]
    assert set(m["students"]["logic+rules"]) >= {"dice_disc", "dice_cup"}
    assert (out / "students" / "logic+rules" / "model.pt").is_file()
