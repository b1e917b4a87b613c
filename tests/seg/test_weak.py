"""Weak-label simulation (against brute force), morphology, and the weak-label folder."""
import hashlib
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzylogic_seg.errors import ConfigError, DatasetError
from fuzzylogic_seg.weak.morph import connected_components, depth_and_skeleton, dilate, erode
from fuzzylogic_seg.weak.simulate import (SimConfig, choose_kinds, image_seed, parse_kinds, parse_mix,
                                          simulate_weak)
from fuzzylogic_seg.weak.store import WeakStore, label_path, read_weak, save_split
from fuzzylogic_seg.weak.types import WeakLabels

torch.set_num_threads(1)
masks = st.integers(3, 12).flatmap(lambda h: st.integers(3, 12).flatmap(
    lambda w: st.lists(st.booleans(), min_size=h * w, max_size=h * w).map(
        lambda v: torch.tensor(v).reshape(h, w))))


# ------------------------------------------------------------ brute force
def bf_depth(m):
    """Chessboard distance to the nearest pixel outside the region (the frame is outside)."""
    m = np.asarray(m, dtype=bool)
    h, w = m.shape
    oy, ox = np.nonzero(~m)
    out = np.zeros((h, w), dtype=np.int64)
    for y, x in zip(*np.nonzero(m)):
        d = min(y + 1, x + 1, h - y, w - x)
        if oy.size:
            d = min(d, int(np.maximum(abs(oy - y), abs(ox - x)).min()))
        out[y, x] = d
    return torch.from_numpy(out)


def bf_components(m):
    h, w = m.shape
    lab = [[0] * w for _ in range(h)]
    n = 0
    for y in range(h):
        for x in range(w):
            if m[y, x] and not lab[y][x]:
                n += 1
                stack = [(y, x)]
                lab[y][x] = n
                while stack:
                    cy, cx = stack.pop()
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            yy, xx = cy + dy, cx + dx
                            if 0 <= yy < h and 0 <= xx < w and m[yy, xx] and not lab[yy][xx]:
                                lab[yy][xx] = n
                                stack.append((yy, xx))
    return lab, n


@settings(max_examples=40, deadline=None)
@given(m=masks)
def test_erode_dilate_match_brute_force(m):
    h, w = m.shape
    d = dilate(m, 1)
    e = erode(m, 1)
    e_in = erode(m, 1, frame_outside=False)
    for y in range(h):
        for x in range(w):
            nb = [(yy, xx) for yy in range(y - 1, y + 2) for xx in range(x - 1, x + 2)]
            inside = [(yy, xx) for yy, xx in nb if 0 <= yy < h and 0 <= xx < w]
            assert d[y, x] == any(bool(m[p]) for p in inside)
            assert e[y, x] == (len(inside) == 9 and all(bool(m[p]) for p in inside))
            assert e_in[y, x] == all(bool(m[p]) for p in inside)


@settings(max_examples=30, deadline=None)
@given(m=masks)
def test_depth_is_chessboard_distance_and_skeleton_inside(m):
    depth, level, max_depth = depth_and_skeleton(m.unsqueeze(0))
    assert torch.equal(depth[0], bf_depth(m))
    assert int(max_depth[0]) == int(bf_depth(m).max())
    assert not ((level[0] >= 0) & ~m).any()
    if m.any():  # the deepest level of a region is never empty
        assert (level[0] == int(max_depth[0]) - 1).any()


@settings(max_examples=40, deadline=None)
@given(m=masks)
def test_connected_components_match_flood_fill(m):
    cc = connected_components(m.unsqueeze(0))[0]
    lab, n = bf_components(m)
    assert int(cc.max()) == n
    # Same partition: a bijection between our labels and the flood fill's.
    pairs = {(int(a), b) for a, row_b in zip(cc.flatten(), sum(lab, [])) for b in [row_b]}
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


# --------------------------------------------------------------- simulate
def scene():
    """A VOC-like label map: two separate cats, a person, void borders."""
    lab = torch.zeros(60, 80, dtype=torch.long)
    lab[5:25, 5:30] = 8
    lab[40:55, 60:78] = 8
    lab[20:50, 35:55] = 15
    lab[19, 35:55] = 255
    return lab


def test_boxes_are_tight_boxes_of_components():
    lab = scene()
    w = simulate_weak(lab, ["boxes"], dataset="voc", num_classes=21, image_id="a")
    got = sorted(zip(w.box_labels.tolist(), w.boxes.int().tolist()))
    assert got == [(8, [5, 5, 30, 25]), (8, [60, 40, 78, 55]), (15, [35, 20, 55, 50])]


def test_refuge_boxes_disc_and_cup():
    lab = torch.zeros(50, 50, dtype=torch.long)
    lab[10:40, 12:38] = 1
    lab[18:30, 20:31] = 2
    w = simulate_weak(lab, ["boxes", "tags"], dataset="refuge", num_classes=3, image_id="a")
    assert w.box_labels.tolist() == [1, 2]
    assert w.boxes.int().tolist() == [[12, 10, 38, 40], [20, 18, 31, 30]]
    assert w.tags.tolist() == [False, True, True]


def test_scribbles_lie_inside_their_class_away_from_borders():
    lab = scene()
    cfg = SimConfig(scribble_width=1, scribble_min_margin=2)
    w = simulate_weak(lab, ["scribbles"], dataset="voc", num_classes=21, image_id="a", config=cfg)
    scr = w.scribble
    on = scr != 255
    assert (lab[on] == scr[on]).all()
    assert set(scr[on].unique().tolist()) == {0, 8, 15}          # every class, background too
    for c in (0, 8, 15):
        dist = bf_depth(lab == c)
        assert (dist[scr == c] > 2).all()                          # at least the margin inside
        assert (scr == c).sum() < 0.35 * (lab == c).sum()          # strokes, not fills
    # Each cat instance carries a stroke.
    assert (scr[5:25, 5:30] == 8).any() and (scr[40:55, 60:78] == 8).any()


def test_points_inside_their_regions_at_pixel_centres():
    lab = scene()
    w = simulate_weak(lab, ["points"], dataset="voc", num_classes=21, image_id="a",
                      config=SimConfig(points_per_region=2, point_background=1))
    assert sorted(w.point_labels.tolist()) == [0, 8, 8, 8, 8, 15, 15]
    frac = w.points - w.points.floor()
    assert (frac == 0.5).all()
    px, py = w.points.floor().long().unbind(1)
    assert torch.equal(lab[py, px], w.point_labels)


def test_seeded_by_image_id_not_order_or_other_kinds():
    lab = scene()
    kw = dict(dataset="voc", num_classes=21, seed=5)
    a = simulate_weak(lab, ["boxes", "scribbles", "points"], image_id="x", **kw,
                      config=SimConfig(box_jitter=0.1, scribble_keep=0.5))
    simulate_weak(torch.flip(lab, [0]), ["points"], image_id="other", **kw)   # another image first
    b = simulate_weak(lab, ["points", "scribbles", "boxes"], image_id="x", **kw,
                      config=SimConfig(box_jitter=0.1, scribble_keep=0.5))
    assert a.equal(b)
    c = simulate_weak(lab, ["boxes"], image_id="x", **kw, config=SimConfig(box_jitter=0.1))
    assert torch.equal(c.boxes, a.boxes)
    d = simulate_weak(lab, ["points"], image_id="y", **kw)
    assert not torch.equal(d.points, a.points)
    # The seed is a stable hash (not Python's salted hash()).
    assert image_seed(5, "x", "points") == int.from_bytes(
        hashlib.sha256(b"5/x/points").digest()[:8], "little") & (2 ** 63 - 1)


def test_jitter_moves_boxes_within_the_image():
    lab = scene()
    w0 = simulate_weak(lab, ["boxes"], dataset="voc", num_classes=21, image_id="a")
    w1 = simulate_weak(lab, ["boxes"], dataset="voc", num_classes=21, image_id="a",
                       config=SimConfig(box_jitter=0.2))
    b = w1.boxes
    assert not torch.equal(b, w0.boxes)
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= 80).all() and (b[:, 3] <= 60).all()
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    ext = (w0.boxes[:, 2:] - w0.boxes[:, :2]).repeat(1, 2)
    assert ((b - w0.boxes).abs() <= 0.2 * ext + 0.5).all()


def test_large_images_use_the_work_size():
    lab = torch.zeros(1300, 1100, dtype=torch.long)
    yy, xx = torch.meshgrid(torch.arange(1300), torch.arange(1100), indexing="ij")
    r = ((yy - 650) ** 2 + (xx - 500) ** 2).float().sqrt()
    lab[r < 200] = 1
    lab[r < 90] = 2
    w = simulate_weak(lab, ["scribbles", "points"], dataset="refuge", num_classes=3, image_id="a")
    on = w.scribble != 255
    assert (lab[on] == w.scribble[on]).all()
    assert set(w.scribble[on].unique().tolist()) == {0, 1, 2}
    px, py = w.points.floor().long().unbind(1)
    assert torch.equal(lab[py, px], w.point_labels)


def test_kinds_and_mix_parsing():
    assert parse_kinds("boxes, tags") == ("boxes", "tags")
    with pytest.raises(ConfigError):
        parse_kinds("boxes,polygons")
    mix = parse_mix("boxes:3,scribbles+tags:1")
    assert mix == [(("boxes",), 0.75), (("scribbles", "tags"), 0.25)]
    picks = [choose_kinds(mix, 0, f"im{i}") for i in range(400)]
    share = sum(p == ("boxes",) for p in picks) / 400
    assert 0.68 < share < 0.82
    assert picks == [choose_kinds(mix, 0, f"im{i}") for i in range(400)]


# ------------------------------------------------------------------ store
def test_store_round_trip_and_errors(tmp_path):
    lab = scene()
    weaks = {i: simulate_weak(lab, ["boxes", "scribbles", "points", "tags"], dataset="voc",
                              num_classes=21, image_id=i) for i in ("a", "b")}
    weaks["c"] = WeakLabels(boxes=[[1.5, 2, 3, 4]], box_labels=[3], size=(60, 80))
    save_split(tmp_path, weaks.items(), dataset="voc", split="train",
               class_names=[str(i) for i in range(21)])
    store = WeakStore(tmp_path)
    assert store.ids == ["a", "b", "c"] and store.dataset == "voc"
    for i, w in weaks.items():
        assert store.load(i).equal(w)
    assert store.load("c").kinds() == ("boxes",)
    manifest = json.loads((tmp_path / "weak.json").read_text())
    assert manifest["images_with_kind"]["scribbles"] == 2
    with pytest.raises(DatasetError, match="not in this weak-label folder"):
        store.load("zzz")
    # A box outside the image is caught on reading, naming the JSON file.
    d = json.loads(label_path(tmp_path, "c").read_text())
    d["boxes"] = [[0, 0, 81, 10]]
    label_path(tmp_path, "c").write_text(json.dumps(d))
    with pytest.raises(DatasetError, match="outside") as e:
        read_weak(tmp_path, "c")
    assert e.value.path == label_path(tmp_path, "c")
    with pytest.raises(DatasetError, match="weak.json"):
        WeakStore(tmp_path / "nothing")


def test_scribble_keep_shortens_strokes_and_config_is_checked():
    from fuzzylogic_seg.errors import ConfigError

    lab = scene()
    kw = dict(dataset="voc", num_classes=21, image_id="a")
    full = simulate_weak(lab, ["scribbles"], **kw).scribble
    part = simulate_weak(lab, ["scribbles"], config=SimConfig(scribble_keep=0.4), **kw).scribble
    on = part != 255
    assert on.sum() < (full != 255).sum()
    assert (part[on] == full[on]).all()                       # a part of the full strokes
    assert set(part[on].unique().tolist()) == {0, 8, 15}      # every class keeps a stroke
    with pytest.raises(ConfigError, match="scribble_width"):
        SimConfig(scribble_width=0)


def test_a_class_too_thin_for_the_working_size_still_gets_a_stroke_and_a_point():
    """Scribbles and points are drawn at <= 512 px; a 1-px line of a large image may
    vanish there: it is then drawn from its full-size pixels (DATA.md: thin regions
    still get a stroke)."""
    from fuzzylogic_seg.weak.simulate import SimConfig, simulate_points, simulate_scribble

    lab = torch.zeros(600, 1100, dtype=torch.long)
    lab[100:400, 200:600] = 9
    lab[300:550, 700:1000] = 11
    lab[51, 100:400] = 5  # one pixel high: gone at 512 / 1100 scale on most rows
    cfg = SimConfig()
    scr = simulate_scribble(lab, 21, cfg, torch.Generator().manual_seed(0))
    assert set(scr.unique().tolist()) == {0, 5, 9, 11, 255}
    assert bool(((scr != 255) <= (scr == lab) | (scr == 255)).all())  # strokes on their class
    pts, labs = simulate_points(lab, 21, cfg, torch.Generator().manual_seed(0))
    assert set(labs.tolist()) == {0, 5, 9, 11}
    xs, ys = pts[:, 0].floor().long(), pts[:, 1].floor().long()
    assert torch.equal(lab[ys, xs], labs)


def test_a_folder_without_the_chosen_kind_is_refused_by_name(tmp_path):
    lab = scene()
    weaks = {i: simulate_weak(lab, ["scribbles"], dataset="voc", num_classes=21, image_id=i)
             for i in ("a", "b")}
    save_split(tmp_path, weaks.items(), dataset="voc", split="train",
               class_names=[str(i) for i in range(21)])
    store = WeakStore(tmp_path)
    store.require_kind("scribbles")
    with pytest.raises(ConfigError, match=r"holds no boxes .*'scribbles': 2.*pass --weak scribbles"):
        store.require_kind("boxes")
