"""The prompt-free student: model registry, geometry, loss, determinism, resume, I/O."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fuzzylogic_seg import student as S
from fuzzylogic_seg.errors import CheckpointError, ConfigError, DatasetError

torch.set_num_threads(1)

# A tiny, dropout-free model keeps every training test to a few seconds.
TINY = dict(arch="unet", encoder="tu-mobilenetv3_small_050", encoder_weights=None,
            model_kwargs={"decoder_channels": [16, 16, 8, 8, 8]}, size=64, batch_size=2, lr=3e-3)


class Discs(torch.utils.data.Dataset):
    """Toy REFUGE-like samples: a bright disc with a brighter cup, varying sizes."""

    def __init__(self, n: int, seed: int = 0, hw=(48, 60)):
        g = torch.Generator().manual_seed(seed)
        self.samples = []
        H, W = hw
        yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        for i in range(n):
            cx = int(torch.randint(18, W - 18, (1,), generator=g))
            cy = int(torch.randint(16, H - 16, (1,), generator=g))
            r = int(torch.randint(8, 14, (1,), generator=g))
            d = ((xx - cx) ** 2 + (yy - cy) ** 2).float().sqrt()
            gt = torch.zeros(H, W, dtype=torch.long)
            gt[d < r] = 1
            gt[d < r / 2] = 2
            img = (torch.rand(3, H, W, generator=g) * 50 + gt[None] * 70).to(torch.uint8)
            self.samples.append({"id": f"img{i:02d}", "image": img, "gt": gt})

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def tiny(**kw) -> S.StudentConfig:
    return S.StudentConfig(**{**TINY, **kw})


class _Crash(Exception):
    pass


def _crash_after_epoch(train, out, epoch: int) -> None:
    """Run ``train(out, hook=...)`` and interrupt it at the end of ``epoch``."""
    def crash(e, rec):
        if e == epoch:
            raise _Crash

    with pytest.raises(_Crash):
        train(out, hook=crash)


def state_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- config
def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="multiple of 32"):
        S.StudentConfig(size=100)
    with pytest.raises(ConfigError, match="bn"):
        S.StudentConfig(bn="sync")
    with pytest.raises(ConfigError, match="unknown student option"):
        S.StudentConfig.from_dict({"epochz": 3})


# ----------------------------------------------------------------- models
@pytest.mark.parametrize("arch", ["deeplabv3plus", "unet", "fpn"])
def test_build_model_by_registry_name(arch):
    logs = []
    m = S.build_model(S.StudentConfig(arch=arch, encoder="resnet18", encoder_weights=None), 3, log=logs.append)
    out = m.eval()(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 3, 64, 64)
    assert any("random init" in line for line in logs)


def test_build_model_unknown_names():
    with pytest.raises(ConfigError, match="unknown encoder"):
        S.build_model(S.StudentConfig(encoder="resnet1234", encoder_weights="imagenet"), 3)
    with pytest.raises(ConfigError, match="cannot build student"):
        S.build_model(S.StudentConfig(arch="nonet", encoder="resnet18", encoder_weights=None), 3)
    with pytest.raises(ConfigError, match="no weights named"):
        S.build_model(S.StudentConfig(encoder="resnet18", encoder_weights="laion"), 3)


def test_uncached_imagenet_weights_never_touch_the_network(monkeypatch):
    import huggingface_hub

    def boom(*a, **k):
        raise AssertionError("network download attempted")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", boom)
    monkeypatch.setattr(S, "_hf_cached", lambda *a, **k: None)
    logs = []
    S.build_model(S.StudentConfig(encoder="resnet18", encoder_weights="imagenet"), 3, log=logs.append)
    assert "not in the local cache" in logs[0] and "random init" in logs[0]


def test_cached_encoder_weights_are_loaded(tmp_path, monkeypatch):
    import segmentation_models_pytorch as smp
    from safetensors.torch import save_file

    ref = smp.encoders.get_encoder("resnet18", weights=None)
    torch.nn.init.normal_(ref.conv1.weight)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    # As if huggingface had it cached: smp's own repo id/revision are looked up.
    seen = {}

    def cached(repo, filename, revision=None):
        seen["repo"] = repo
        return str(path)

    monkeypatch.setattr(S, "_hf_cached", cached)
    logs = []
    m = S.build_model(S.StudentConfig(encoder="resnet18", encoder_weights="imagenet"), 3, log=logs.append)
    assert seen["repo"] == "smp-hub/resnet18.imagenet"
    assert "from the local cache" in logs[0]
    assert torch.equal(m.encoder.conv1.weight, ref.conv1.weight)
    # a local file works the same way
    m2 = S.build_model(S.StudentConfig(encoder="resnet18", encoder_weights=str(path)), 3, log=logs.append)
    assert torch.equal(m2.encoder.conv1.weight, ref.conv1.weight)


# --------------------------------------------------------------- geometry
def test_letterbox_pads_bottom_right_with_ignore():
    img = torch.randint(0, 255, (3, 30, 60), dtype=torch.uint8)
    lab = torch.zeros(30, 60, dtype=torch.long)
    lab[:, 30:] = 2
    out, l2, valid = S.letterbox(img, lab, 64)
    assert out.shape == (3, 64, 64) and l2.shape == (64, 64)
    assert valid[:32].all() and not valid[32:].any()
    assert (l2[32:] == 255).all() and (out[:, 32:] == 0).all()
    assert (l2[:32, :32] == 0).all() and (l2[:32, 32:] == 2).all()
    with pytest.raises(DatasetError, match="does not match"):
        S.letterbox(img, lab[:10], 64)


def test_per_image_ce_matches_loops():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, 6, generator=g)
    labels = torch.randint(0, 4, (3, 5, 6), generator=g)
    labels[0, :2] = 255
    labels[2] = 255  # an image with nothing labelled contributes 0
    per = []
    for b in range(3):
        terms = []
        for y in range(5):
            for x in range(6):
                c = int(labels[b, y, x])
                if c != 255:
                    terms.append(-torch.log_softmax(logits[b, :, y, x], 0)[c])
        per.append(torch.stack(terms).mean() if terms else torch.tensor(0.0))
    assert torch.allclose(S.per_image_ce(logits, labels), torch.stack(per).mean(), atol=1e-6)


# --------------------------------------------------------------- training
def _train(tmp, epochs=3, hook=None, seed=0, ds=None, **kw):
    ds = ds or Discs(6)
    data = S.StudentDataset(ds, S.GroundTruth(), 64, seed=seed)
    return S.train_student(tiny(epochs=epochs, **kw), data, "refuge", tmp, seed=seed, fingerprint="f",
                           log=lambda m: None, on_epoch_end=hook, progress=False)


def test_training_is_deterministic_and_resumes_exactly(tmp_path):
    full = _train(tmp_path / "a")
    again = _train(tmp_path / "b")
    assert state_equal(full.model.state_dict(), again.model.state_dict())
    assert full.history == [dict(r, seconds=a["seconds"]) for r, a in zip(again.history, full.history)]

    _crash_after_epoch(_train, tmp_path / "c", 1)
    assert (tmp_path / "c" / "checkpoint.pt").is_file()
    resumed = _train(tmp_path / "c")
    assert resumed.resumed_from == 2
    assert state_equal(full.model.state_dict(), resumed.model.state_dict())
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    # another seed trains another model
    other = _train(tmp_path / "d", seed=1)
    assert not state_equal(full.model.state_dict(), other.model.state_dict())


def test_checkpoint_of_another_config_is_not_resumed(tmp_path):
    _train(tmp_path, epochs=1)
    logs = []
    data = S.StudentDataset(Discs(6), S.GroundTruth(), 64)
    res = S.train_student(tiny(epochs=1), data, "refuge", tmp_path, fingerprint="other", log=logs.append,
                          progress=False)
    assert res.resumed_from is None and any("different configuration" in m for m in logs)


def test_batch_larger_than_data_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="larger than"):
        _train(tmp_path, epochs=1, ds=Discs(1))


def test_student_learns_and_roundtrips(tmp_path):
    train = Discs(12)
    res = _train(tmp_path, epochs=12, ds=train, batch_size=4)
    cfg = tiny(epochs=12, batch_size=4)
    S.save_student(tmp_path / "model.pt", res.model, cfg, "refuge")
    st = S.Student.load(tmp_path / "model.pt")
    val = Discs(6, seed=1, hw=(40, 70))
    inter = union = 0
    for s in val.samples:
        pred = st.predict(s["image"])
        assert pred.shape == s["gt"].shape  # back at the image's own size
        assert torch.equal(pred, S.Student(res.model, cfg, "refuge").predict(s["image"]))
        fg_p, fg_g = pred > 0, s["gt"] > 0
        inter += int((fg_p & fg_g).sum())
        union += int((fg_p | fg_g).sum())
    assert inter / union > 0.5  # it learned the disc (chance level is ~0.15)


def test_student_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        S.Student.load(tmp_path / "missing.pt")
    torch.save({"format": "something else"}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not a fuzzyseg student"):
        S.Student.load(tmp_path / "x.pt")
    m = S.build_model(tiny(), 3)
    S.save_student(tmp_path / "v.pt", m, tiny(), "refuge")
    st = torch.load(tmp_path / "v.pt", weights_only=True)
    st["classes"] = 21
    torch.save(st, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        S.Student.load(tmp_path / "w.pt")


def test_written_labels_use_the_dataset_formats(tmp_path):
    lab = torch.tensor([[0, 1], [2, 0]])
    S.write_label(lab, tmp_path / "r.png", "refuge")
    with Image.open(tmp_path / "r.png") as im:
        assert im.mode == "L"
        assert np.array(im).tolist() == [[255, 128], [0, 255]]
    S.write_label(torch.tensor([[0, 15], [20, 255]]), tmp_path / "v.png", "voc")
    with Image.open(tmp_path / "v.png") as im:
        assert im.mode == "P"
        assert np.array(im).tolist() == [[0, 15], [20, 255]]
        assert im.getpalette()[15 * 3: 15 * 3 + 3] == [192, 128, 128]  # VOC "person"


def test_refuge_facts_follow_the_softmax():
    logits = torch.zeros(1, 3, 20, 20)
    logits[0, 2, 10, 10] = 10.0  # one confident cup pixel
    f = S.STUDENT_FACTS["refuge"](logits, {})
    p = logits.softmax(1)
    assert torch.allclose(f["disc"], p[:, 1] + p[:, 2])
    assert torch.allclose(f["cup"], p[:, 2])
    # near_cup spreads the cup by r = max(1, round(0.02 * 20)) = 1 pixel
    assert f["near_cup"][0, 9, 11] == pytest.approx(float(p[0, 2, 10, 10]))
    assert f["near_cup"][0, 10, 12] < 0.5


VOC_RULES = """
sort class
sort pixel[2]
predicate seg(class, pixel) softmax(class)
predicate present(class)
rule absent_classes_absent [forall = mean]:
    forall c where not present(c): forall p: not seg(c, p)
"""


def test_student_rules_on_voc_use_the_weak_labels_classes(tmp_path):
    from fuzzylogic_seg.weak.types import WeakLabels

    rules = tmp_path / "voc.rules"
    rules.write_text(VOC_RULES)
    weak = WeakLabels(boxes=torch.tensor([[0.0, 0, 4, 4]]), box_labels=torch.tensor([3]),
                      tags=torch.zeros(21, dtype=torch.bool), size=(8, 8))
    base = [{"id": "a", "image": torch.zeros(3, 8, 8, dtype=torch.uint8), "weak": weak,
             "gt": torch.zeros(8, 8, dtype=torch.long)}]
    item = S.StudentDataset(base, S.GroundTruth(), 32, present=21, hflip=False)[0]
    expect = torch.zeros(21)
    expect[[0, 3]] = 1  # background always, class 3 from the box
    assert torch.equal(item["present"], expect)

    logic = S.StudentLogic(str(rules), "voc")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 21, 32, 32, generator=g)
    valid = torch.zeros(1, 32, 32, dtype=torch.bool)
    valid[:, :16] = True
    loss, sats = logic(logits, {"present": expect[None], "valid": valid})
    # mean over absent classes of the mean over valid pixels of 1 - softmax
    p = logits.softmax(1)[0][:, :16]
    absent = [c for c in range(21) if c not in (0, 3)]
    truth = torch.stack([(1 - p[c]).mean() for c in absent]).mean()
    assert float(sats["absent_classes_absent"]) == pytest.approx(float(truth), abs=1e-5)
    assert torch.isfinite(loss) and float(loss) > 0
    with pytest.raises(ConfigError, match=r"bad.rules:2:11: predicate 'halo' is not a fact of the refuge student"):
        bad = tmp_path / "bad.rules"
        bad.write_text("sort pixel[2]\npredicate halo(pixel)\nrule r: forall p: halo(p)\n")
        S.StudentLogic(str(bad), "refuge")


def test_scale_augmentation_keeps_labels_on_their_pixels():
    # image brightness encodes the class, so every augmented labelled pixel can be checked
    gt = torch.zeros(48, 60, dtype=torch.long)
    gt[10:30, 5:25] = 1
    gt[20:40, 30:55] = 2
    img = (gt * 100)[None].repeat(3, 1, 1).to(torch.uint8)
    base = [{"id": "a", "image": img, "gt": gt}]
    data = S.StudentDataset(base, S.GroundTruth(), 64, hflip=False, scale=(0.5, 1.5))
    seen = set()
    for epoch in range(6):
        data.set_epoch(epoch)
        a, b = data[0], data[0]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])  # deterministic
        lab, x = a["label"], a["image"]
        assert lab.shape == (64, 64) and x.shape == (3, 64, 64)
        bright = S.normalize(torch.full((3, 1, 1), 100, dtype=torch.uint8))[0, 0, 0]
        zero = S.normalize(torch.zeros((3, 1, 1), dtype=torch.uint8))[0, 0, 0]
        level = ((x[0] - zero) / (bright - zero)).round().long()  # back to 0, 1, 2
        inner = lab != 255
        agree = (level[inner] == lab[inner]).float().mean()
        assert agree > 0.95  # only resampled boundary pixels may differ (an offset would cost far more)
        assert (lab[~a["valid"]] == 255).all()
        seen.add(int(a["valid"].sum()))
    assert len(seen) > 3  # the scale did change from epoch to epoch
    with pytest.raises(ConfigError, match="scale_aug"):
        S.StudentConfig(scale_aug=[1.5, 0.5])


def _void_reference(lab: torch.Tensor, r: int) -> torch.Tensor:
    """Loop reference: a labelled pixel is void when any labelled pixel within
    Chebyshev distance r has another class."""
    H, W = lab.shape
    out = lab.clone()
    for y in range(H):
        for x in range(W):
            c = int(lab[y, x])
            if c == 255:
                continue
            win = lab[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
            win = win[win != 255]
            if (win != c).any():
                out[y, x] = 255
    return out


@pytest.mark.parametrize("r", [1, 2])
def test_boundary_void_matches_loops(r):
    g = torch.Generator().manual_seed(r)
    lab = torch.zeros(20, 23, dtype=torch.long)
    lab[3:12, 4:15] = 5
    lab[8:18, 10:20] = 2
    lab[0, :] = 255
    lab[torch.rand(20, 23, generator=g) < 0.05] = 255
    assert torch.equal(S.boundary_void(lab, r), _void_reference(lab, r))
    assert torch.equal(S.boundary_void(lab, 0), lab)
    # a uniform map (and one with only ignored pixels beside it) has no boundary
    flat = torch.full((6, 6), 3, dtype=torch.long)
    flat[:, 4:] = 255
    assert torch.equal(S.boundary_void(flat, 2), flat)


def test_color_jitter_factors_and_determinism():
    img = torch.tensor([[[10, 200]], [[40, 100]], [[90, 30]]], dtype=torch.uint8)  # [3, 1, 2]
    valid = torch.ones(1, 2, dtype=torch.bool)
    x = img.float() / 255
    # u = 0.5 is the identity
    assert torch.allclose(S.color_jitter(img, valid, [0.5, 0.5, 0.5], 0.4), x, atol=1e-6)
    # brightness alone multiplies every channel by 1 + s (2u - 1)
    assert torch.allclose(S.color_jitter(img, valid, [0.75, 0.5, 0.5], 0.4), (x * 1.2).clamp(0, 1), atol=1e-6)
    # saturation 0 (u = 0, s = 1 is outside the allowed range, so use the formula at s = 0.8, u = 0.0 -> 0.2)
    y = S.color_jitter(img, valid, [0.5, 0.5, 0.0], 0.8)
    grey = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    assert torch.allclose(y, (grey + (x - grey) * 0.2).clamp(0, 1), atol=1e-6)
    # padding stays 0
    v = torch.tensor([[True, False]])
    assert (S.color_jitter(img, v, [0.9, 0.1, 0.7], 0.3)[:, 0, 1] == 0).all()
    # in a data set: a function of (seed, epoch, index), and off by default
    base = [{"id": "a", "image": img.repeat(1, 20, 10), "gt": torch.zeros(20, 20, dtype=torch.long)}]
    d = S.StudentDataset(base, S.GroundTruth(), 32, hflip=False, jitter=0.3)
    d.set_epoch(1)
    assert torch.equal(d[0]["image"], d[0]["image"])
    d.set_epoch(2)
    e2 = d[0]["image"]
    d.set_epoch(1)
    assert not torch.equal(d[0]["image"], e2)
    with pytest.raises(ConfigError, match="color_jitter"):
        S.StudentConfig(color_jitter=1.5)
    with pytest.raises(ConfigError, match="boundary_ignore"):
        S.StudentConfig(boundary_ignore=-1)
    with pytest.raises(ConfigError, match="label_smoothing"):
        S.StudentConfig(label_smoothing=1.0)


def test_boundary_ignore_in_the_dataset_and_label_smoothing():
    ds = Discs(2)
    d = S.StudentDataset(ds, S.GroundTruth(), 64, hflip=False, boundary_ignore=2)
    plain = S.StudentDataset(ds, S.GroundTruth(), 64, hflip=False)
    lab, ref = d[0]["label"], plain[0]["label"]
    assert torch.equal(lab, S.boundary_void(ref, 2)) and (lab == 255).sum() > (ref == 255).sum()
    # label smoothing: torch's definition (1 - e) * CE + e * mean over classes of -log p
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    labels = torch.randint(0, 3, (2, 4, 4), generator=g)
    logp = logits.log_softmax(1)
    nll = -logp.gather(1, labels[:, None])[:, 0]
    want = (0.9 * nll + 0.1 * (-logp.mean(1))).flatten(1).mean(1).mean()
    assert torch.allclose(S.per_image_ce(logits, labels, 0.1), want, atol=1e-6)


# ------------------------------------------------------- VOC box facts and rules
def _boxed_samples(n=3, hw=(10, 16)):
    """VOC-like samples whose ground truth paints the weak boxes (no overlap), so
    the label path is an independent reference for the box maps."""
    from fuzzylogic_seg.weak.types import WeakLabels

    boxes = [([[2.0, 1, 10, 6], [11, 4, 15, 9]], [3, 8]), ([[0.0, 0, 5, 10]], [15]), ([[3.0, 2, 14, 8]], [3])]
    out = []
    for i in range(n):
        b, lab = boxes[i % len(boxes)]
        gt = torch.zeros(hw, dtype=torch.long)
        for (x0, y0, x1, y1), c in zip(b, lab):
            gt[int(y0):int(y1), int(x0):int(x1)] = c
        img = (torch.rand(3, *hw, generator=torch.Generator().manual_seed(i)) * 255).to(torch.uint8)
        out.append({"id": f"b{i}", "image": img, "gt": gt,
                    "weak": WeakLabels(boxes=torch.tensor(b), box_labels=torch.tensor(lab), size=hw)})
    return out


def test_box_facts_follow_letterbox_and_flip_exactly():
    base = _boxed_samples(1)
    # 10 x 16 -> 20 x 32 in a 32 x 32 letterbox: every image pixel becomes 2 x 2
    plain = S.StudentDataset(base, S.GroundTruth(), 32, present=21, boxes=True, hflip=False)[0]
    ref = torch.zeros(21, 32, 32, dtype=torch.bool)
    ref[3, 2:12, 4:20] = True   # box x 2..10, y 1..6 (half-open) times 2
    ref[8, 8:18, 22:30] = True  # box x 11..15, y 4..9
    assert torch.equal(plain["inbox"], ref)
    flips = S.StudentDataset(base, S.GroundTruth(), 32, present=21, boxes=True, hflip=True, seed=3)
    seen = set()
    for epoch in range(8):
        flips.set_epoch(epoch)
        item = flips[0]
        flipped = torch.equal(item["image"], plain["image"].flip(-1))  # the image says whether it flipped
        assert flipped or torch.equal(item["image"], plain["image"])
        seen.add(flipped)
        assert torch.equal(item["inbox"], ref.flip(-1) if flipped else ref)
    assert seen == {True, False}


def test_box_facts_follow_the_scale_augmentation_like_the_labels():
    base = _boxed_samples(3)
    data = S.StudentDataset(base, S.GroundTruth(), 64, present=21, boxes=True, scale=(0.5, 1.6), seed=1)
    plain = S.StudentDataset(base, S.GroundTruth(), 64, present=21, scale=(0.5, 1.6), seed=1)
    for epoch in range(4):
        data.set_epoch(epoch)
        plain.set_epoch(epoch)
        for i in range(3):
            a, b = data[i], plain[i]
            for k in ("image", "label", "valid", "present"):  # the box maps change nothing else
                assert torch.equal(a[k], b[k])
            lab = a["label"]
            for c in range(21):  # painted boxes: the label path is the reference
                assert torch.equal(a["inbox"][c], lab == c if c else torch.zeros_like(lab, dtype=torch.bool))
            assert torch.equal(a["inbox"], data[i]["inbox"])  # deterministic


def test_voc_box_rules_bind_and_give_a_finite_loss_with_gradients():
    from fuzzylogic_seg.rulefiles import rules_dir

    logic = S.StudentLogic(str(rules_dir() / "student_voc.rules"), "voc")
    assert logic.needs_boxes
    assert not S.StudentLogic(str(rules_dir() / "student_refuge.rules"), "refuge").needs_boxes
    data = S.StudentDataset(_boxed_samples(3), S.GroundTruth(), 32, present=21, boxes=True)
    batch = torch.utils.data.default_collate([data[i] for i in range(3)])
    # a student that predicts the painted boxes satisfies every rule
    perfect = F.one_hot(batch["label"].clamp(0, 20), 21).permute(0, 3, 1, 2).float() * 30
    loss, sats = logic(perfect, batch)
    assert float(loss) < 1e-3 and all(float(v) > 0.999 for v in sats.values())
    # all background: the boxes hold nothing (rows / cols fail), the other rules hold
    bg = torch.zeros(3, 21, 32, 32)
    bg[:, 0] = 30
    _, sats = logic(bg, batch)
    assert float(sats["box_rows"]) < 1e-3 and float(sats["box_cols"]) < 1e-3
    assert float(sats["only_in_boxes"]) > 0.999 and float(sats["absent_classes_absent"]) > 0.999
    logits = torch.randn(3, 21, 32, 32, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss, _ = logic(logits, batch)
    loss.backward()
    assert torch.isfinite(loss.detach()) and float(loss.detach()) > 0
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # outside is exactly the image pixels in no box
    f = S.STUDENT_FACTS["voc"](logits, batch)
    assert torch.equal(f["outside"].bool(), batch["valid"] & (batch["label"] == 0))
    with pytest.raises(DatasetError, match="no weak boxes"):
        from fuzzylogic_seg.weak.types import WeakLabels

        s = dict(_boxed_samples(1)[0], weak=WeakLabels(tags=torch.ones(21, dtype=torch.bool), size=(10, 16)))
        S.StudentDataset([s], S.GroundTruth(), 32, present=21, boxes=True)[0]


def test_training_with_box_rules_is_deterministic_and_resumes_exactly(tmp_path):
    from fuzzylogic_seg.rulefiles import rules_dir

    cfg = dict(epochs=2, logic_rules=str(rules_dir() / "student_voc.rules"), size=32, scale_aug=[0.8, 1.2])

    def train(d, hook=None):
        data = S.StudentDataset(_boxed_samples(4), S.GroundTruth(), 32, present=21, boxes=True,
                                scale=(0.8, 1.2))
        return S.train_student(tiny(**cfg), data, "voc", d, fingerprint="f", log=lambda m: None,
                               on_epoch_end=hook, progress=False)

    full = train(tmp_path / "a")
    assert full.history[-1]["rules"].keys() == {"only_in_boxes", "absent_classes_absent", "box_rows", "box_cols"}

    _crash_after_epoch(train, tmp_path / "c", 0)
    resumed = train(tmp_path / "c")
    assert resumed.resumed_from == 1
    assert state_equal(full.model.state_dict(), resumed.model.state_dict())
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]


@pytest.mark.parametrize("over, msg", [
    ({"arch": "unett"}, "unknown student arch 'unett'; did you mean unet"),
    ({"encoder": "resnet19"}, "unknown student encoder 'resnet19'; did you mean resnet18"),
    # smp passes unknown keys to the encoder, and its own encoders drop them silently
    ({"arch": "unet", "model_kwargs": {"decoder_chanels": [8] * 5}},
     "unknown student.model_kwargs key 'decoder_chanels' for unet; did you mean decoder_channels"),
    ({"arch": "unet", "model_kwargs": {"decoder_channels": [64, 32]}}, "depth is 5"),
    ({"model_kwargs": {"classes": 3}}, "cannot set classes"),
])
def test_check_model_refuses_what_smp_would_refuse_late_or_drop(over, msg):
    from fuzzylogic_seg.student import check_model

    with pytest.raises(ConfigError, match=msg):
        check_model(S.StudentConfig(**over))


def test_check_model_passes_good_configs_and_timm_keys():
    from fuzzylogic_seg.student import check_model

    check_model(S.StudentConfig(arch="unet", model_kwargs={"decoder_channels": [16, 16, 8, 8, 8]}))
    check_model(S.StudentConfig(arch="unet", encoder="tu-resnet18", model_kwargs={"drop_rate": 0.1}))
