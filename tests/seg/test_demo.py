"""`fuzzyseg demo` end to end on both embedded data sets (tiny sizes), then
`fuzzyseg predict` with the trained students: same labels as the run's own
validation predictions, in each data set's format."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from fuzzylogic_seg.cli import main
from fuzzylogic_seg.commands import demo

torch.set_num_threads(1)
pytestmark = pytest.mark.slow

TINY = ["--set", "finetune.epochs=1", "--set", "student.epochs=2", "--set", "student.size=64",
        "--set", "student.batch_size=2", "--set", "student.encoder=tu-mobilenetv3_small_050",
        "--set", "report.overlays=1"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    small = copy.deepcopy(demo.DEMO)
    small["voc"]["synth"].update(size=(64, 96), max_objects=2)
    small["refuge"]["synth"].update(size=96)
    mp = pytest.MonkeyPatch()
    mp.setattr(demo, "DEMO", small)
    try:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["demo", "--out", str(out), "--n-train", "4", "--n-val", "2", "--quiet", *TINY])
    finally:
        mp.undo()
    return out, rc, buf.getvalue()


def test_demo_runs_both_data_sets_and_prints_the_tables(demo_run):
    out, rc, text = demo_run
    assert rc == 0
    for kind, col in (("voc", "| | mIoU |"), ("refuge", "| | disc Dice | cup Dice | vCDR MAE |")):
        assert f"## {kind} (4 training images with boxes, 2 validation images)" in text
        assert col in text
        assert f"report: {out / kind / 'report' / 'report.md'}" in text
        assert (out / kind / "metrics.json").is_file()
        assert (out / kind / "config.yaml").is_file()
    assert "| student (val) on logic fine-tuned SAM + student rules |" in text  # REFUGE's rule option


@pytest.mark.parametrize("kind, mode", [("voc", "P"), ("refuge", "L")])
def test_predict_reproduces_the_runs_predictions(demo_run, tmp_path, kind, mode):
    out, _, _ = demo_run
    images = out / "data" / kind / ("val/images" if kind == "refuge" else "VOCdevkit/VOC2012/JPEGImages")
    pred = tmp_path / "pred"
    assert main(["predict", "--model", str(out / kind), "--images", str(images), "--out", str(pred),
                 "--quiet"]) == 0
    run_preds = sorted((out / kind / "predictions" / "val").glob("*.png"))
    assert len(run_preds) == 2
    for p in run_preds:
        with Image.open(p) as a, Image.open(pred / p.name) as b:
            assert b.mode == mode
            assert np.array_equal(np.array(a), np.array(b))


def test_predict_errors_name_the_problem(demo_run, tmp_path, capsys):
    out, _, _ = demo_run
    assert main(["predict", "--model", str(tmp_path / "nothing"), "--images", str(tmp_path),
                 "--out", str(tmp_path / "p")]) == 1
    assert "no such run folder" in capsys.readouterr().err
    assert main(["predict", "--model", str(out / "refuge"), "--images", str(tmp_path),
                 "--out", str(tmp_path / "p")]) == 1
    assert "no images" in capsys.readouterr().err
    assert main(["predict", "--model", str(out / "refuge"), "--variant", "bogus",
                 "--images", str(tmp_path), "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    have = sorted(d.name for d in (out / "refuge" / "students").iterdir() if (d / "model.pt").is_file())
    assert "no trained student 'bogus'" in err and f"(it has: {', '.join(have)};" in err


def test_predict_guards_the_inputs_and_names_a_training_checkpoint(demo_run, tmp_path, capsys):
    import shutil

    out, _, _ = demo_run
    images = tmp_path / "imgs"
    shutil.copytree(out / "data" / "refuge" / "val" / "images", images)
    png = images / "mine.png"
    Image.open(next(images.glob("*.jpg"))).save(png)
    (images / "notes.txt").write_text("x")
    before = png.read_bytes()
    # --out the images folder itself: the PNG input would become its own label
    assert main(["predict", "--model", str(out / "refuge"), "--images", str(images),
                 "--out", str(images), "--quiet"]) == 1
    assert "would overwrite input images (mine.png)" in capsys.readouterr().err
    assert png.read_bytes() == before
    assert main(["predict", "--model", str(out / "refuge"), "--images", str(images),
                 "--out", str(tmp_path / "p"), "--quiet"]) == 0
    assert "skipped 1 file(s)" in capsys.readouterr().out
    ckpt = next((out / "refuge" / "students").glob("*/checkpoint.pt"))  # kept after training
    assert main(["predict", "--model", str(ckpt), "--images", str(images),
                 "--out", str(tmp_path / "q"), "--quiet"]) == 1
    assert "a training checkpoint" in capsys.readouterr().err


def test_a_large_photo_is_labelled_one_class_at_a_time_as_all_at_once(demo_run, monkeypatch):
    import fuzzylogic_seg.student as S

    out, _, _ = demo_run
    student = S.Student.load(out / "voc" / "students" / "logic" / "model.pt")
    img = torch.randint(0, 256, (3, 97, 131), dtype=torch.uint8)
    whole = student.predict(img)
    monkeypatch.setattr(S, "_FULL_LOGITS", 1)  # as if the image were huge
    assert torch.equal(student.predict(img), whole)
    assert torch.equal(whole, student.predict_logits(img).argmax(0))
