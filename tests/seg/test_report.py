"""The report: its tables state the numbers given, its figures are real PNGs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fuzzylogic_seg import report as R
from fuzzylogic_seg.io import voc_palette
from fuzzylogic_seg.weak.types import WeakLabels

METRICS = {
    "dataset": "refuge", "weak": "boxes", "seed": 0, "sam": "embedded", "student_model": "unet/x",
    "pseudo_labels": {"weak-mask": {"dice_disc": 0.8, "dice_cup": 0.7, "vcdr_mae": 0.1},
                      "logic": {"dice_disc": 0.9, "dice_cup": 0.8, "vcdr_mae": 0.05}},
    "students": {"logic": {"dice_disc": 0.9, "dice_cup": 0.72, "vcdr_mae": 0.06},
                 "gt": {"dice_disc": 0.95, "dice_cup": 0.8, "vcdr_mae": 0.04}},
}


def rows_of(table: str):
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]


def test_results_table_numbers_and_share_of_ceiling():
    rows = rows_of(R.results_table(METRICS))
    by = {r[0]: r[1:] for r in rows}
    assert by["pseudo-labels (train): weak label painted as mask"] == ["0.800", "0.700", "0.100"]
    # 0.9 / 0.95 = 94.7% -> 95%; 0.72 / 0.8 = 90%; the MAE (lower is better) gets no share
    assert by["student (val) on logic fine-tuned SAM"] == ["0.900 (95%)", "0.720 (90%)", "0.060"]
    assert by["student (val) on ground truth (ceiling)"] == ["0.950", "0.800", "0.040"]
    # metrics.json sorts its keys: the table keeps baseline first, ceiling last regardless
    shuffled = dict(METRICS, students=dict(sorted(METRICS["students"].items(), reverse=True)),
                    pseudo_labels=dict(sorted(METRICS["pseudo_labels"].items())))
    assert R.results_table(shuffled) == R.results_table(METRICS)
    assert [r[0] for r in rows][-1] == "student (val) on ground truth (ceiling)"


def test_seeds_table_mean_and_sample_std():
    runs = []
    for d in (0.7, 0.8, 0.9):
        m = {"dataset": "voc", "pseudo_labels": {}, "students": {"logic": {"miou": d}, "gt": {"miou": 1.0}}}
        runs.append(m)
    rows = {r[0]: r[1] for r in rows_of(R.seeds_table(runs))}
    assert rows["student (val): logic fine-tuned SAM"] == f"0.800 ± {np.std([0.7, 0.8, 0.9], ddof=1):.3f}"
    assert rows["student (val): ground truth (ceiling)"] == "1.000 ± 0.000"


def test_colourise_uses_the_voc_palette_and_marks_uncertain():
    lab = np.array([[0, 15], [255, 1]])
    rgb, alpha = R.colourise(lab, "voc")
    pal = np.array(voc_palette()).reshape(256, 3)
    assert rgb[0, 1].tolist() == pal[15].tolist() and rgb[1, 1].tolist() == pal[1].tolist()
    assert alpha[0, 0] == 0 and alpha[0, 1] > 0 and rgb[1, 0].tolist() == [200, 200, 200]
    img = np.full((2, 2, 3), 100, np.uint8)
    out = R.blend(img, lab, "voc")
    assert out[0, 0].tolist() == [100, 100, 100]  # background stays the image
    expect = (100 * (1 - alpha[0, 1]) + pal[15] * alpha[0, 1]).clip(0, 255).astype(np.uint8)
    assert out[0, 1].tolist() == expect.tolist()


def test_finetune_series_reads_the_finetune_history_format():
    hist = {"initial": {"epoch": -1, "rules": {"a": 0.25, "b": 0.0}}, "epochs": [
        {"epoch": 0, "loss": 1.0, "rules": {"a": 0.5, "b": 0.25}, "rule_loss": {"a": 9.0}, "seconds": 3.0},
        {"epoch": 1, "loss": 0.5, "rules": {"a": 0.75, "b": 0.5}, "rule_loss": {"a": 8.0}, "seconds": 3.0}]}
    epochs, scalars, rule_epochs, rules = R.finetune_series(hist)
    assert epochs == [0.0, 1.0] and rule_epochs == [-1.0, 0.0, 1.0]
    assert scalars == {"loss": [1.0, 0.5], "seconds": [3.0, 3.0]}
    assert rules == {"a": [0.25, 0.5, 0.75], "b": [0.0, 0.25, 0.5]}
    assert R.finetune_series([]) == ([], {}, [], {})


def test_render_writes_markdown_and_pngs(tmp_path):
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(40, 50, 3, generator=g) * 255).numpy().astype(np.uint8)
    lab = np.zeros((40, 50), np.int64)
    lab[10:30, 10:30] = 1
    lab[15:25, 15:25] = 2
    weak = WeakLabels(boxes=torch.tensor([[10.0, 10, 30, 30], [15, 15, 25, 25]]),
                      box_labels=torch.tensor([1, 2]), size=(40, 50))
    rows = [{"id": f"im{i}", "image": image, "weak": weak, "zero-shot SAM": lab, "logic SAM": lab,
             "student": lab, "ground truth": None} for i in range(2)]
    hist = [{"epoch": e, "loss": 1.0 / e, "ce": 1.0 / e, "rules": {}} for e in (1, 2, 3)]
    hist_rules = [{"epoch": e, "loss": 1.0 / e, "ce": 0.9 / e, "logic": 0.1, "rules": {"has_cup": 0.5 + e / 10}}
                  for e in (1, 2, 3)]
    ft = {"epochs": [{"epoch": 1, "loss": 1.0, "rules": {"cup_in_disc": 0.9}},
                     {"epoch": 2, "loss": 0.8, "rules": {"cup_in_disc": 0.95}}]}
    md = R.render(tmp_path, METRICS, student_histories={"logic": hist, "logic+rules": hist_rules},
                  finetune_history=ft, overlays=rows, config_path="/runs/a/config.yaml")
    text = md.read_text()
    assert R.results_table(METRICS) in text
    assert "fuzzyseg run --config /runs/a/config.yaml" in text
    for name in ("student_curves.png", "finetune_curves.png", "overlays.png"):
        assert f"]({name})" in text
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size[0] > 200
    with Image.open(tmp_path / "overlays.png") as im:
        assert im.size[0] > 2.5 * im.size[1]  # six panels wide, two rows high


def test_render_without_optional_parts(tmp_path):
    md = R.render(tmp_path, {"dataset": "voc", "weak": "tags", "seed": 1,
                             "students": {"logic": {"miou": 0.5}}})
    text = md.read_text()
    assert "png" not in text and "| student (val) on logic fine-tuned SAM | 0.500 |" in text
    with pytest.raises(KeyError):
        R.render(tmp_path, {"dataset": "coco"})


def test_many_rules_get_curves_that_can_be_told_apart():
    from fuzzylogic_seg.report import _line_style

    # more rules than the ten colours of matplotlib's cycle: each curve its own look
    looks = {tuple(sorted(_line_style(i).items())) for i in range(40)}
    assert len(looks) == 40


def test_the_overlay_legend_names_the_classes_shown():
    lab = np.zeros((8, 8), np.int64)
    lab[1:3, 1:3], lab[5:7, 5:7], lab[0, 7] = 7, 15, 255  # car, person, void
    rows = [{"id": "a", "image": np.zeros((8, 8, 3), np.uint8), "logic SAM": lab,
             "ground truth": None}]
    names = [h.get_label() for h in R._class_legend(rows, "voc")]
    assert names == ["car", "person", "unsure / void (255)"]
    assert [h.get_label() for h in R._class_legend(
        [{"id": "b", "image": None, "student": np.array([[0, 1], [2, 2]])}], "refuge")] == [
        "disc (rim)", "cup"]


def test_a_labelmap_palette_colours_the_overlays_and_the_legend(tmp_path):
    """A data set's own labelmap colours: the report draws its classes in them, as the
    label PNGs are coloured (ClassList.palette())."""
    from fuzzylogic_seg.data.classes import parse_classes, read_class_file

    f = tmp_path / "labelmap.txt"
    f.write_text("background:0,0,0::\nmug:250,50,83::\nspoon:51,221,255::\n")
    pal = read_class_file(f).palette()
    lab = np.array([[0, 1], [2, 255]])
    rgb, _ = R.colourise(lab, "voc", pal)
    assert rgb[0, 1].tolist() == [250, 50, 83] and rgb[1, 0].tolist() == [51, 221, 255]
    assert rgb[1, 1].tolist() == [200, 200, 200]
    rows = [{"id": "a", "image": np.zeros((2, 2, 3), np.uint8), "weak": None, "student": lab}]
    legend = R._class_legend(rows, "voc", ["background", "mug", "spoon"], pal)
    faces = {h.get_label(): [round(255 * v) for v in h.get_facecolor()[:3]] for h in legend}
    assert faces["mug"] == [250, 50, 83] and faces["spoon"] == [51, 221, 255]
    assert parse_classes("mug,spoon").palette() is None  # no colours: VOC's, as before
    render = R.render(tmp_path / "r", {"dataset": "voc", "students": {}, "pseudo_labels": {}},
                      overlays=rows, class_names=["background", "mug", "spoon"], palette=pal)
    assert (render.parent / "overlays.png").is_file()


def test_tags_are_named_under_the_weak_label_panel(tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(R, "_savefig", lambda fig, path: figs.append(fig) or path)
    tags = torch.tensor([False, True, False, True])
    rows = [{"id": "a", "image": np.zeros((4, 4, 3), np.uint8), "weak": WeakLabels(tags=tags, size=(4, 4))}]
    R.plot_overlays(rows, "voc", tmp_path / "o.png", ["background", "bottle", "can", "cup"])
    assert figs[0].axes[1].get_xlabel() == "tags: bottle, cup"
    R.plot_overlays(rows, "voc", tmp_path / "o.png")  # the VOC names by default
    assert figs[1].axes[1].get_xlabel() == "tags: aeroplane, bird"
