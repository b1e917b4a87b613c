"""Training sees weak labels only.

Scramble (then delete) the ground-truth masks of the training images while
keeping their weak-label folder: every tensor a training loop receives
(images, weak labels, batches, fact tensors) stays bit-identical. A control
shows the check would catch a leak: weak labels simulated from the masks on
the fly do change.
"""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fuzzylogic_seg.data import REFUGE, Collate, ResizePad, VOCSegmentation
from fuzzylogic_seg.data.synth_refuge import generate_refuge
from fuzzylogic_seg.data.synth_voc import generate_voc
from fuzzylogic_seg.facts import build_facts
from fuzzylogic_seg.io import save_index_png
from fuzzylogic_seg.weak.store import save_split

torch.set_num_threads(1)
KINDS = ("boxes", "scribbles", "points", "tags")


def write_weak(ds, out):
    items = ((ds.ids[i], ds.weak_labels(i, tuple(ds[i]["image"].shape[1:]))) for i in range(len(ds)))
    save_split(out, items, dataset=ds.name, split=ds.split, class_names=ds.classes)


def everything_training_sees(ds, num_classes, workers=0):
    """Flatten every tensor of every batch (and its facts) into a list, in order."""
    loader = DataLoader(ds, batch_size=2, shuffle=False, num_workers=workers,
                        collate_fn=Collate(num_classes))
    seen = []
    for batch in loader:
        facts = build_facts(batch, num_classes)
        for k in sorted(batch):
            if isinstance(batch[k], torch.Tensor):
                seen.append((k, batch[k]))
        for w in batch["weak"]:
            seen += [("weak.boxes", w.boxes), ("weak.scribble", w.scribble), ("weak.points", w.points),
                     ("weak.tags", w.tags)]
        for k in sorted(facts):
            v = facts[k]
            for kk, vv in (sorted(v.items()) if isinstance(v, dict) else [("", v)]):
                seen.append((f"facts.{k}{kk}", vv))
        seen.append(("ids", batch["id"]))
    return seen


def identical(a, b):
    if len(a) != len(b):
        return False
    for (ka, va), (kb, vb) in zip(a, b):
        if ka != kb:
            return False
        if isinstance(va, torch.Tensor):
            if not (isinstance(vb, torch.Tensor) and va.dtype == vb.dtype and va.shape == vb.shape
                    and torch.equal(va, vb)):
                return False
        elif va != vb:
            return False
    return True


def scramble_masks(folder: Path, values, seed=0):
    rng = np.random.default_rng(seed)
    n = 0
    for p in sorted(folder.iterdir()):
        arr = np.array(Image.open(p))
        new = rng.choice(values, size=arr.shape).astype(np.uint8)
        if p.suffix == ".png":
            save_index_png(new, p)
        else:
            Image.fromarray(new, mode="L").save(p)
        n += 1
    return n


def test_voc_training_inputs_ignore_ground_truth(tmp_path):
    root = tmp_path / "voc"
    generate_voc(root, seed=2, n_train=4, n_val=1, size=(64, 90), progress=False)
    weak = tmp_path / "weak"
    write_weak(VOCSegmentation(root, "train", kinds=KINDS, with_gt=False), weak)

    def train_set():
        return VOCSegmentation(root, "train", weak_dir=weak, with_gt=False, transform=ResizePad(64))

    before = everything_training_sees(train_set(), 21)
    # Control: weak labels simulated from masks on the fly would see the change.
    control = VOCSegmentation(root, "train", kinds=("scribbles", "points"), transform=ResizePad(64))
    control_before = everything_training_sees(control, 21)

    d = root / "VOCdevkit" / "VOC2012"
    assert scramble_masks(d / "SegmentationClass", [0, 3, 8, 15, 255]) == 5
    scramble_masks(d / "SegmentationObject", [0, 1, 2])
    assert identical(before, everything_training_sees(train_set(), 21, workers=2))
    assert not identical(control_before, everything_training_sees(control, 21))

    shutil.rmtree(d / "SegmentationClass")
    shutil.rmtree(d / "SegmentationObject")
    assert identical(before, everything_training_sees(train_set(), 21))


def test_refuge_training_inputs_ignore_ground_truth(tmp_path):
    root = tmp_path / "refuge"
    generate_refuge(root, seed=2, n_train=3, n_val=1, size=80, progress=False)
    weak = tmp_path / "weak"
    write_weak(REFUGE(root, "train", kinds=KINDS), weak)

    def train_set():
        return REFUGE(root, "train", weak_dir=weak, with_gt=False, transform=ResizePad(48))

    before = everything_training_sees(train_set(), 3)
    assert scramble_masks(root / "train" / "mask", [0, 128, 255]) == 3
    assert identical(before, everything_training_sees(train_set(), 3))
    shutil.rmtree(root / "train" / "mask")
    assert identical(before, everything_training_sees(train_set(), 3))
    # Asking for ground truth now fails, naming the missing file: it really is gone.
    with pytest.raises(Exception, match="missing mask"):
        REFUGE(root, "train", weak_dir=weak, with_gt=True)[0]
