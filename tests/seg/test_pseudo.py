"""Pseudo-labels: the composition rule, the weak-mask baseline, the command's outputs."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from fuzzylogic_seg.compose import IGNORE, box_pixels, box_union, compose, paint_boxes
from fuzzylogic_seg.errors import ConfigError
from fuzzylogic_seg.pseudo import make_pseudo_labels, read_label, weak_mask
from fuzzylogic_seg.weak.types import WeakLabels


# ------------------------------------------------------------ composition
def test_overlaps_are_resolved_by_score_not_by_order():
    probs = torch.zeros(2, 4, 6)
    probs[0, :, :4] = 0.9      # class 3, low score
    probs[1, :, 2:] = 0.8      # class 5, high score
    out = compose(probs, torch.tensor([3, 5]), torch.tensor([0.2, 0.7]))
    assert (out[:, :2] == 3).all() and (out[:, 2:] == 5).all()
    out = compose(probs.flip(0), torch.tensor([5, 3]), torch.tensor([0.7, 0.2]))
    assert (out[:, 2:] == 5).all()
    # Same score: the more probable mask wins the pixel.
    out = compose(probs, torch.tensor([3, 5]), torch.tensor([0.5, 0.5]))
    assert (out[:, 2:4] == 3).all()


def test_uncertain_pixels_are_255_and_confident_background_is_0():
    probs = torch.tensor([[[0.95, 0.6, 0.35, 0.05]]])
    out = compose(probs, torch.tensor([7]), torch.tensor([1.0]), threshold=0.7)
    assert out.tolist() == [[7, IGNORE, IGNORE, 0]]
    # threshold 0.5 labels every pixel (ties aside)
    out = compose(probs, torch.tensor([7]), torch.tensor([1.0]), threshold=0.5)
    assert out.tolist() == [[7, 7, 0, 0]]


def test_known_background_and_known_labels():
    probs = torch.full((1, 1, 4), 0.6)
    kb = torch.tensor([[True, False, False, False]])
    known = torch.tensor([[255, 255, 9, 255]])
    out = compose(probs, torch.tensor([2]), torch.tensor([1.0]), threshold=0.7,
                  known_background=kb, known=known)
    assert out.tolist() == [[0, IGNORE, 9, IGNORE]]


def test_compose_without_prompts_is_background_or_unknown():
    out = compose(torch.zeros(0, 2, 3), torch.zeros(0, dtype=torch.long), torch.zeros(0))
    assert (out == 0).all()


def test_compose_rejects_bad_threshold():
    with pytest.raises(ConfigError):
        compose(torch.zeros(1, 2, 2), torch.tensor([1]), torch.tensor([1.0]), threshold=0.3)


# ------------------------------------------------------------- weak-mask
def test_box_pixels_follow_the_half_open_convention():
    # VOC xmin=3, xmax=7 (1-based inclusive) -> x0 = 2, x1 = 7 -> pixels 2..6
    assert box_pixels([2, 0, 7, 1], 10, 10)[0::2] == (2, 7)
    assert box_pixels([-3, -3, 30, 30], 10, 12) == (0, 0, 12, 10)


def test_painted_boxes_smaller_on_top_background_outside():
    boxes = torch.tensor([[0.0, 0.0, 8.0, 6.0], [2.0, 1.0, 5.0, 4.0]])
    out = paint_boxes(boxes, torch.tensor([4, 9]), 8, 10)
    ref = torch.zeros(8, 10, dtype=torch.long)
    ref[0:6, 0:8] = 4
    ref[1:4, 2:5] = 9
    assert torch.equal(out, ref)
    # order of the boxes does not matter
    assert torch.equal(paint_boxes(boxes.flip(0), torch.tensor([9, 4]), 8, 10), ref)
    assert torch.equal(box_union(boxes, 8, 10), ref > 0)


def test_weak_mask_of_other_kinds():
    scr = torch.full((4, 5), 255)
    scr[1, 1:3] = 6
    w = WeakLabels(scribble=scr, points=[[0.5, 3.5]], point_labels=[2],
                   tags=torch.tensor([False, False, True]), size=(4, 5))
    assert torch.equal(weak_mask(w, (4, 5), "scribbles"), scr)
    p = weak_mask(w, (4, 5), "points")
    assert p[3, 0] == 2 and int((p != 255).sum()) == 1
    assert (weak_mask(w, (4, 5), "tags") == 2).all()
    w2 = WeakLabels(tags=torch.tensor([False, True, True]), size=(4, 5))
    assert (weak_mask(w2, (4, 5), "tags") == 255).all()


def test_in_a_mixed_folder_an_image_without_the_kind_is_uncertain_not_background():
    """`data weak --mix boxes:0.5,scribbles+tags:0.5`: under boxes, an image that
    carries scribbles and tags but no box says nothing about boxes (255), while an
    image with no weak label at all has no object (background)."""
    scr = torch.full((4, 5), 255)
    scr[1, 1:3] = 6
    other = WeakLabels(scribble=scr, tags=torch.tensor([False, True]), size=(4, 5))
    assert (weak_mask(other, (4, 5), "boxes") == 255).all()
    assert (weak_mask(WeakLabels(size=(4, 5)), (4, 5), "boxes") == 0).all()
    boxed = WeakLabels(boxes=[[1, 1, 3, 3]], box_labels=[4], size=(4, 5))
    assert (weak_mask(boxed, (4, 5), "scribbles") == 255).all()


# ------------------------------------------------- end to end (no SAM)
class _Tiny:
    """A two-image data set in memory: weak labels for training, masks for the summary."""

    name = "voc"

    def __init__(self):
        self.boxes = [torch.tensor([[2.0, 3.0, 10.0, 9.0]]),
                      torch.tensor([[0.0, 0.0, 6.0, 6.0], [4.0, 4.0, 12.0, 12.0]])]
        self.labels = [torch.tensor([3]), torch.tensor([1, 2])]
        self.ids = ["a", "b"]

    def __len__(self):
        return 2

    def index(self, image_id):
        return self.ids.index(image_id)

    def __getitem__(self, i):
        return {"id": self.ids[i], "image": torch.zeros(3, 12, 14, dtype=torch.uint8),
                "weak": WeakLabels(boxes=self.boxes[i], box_labels=self.labels[i], size=(12, 14))}

    def read_gt(self, i):
        gt = torch.zeros(12, 14, dtype=torch.long)
        if i == 0:
            gt[3:9, 2:10] = 3  # the object fills its box exactly
        else:
            gt[0:6, 0:6] = 1
            gt[6:12, 6:12] = 2
        return gt


def test_weak_mask_labels_of_a_hand_made_box_equal_the_painted_box(tmp_path):
    ds = _Tiny()
    summary = make_pseudo_labels("weak-mask", ds, out_dir=tmp_path, dataset_kind="voc",
                                 weak="boxes", progress=False)
    a = np.array(Image.open(tmp_path / "a.png"))
    ref = np.zeros((12, 14), np.uint8)
    ref[3:9, 2:10] = 3
    assert Image.open(tmp_path / "a.png").mode == "P"
    assert (a == ref).all()
    b = read_label(tmp_path / "b.png", "voc")
    assert b[5, 5] == 1 and b[7, 7] == 2  # the smaller box (6x6) lies on the larger (8x8)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["coverage"] == 1.0 and summary["coverage"] == 1.0
    # By hand: classes 1 and 3 exact; class 2 painted on 60 px holding its 36 true px
    # (IoU 0.6); background 192 / 216. mIoU over the 4 classes present.
    assert summary["per_class_iou"]["bicycle"] == pytest.approx(0.6)
    assert summary["miou"] == pytest.approx((192 / 216 + 1 + 0.6 + 1) / 4)
    assert on_disk["miou"] == pytest.approx(summary["miou"])


def test_unknown_method_is_refused(tmp_path):
    with pytest.raises(ConfigError):
        make_pseudo_labels("magic", _Tiny(), out_dir=tmp_path, dataset_kind="voc")


# ------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def synth_voc(tmp_path_factory):
    from fuzzylogic_seg.data.synth_voc import generate_voc

    root = tmp_path_factory.mktemp("voc")
    generate_voc(root, seed=5, n_train=3, n_val=0, size=(64, 80), progress=False)
    return root


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from fuzzylogic_seg.io import save_torch
    from fuzzylogic_seg.sam.build import TINY_CONFIG, build_embedded, embedded_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "tiny.pt"
    save_torch(embedded_checkpoint(build_embedded(TINY_CONFIG), TINY_CONFIG), path)
    return path


def _run(*argv):
    from fuzzylogic_seg.cli import main

    return main(list(map(str, argv)))


def test_cli_weak_mask_writes_one_label_per_image_and_a_summary(synth_voc, tmp_path):
    from fuzzylogic_seg.data.voc import VOCSegmentation

    rc = _run("pseudo-label", "--dataset", "voc", "--root", synth_voc, "--weak", "boxes",
              "--method", "weak-mask", "--out", tmp_path, "--no-progress")
    assert rc == 0
    ds = VOCSegmentation(synth_voc, "train", with_gt=True, kinds=("boxes",))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_images"] == 3 and 0 < summary["miou"] < 1
    for i in range(3):
        s = ds[i]
        lab = read_label(tmp_path / f"{s['id']}.png", "voc")
        assert torch.equal(lab, paint_boxes(s["weak"].boxes, s["weak"].box_labels,
                                            *lab.shape))
    assert (tmp_path / "weak" / "weak.json").is_file()  # the only supervision read


def test_a_second_run_with_another_weak_kind_does_not_reuse_the_first_ones_labels(
        synth_voc, tmp_path):
    from fuzzylogic_seg.weak.store import WeakStore

    def run(weak, seed=0):
        assert _run("pseudo-label", "--dataset", "voc", "--root", synth_voc, "--weak", weak,
                    "--method", "weak-mask", "--out", tmp_path, "--weak-seed", seed,
                    "--no-progress") == 0
        store = WeakStore(tmp_path / "weak")
        return store, json.loads((tmp_path / "summary.json").read_text())

    boxes, first = run("boxes")
    stamp = (tmp_path / "weak" / "weak.json").stat().st_mtime_ns
    again, second = run("boxes")  # the same setting: reused as it is
    assert (tmp_path / "weak" / "weak.json").stat().st_mtime_ns == stamp
    assert second["miou"] == first["miou"]
    points, third = run("points")
    assert points.manifest["kinds"] == ["points"]
    w = points.load(points.ids[0])
    assert w.points is not None and len(w.boxes) == 0
    assert third["coverage"] > 0 and third["miou"] > 0
    reseeded, _ = run("points", seed=3)
    assert reseeded.manifest["seed"] == 3


def test_cli_logic_end_to_end_with_a_tiny_sam(synth_voc, tiny_checkpoint, tmp_path):
    rc = _run("pseudo-label", "--dataset", "voc", "--root", synth_voc, "--weak", "boxes",
              "--method", "logic", "--out", tmp_path, "--sam-checkpoint", tiny_checkpoint,
              "--epochs", "1", "--no-progress", "--threshold", "0.6")
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["method"] == "logic" and summary["history"]["epochs"] == 1
    assert 0 < summary["coverage"] <= 1 and "miou" in summary
    assert summary["sam"] == {"type": "embedded", "weights": str(tiny_checkpoint)}
    assert (tmp_path / "finetune" / "history.json").is_file()
    assert len(list(tmp_path.glob("*.png"))) == 3


@pytest.mark.parametrize("method", ["zero-shot", "logic"])
def test_cli_tags_end_to_end_with_a_tiny_sam(synth_voc, tiny_checkpoint, tmp_path, method):
    rc = _run("pseudo-label", "--dataset", "voc", "--root", synth_voc, "--weak", "tags",
              "--method", method, "--out", tmp_path, "--sam-checkpoint", tiny_checkpoint,
              "--epochs", "2", "--no-progress")
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["method"] == method and summary["proposals_per_image"] > 0
    assert 0 <= summary["miou"] <= 1 and 0 < summary["coverage"] <= 1
    if method == "logic":
        assert summary["history"]["epochs"] == 2 and summary["tag_features"] == "appearance"
        assert summary["coverage"] == pytest.approx(1.0)  # background or a tag everywhere
    assert len(list(tmp_path.glob("*.png"))) == 3


def test_cli_reports_a_bad_rule_file(synth_voc, tiny_checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.rules"
    bad.write_text("sort r\nsort y\nsort x\npredicate mask(r, y, x) logits\n"
                   "rule oops: forall a, i, j: mask(a, i)\n")
    rc = _run("pseudo-label", "--dataset", "voc", "--root", synth_voc, "--weak", "boxes",
              "--method", "logic", "--out", tmp_path / "o", "--sam-checkpoint", tiny_checkpoint,
              "--rules", bad, "--no-progress")
    assert rc == 1
    err = capsys.readouterr().err
    assert "bad.rules:5" in err


def test_cli_refuge_zero_shot_writes_grey_masks(tmp_path, tiny_checkpoint):
    from fuzzylogic_seg.data.synth_refuge import generate_refuge

    root = tmp_path / "refuge"
    generate_refuge(root, seed=3, n_train=2, n_val=0, size=64, progress=False)
    out = tmp_path / "out"
    rc = _run("pseudo-label", "--dataset", "refuge", "--root", root, "--weak", "boxes",
              "--method", "zero-shot", "--out", out, "--sam-checkpoint", tiny_checkpoint,
              "--no-progress")
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"dice_disc", "dice_cup", "dice_mean", "vcdr_mae"} <= set(summary)
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2
    for p in pngs:
        img = Image.open(p)
        assert img.mode == "L" and set(np.unique(np.array(img))) <= {0, 128, 255}


def test_refuge_weak_mask_paints_the_cup_on_the_disc(tmp_path):
    class Ref(_Tiny):
        name = "refuge"

        def __getitem__(self, i):
            return {"id": "r", "image": torch.zeros(3, 12, 14, dtype=torch.uint8),
                    "weak": WeakLabels(boxes=[[4.0, 2.0, 6.0, 5.0], [1.0, 1.0, 10.0, 9.0]],
                                       box_labels=[2, 1], size=(12, 14))}

        def __len__(self):
            return 1

    make_pseudo_labels("weak-mask", Ref(), out_dir=tmp_path, dataset_kind="refuge",
                       evaluate=False, progress=False)
    grey = np.array(Image.open(tmp_path / "r.png"))
    ref = np.full((12, 14), 255, np.uint8)
    ref[1:9, 1:10] = 128
    ref[2:5, 4:6] = 0
    assert (grey == ref).all()


def test_scrambled_masks_change_no_pseudo_label(synth_voc, tiny_checkpoint, tmp_path):
    """Training and labelling read the weak labels only: scrambling the masks on
    disk (the weak-label folder kept) leaves every pseudo-label bit-identical."""
    import shutil

    weak = tmp_path / "weak"
    from fuzzylogic_seg.commands.pseudo import ensure_weak_dir

    ensure_weak_dir("voc", synth_voc, "train", "boxes", weak, 0)
    other = tmp_path / "scrambled"
    shutil.copytree(synth_voc, other)
    rng = np.random.default_rng(0)
    for png in (other / "VOCdevkit" / "VOC2012" / "SegmentationClass").glob("*.png"):
        img = Image.open(png)
        arr = np.array(img)
        scrambled = Image.fromarray(rng.permutation(arr.reshape(-1)).reshape(arr.shape), mode="P")
        scrambled.putpalette(img.getpalette())
        scrambled.save(png)
    outs = []
    for root in (synth_voc, other):
        out = tmp_path / f"out_{root.name}"
        assert _run("pseudo-label", "--dataset", "voc", "--root", root, "--weak", "boxes",
                    "--method", "logic", "--out", out, "--weak-dir", weak, "--epochs", "1",
                    "--sam-checkpoint", tiny_checkpoint, "--no-progress") == 0
        outs.append(out)
    names = sorted(p.name for p in outs[0].glob("*.png"))
    assert names and names == sorted(p.name for p in outs[1].glob("*.png"))
    for n in names:
        assert (outs[0] / n).read_bytes() == (outs[1] / n).read_bytes()
    a = json.loads((outs[0] / "summary.json").read_text())
    b = json.loads((outs[1] / "summary.json").read_text())
    assert a["miou"] != b["miou"]  # the evaluation did see the (scrambled) masks


def test_a_refuge_label_rewritten_without_uncertain_pixels_drops_its_old_list(tmp_path):
    from fuzzylogic_seg.pseudo import _write_label

    lab = torch.zeros(6, 7, dtype=torch.long)
    lab[2:4, 2:5] = 1
    unsure = lab.clone()
    unsure[0, 0] = IGNORE
    _write_label(unsure, tmp_path, "V1", "refuge")
    assert (read_label(tmp_path / "V1.png", "refuge")[0, 0]) == IGNORE
    _write_label(lab, tmp_path, "V1", "refuge")  # a rerun at another threshold
    assert not (tmp_path / "uncertain" / "V1.png").exists()
    assert torch.equal(read_label(tmp_path / "V1.png", "refuge"), lab)


def test_a_weak_folder_of_another_kind_stops_before_training(synth_voc, tmp_path, capsys):
    # a scribble folder passed without --weak scribbles would train on no boxes at all
    assert _run("data", "weak", "--dataset", "voc", "--root", synth_voc, "--kinds", "scribbles",
                "--out", tmp_path / "weak") == 0
    capsys.readouterr()
    assert _run("pseudo-label", "--dataset", "voc", "--root", synth_voc, "--weak-dir",
                tmp_path / "weak", "--weak", "boxes", "--method", "weak-mask", "--out",
                tmp_path / "o") != 0
    err = capsys.readouterr().err
    assert "holds no boxes" in err and "--weak scribbles" in err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_scores_with_some_masks_missing_or_broken(synth_voc, tmp_path, capsys):
    """A split where some masks are missing is scored on the others, with a warning
    that names a missing file and the count; a mask that is there but broken stops
    the run naming it (it used to drop every score without a word); a split with
    no mask at all gets coverage only."""
    import shutil

    from fuzzylogic_seg.data.voc import VOCSegmentation
    from fuzzylogic_seg.io import VOC_CLASSES
    from fuzzylogic_seg.metrics import SegMetrics

    root = tmp_path / "voc"
    shutil.copytree(synth_voc, root)
    masks = root / "VOCdevkit" / "VOC2012" / "SegmentationClass"
    ids = sorted(p.stem for p in masks.glob("*.png"))
    full = tmp_path / "full"
    assert _run("pseudo-label", "--dataset", "voc", "--root", root, "--weak", "boxes",
                "--method", "weak-mask", "--out", full, "--no-progress") == 0
    assert json.loads((full / "summary.json").read_text())["scored_images"] == 3
    (masks / f"{ids[0]}.png").unlink()
    out = tmp_path / "some"
    with pytest.warns(UserWarning, match=rf"{ids[0]}\.png: missing mask; pseudo-label scores "
                                         r"cover 2 of 3 images"):
        assert _run("pseudo-label", "--dataset", "voc", "--root", root, "--weak", "boxes",
                    "--method", "weak-mask", "--out", out, "--no-progress") == 0
    summary = json.loads((out / "summary.json").read_text())
    ds = VOCSegmentation(root, "train", kinds=("boxes",))
    ref = SegMetrics("voc", VOC_CLASSES)  # the same labels scored by hand on the two masks
    for i in ids[1:]:
        ref.update(read_label(out / f"{i}.png", "voc"), ds.read_gt(ds.index(i)), i)
    assert summary["scored_images"] == 2 and summary["miou"] == pytest.approx(ref.as_dict()["miou"])

    broken = masks / f"{ids[1]}.png"
    broken.write_bytes(broken.read_bytes()[:100])
    capsys.readouterr()
    assert _run("pseudo-label", "--dataset", "voc", "--root", root, "--weak", "boxes",
                "--method", "weak-mask", "--out", tmp_path / "broken", "--no-progress") == 1
    assert str(broken) in capsys.readouterr().err

    for p in masks.glob("*.png"):
        p.unlink()
    none = tmp_path / "none"
    assert _run("pseudo-label", "--dataset", "voc", "--root", root, "--weak", "boxes",
                "--method", "weak-mask", "--out", none, "--no-progress") == 0
    summary = json.loads((none / "summary.json").read_text())
    assert "miou" not in summary and "scored_images" not in summary and summary["coverage"] > 0


def test_the_cli_prints_its_own_warnings_as_one_line(synth_voc, tmp_path, capsys):
    import shutil
    import sys
    import warnings

    root = tmp_path / "voc"
    shutil.copytree(synth_voc, root)
    next((root / "VOCdevkit" / "VOC2012" / "SegmentationClass").glob("*.png")).unlink()
    with warnings.catch_warnings():  # printed, as outside pytest (which records them)
        warnings.simplefilter("always")
        warnings.showwarning = lambda m, c, f, n, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(m, c, f, n, line))  # (Python's printing of a warning)
        assert _run("pseudo-label", "--dataset", "voc", "--root", root, "--weak", "boxes",
                    "--method", "weak-mask", "--out", tmp_path / "o", "--no-progress") == 0
    err = capsys.readouterr().err
    assert "fuzzyseg: warning: " in err and ": missing mask; pseudo-label scores cover 2 of 3" in err
    assert "UserWarning" not in err and "pseudo.py" not in err
    assert warnings.formatwarning is warnings._formatwarning_orig  # put back
