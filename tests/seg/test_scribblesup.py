"""ScribbleSup XML -> scribble PNGs: the published format, lines, conflicts, errors, CLI."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from fuzzylogic_seg.cli import main
from fuzzylogic_seg.data.base import image_size
from fuzzylogic_seg.data.scribblesup import line_pixels, rasterize, read_xml
from fuzzylogic_seg.data.synth_voc import generate_voc
from fuzzylogic_seg.data.voc import VOCSegmentation
from fuzzylogic_seg.errors import DatasetError

torch.set_num_threads(1)


def write_xml(path, w, h, strokes, filename="x.jpg"):
    """A file laid out as ScribbleSup's README shows it (folder, filename, size,
    segmented, one <polygon> with <tag> and <point><X><Y> per stroke)."""
    polys = "".join(
        "\t<polygon>\n\t\t<tag>%s</tag>\n%s\t</polygon>\n" % (
            tag, "".join(f"\t\t<point>\n\t\t\t<X>{x}</X>\n\t\t\t<Y>{y}</Y>\n\t\t</point>\n"
                         for x, y in pts))
        for tag, pts in strokes)
    path.write_text(
        "<annotation>\n\t<folder>anno</folder>\n\t<filename>%s</filename>\n"
        "\t<source>\n\t\t<database>PASCAL</database>\n\t</source>\n"
        "\t<size>\n\t\t<width>%d</width>\n\t\t<height>%d</height>\n\t\t<depth>3</depth>\n\t</size>\n"
        "\t<segmented>1</segmented>\n%s</annotation>\n" % (filename, w, h, polys))
    return path


def test_line_pixels_form_the_digital_straight_line():
    rng = np.random.default_rng(0)
    for _ in range(300):
        p0, p1 = rng.integers(-5, 40, 2), rng.integers(-5, 40, 2)
        px = line_pixels(p0, p1)
        n = max(abs(p1 - p0))
        assert len(px) == n + 1
        assert (px[0] == p0).all() and (px[-1] == p1).all()
        step = np.abs(np.diff(px, axis=0))
        assert (step.max(1) == 1).all() if n else True  # 8-connected, one step at a time
        # every pixel lies within half a pixel of the true line along the minor axis
        d = (p1 - p0).astype(float)
        major = int(np.argmax(np.abs(d)))
        minor = 1 - major
        if n:
            t = (px[:, major] - p0[major]) / d[major]
            exact = p0[minor] + t * d[minor]
            assert (np.abs(px[:, minor] - exact) <= 0.5 + 1e-9).all()


def test_a_file_in_the_published_format_becomes_class_indices(tmp_path):
    f = write_xml(tmp_path / "2007_000032.xml", 20, 12, [
        ("person", [(2, 3), (3, 3), (7, 3)]),    # a gap from x=3 to x=7: joined
        ("background", [(0, 11), (0, 8)]),
        ("plane", [(15, 1)]),                    # ScribbleSup's short name; a single point
    ])
    scr = read_xml(f)
    assert scr.size == (12, 20) and [s.tag for s in scr.strokes] == ["person", "background", "plane"]
    arr, st = rasterize(scr, path=f)
    expect = np.full((12, 20), 255, np.uint8)
    expect[3, 2:8] = 15      # person
    expect[8:12, 0] = 0      # background
    expect[1, 15] = 1        # aeroplane
    assert np.array_equal(arr, expect)
    assert st.strokes == 3 and st.points == 6 and st.clipped_points == 0
    assert st.pixels_per_class == {"background": 4, "aeroplane": 1, "person": 6}


def test_crossing_strokes_of_two_classes_leave_the_pixel_unlabelled(tmp_path):
    f = write_xml(tmp_path / "a.xml", 10, 10, [
        ("cat", [(0, 5), (9, 5)]), ("dog", [(5, 0), (5, 9)]), ("cat", [(5, 5), (5, 5)])])
    arr, st = rasterize(read_xml(f))
    assert arr[5, 5] == 255 and st.conflict_pixels == 1
    assert (arr[5, :5] == 8).all() and (arr[:5, 5] == 12).all()


def test_points_outside_the_image_are_clipped_and_counted(tmp_path):
    f = write_xml(tmp_path / "a.xml", 8, 6, [("bird", [(6, 2), (8, 2), (9, 6)])])
    arr, st = rasterize(read_xml(f))
    assert st.clipped_points == 2
    assert (arr[2, 6:8] == 3).all() and arr[5, 7] == 3 and arr.shape == (6, 8)


def test_width_widens_each_stroke_to_a_square_brush(tmp_path):
    f = write_xml(tmp_path / "a.xml", 12, 12, [("cow", [(3, 6), (8, 6)])])
    arr, _ = rasterize(read_xml(f), width=3)
    expect = np.full((12, 12), 255, np.uint8)
    expect[5:8, 2:10] = 10
    assert np.array_equal(arr, expect)


def test_unknown_tags_stop_or_follow_the_chosen_policy(tmp_path):
    f = write_xml(tmp_path / "2008_000001.xml", 6, 6, [("sky", [(0, 0), (5, 0)]),
                                                       ("car", [(0, 3), (5, 3)])])
    with pytest.raises(DatasetError, match="'sky' names no VOC class") as e:
        rasterize(read_xml(f), path=f)
    assert "2008_000001.xml" in str(e.value) and e.value.path == f
    bg, st = rasterize(read_xml(f), unknown="background")
    assert (bg[0] == 0).all() and st.unknown_tags == {"sky": 1}
    skip, _ = rasterize(read_xml(f), unknown="skip")
    assert (skip[0] == 255).all() and (skip[3] == 7).all()


@pytest.mark.parametrize("text, message", [
    ("<annotation><size><width>4</width>", "cannot read scribble annotation"),
    ("<annotation><polygon><tag>cat</tag></polygon></annotation>", "bad <size>"),
    ("<annotation><size><width>4</width><height>4</height></size><polygon><tag>cat</tag>"
     "<point><X>a</X><Y>1</Y></point></polygon></annotation>", "polygon 0 \\(cat\\), point 0"),
])
def test_broken_files_are_named(tmp_path, text, message):
    f = tmp_path / "bad.xml"
    f.write_text(text)
    with pytest.raises(DatasetError, match=message) as e:
        read_xml(f)
    assert e.value.path == f


def test_cli_converts_a_voc_split_that_the_loader_and_the_weak_labels_read(tmp_path, capsys):
    root = tmp_path / "voc"
    generate_voc(root, seed=2, n_train=3, n_val=1, size=(40, 60), progress=False)
    train = VOCSegmentation(root, "train", with_gt=False, kinds=("boxes",))
    xml = tmp_path / "pascal_2012"
    xml.mkdir()
    for k, it in enumerate(train.items[:2]):  # the third image has no scribbles
        h, w = image_size(it.image)
        write_xml(xml / f"{it.id}.xml", w, h, [("background", [(0, 0), (w - 1, 0)]),
                                               ("bird", [(k + 1, h - 1), (k + 1, h // 2)])])
    write_xml(xml / "not_in_split.xml", 5, 5, [("cat", [(0, 0)])])
    out = tmp_path / "scribbles"
    assert main(["data", "scribblesup", str(xml), "--out", str(out), "--root", str(root),
                 "--json", str(tmp_path / "s.json")]) == 0
    cap = capsys.readouterr()
    assert "have no XML file" in cap.err and train.items[2].id in cap.err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["converted"] == 2 and summary["missing"] == [train.items[2].id]
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(it.id for it in train.items[:2])
    png = Image.open(out / f"{train.items[0].id}.png")
    assert png.mode == "P"  # VOC palette, as SegmentationClass
    ds = VOCSegmentation(root, "train", scribble_dir=out, kinds=("scribbles",), ids=[
        it.id for it in train.items[:2]])
    s = ds[0]["weak"].scribble
    h, w = s.shape
    assert (s[0] == 0).all() and (s[h // 2:, 1] == 3).all()
    assert int((s != 255).sum()) == w + (h - h // 2)
    # with every image scribbled, the weak labels of the split take them
    it = train.items[2]
    h, w = image_size(it.image)
    write_xml(xml / f"{it.id}.xml", w, h, [("person", [(0, 1), (3, 1)])])
    assert main(["data", "scribblesup", str(xml), "--out", str(out), "--root", str(root)]) == 0
    assert main(["data", "weak", "--dataset", "voc", "--root", str(root), "--kinds", "scribbles",
                 "--scribbles", str(out), "--out", str(tmp_path / "weak")]) == 0
    scr = np.array(Image.open(tmp_path / "weak" / "scribbles" / f"{it.id}.png"))
    assert (scr[1, :4] == 15).all() and int((scr != 255).sum()) == 4
    # `data check --scribbles` over every split: val has none, which is not an error
    capsys.readouterr()
    assert main(["data", "check", "voc", str(root), "--scribbles", str(out)]) == 0
    report = capsys.readouterr().out
    assert "1 of 1 images of split 'val' have no scribble" in report
    assert "missing scribble" not in report
    assert main(["data", "check", "voc", str(root), "--scribbles", str(out), "--split", "train"]) == 0
    (out / f"{train.items[1].id}.png").unlink()  # a split named with --split must have them all
    capsys.readouterr()
    assert main(["data", "check", "voc", str(root), "--scribbles", str(out), "--split", "train"]) == 1
    assert "missing scribble" in capsys.readouterr().out
    assert main(["data", "scribblesup", str(xml), "--out", str(out), "--root", str(root)]) == 0
    # a split none of whose images has a file converts nothing: an error, not an empty folder
    capsys.readouterr()
    assert main(["data", "scribblesup", str(xml), "--out", str(tmp_path / "v"), "--root",
                 str(root), "--split", "val"]) != 0
    assert "none of the 1 images asked for has a file here" in capsys.readouterr().err
    # an image whose real size disagrees with the file's <size> is named
    it = train.items[0]
    write_xml(xml / f"{it.id}.xml", 7, 7, [("bird", [(0, 0)])])
    capsys.readouterr()
    assert main(["data", "scribblesup", str(xml), "--out", str(out), "--root", str(root)]) != 0
    err = capsys.readouterr().err
    assert f"{it.id}.xml: <size> says 7x7 but the image is {image_size(it.image)[1]}x" in err
