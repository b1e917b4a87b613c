"""The Python examples of docs/DATA.md and docs/SAM.md run as printed.

Each block is read from its document (an edit there is tested), run in a folder
holding what its relative paths name, with its free names bound to real inputs
of the documented kinds; the results are checked against what the text says
(fact names and shapes; SamPredictor's logits; one cached embedding an image)."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fuzzylogic_seg.cli import main
from fuzzylogic_seg.data.synth_voc import generate_voc

DOCS = Path(__file__).resolve().parents[2] / "docs"


def block(doc, marker):
    text = (DOCS / doc).read_text(encoding="utf-8")
    found = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if marker in b]
    assert len(found) == 1, f"expected one python block of {doc} with {marker!r}, found {len(found)}"
    return found[0]


def run(code, doc, ns):
    exec(compile(code, str(DOCS / doc), "exec"), ns)  # the docs' own code, not user data
    return ns


def test_data_md_loader_and_facts(tmp_path, monkeypatch, one_thread):
    root = tmp_path / "voc"
    generate_voc(root, seed=0, n_train=3, n_val=1)
    monkeypatch.chdir(tmp_path)  # the block reads weak labels from "weak/"
    assert main(["data", "weak", "--dataset", "voc", "--root", str(root), "--split", "train",
                 "--kinds", "boxes", "--out", "weak"]) == 0
    code = block("DATA.md", "build_facts(").replace("num_workers=2", "num_workers=0")
    ns = run(code, "DATA.md", {"root": root})
    batch, facts = ns["batch"], ns["facts"]
    b, _, h, w = batch["image"].shape
    assert max(h, w) == 512  # ResizePad(512)
    n = facts["inbox"].shape[1]
    assert facts["inbox"].shape == (b, n, h, w) and facts["rowin"].shape == (b, n, h)
    assert facts["colin"].shape == (b, n, w) and facts["outside"].shape == (b, h, w)
    assert facts["overlap"].shape == (b, n, n)
    assert "gt" not in batch  # with_gt=False: the masks are never opened


@pytest.fixture(scope="module")
def sam_inputs():
    from fuzzylogic_seg.sam.build import load_sam

    sam = load_sam("embedded")
    g = np.random.default_rng(0)
    image = g.integers(0, 256, (3, 90, 130), dtype=np.uint8)
    boxes = torch.tensor([[10.0, 12.0, 70.0, 80.0], [50.0, 5.0, 125.0, 60.0]])
    return sam, image, boxes


def test_sam_md_forward_equals_sampredictor(sam_inputs, monkeypatch, one_thread):
    from segment_anything import SamPredictor

    import fuzzylogic_seg.sam as fsam

    sam, image, boxes = sam_inputs
    monkeypatch.setattr(fsam, "load_sam", lambda *a, **k: sam)  # the shipped embedded SAM, loaded once
    ns = run(block("SAM.md", "model.postprocess("), "SAM.md",
             {"image_uint8_chw": torch.from_numpy(image), "boxes_xyxy": boxes, "H": 90, "W": 130})
    logits = ns["logits"]
    assert logits.shape == (2, 1, 90, 130)
    pred = SamPredictor(sam)
    pred.set_image(np.ascontiguousarray(image.transpose(1, 2, 0)))
    want, _, _ = pred.predict_torch(None, None, pred.transform.apply_boxes_torch(boxes, (90, 130)),
                                    multimask_output=False, return_logits=True)
    torch.testing.assert_close(logits.detach(), want, atol=1e-4, rtol=1e-4)


def test_sam_md_embedding_cache(sam_inputs, tmp_path, monkeypatch, one_thread):
    from fuzzylogic_seg.sam import PromptableSAM

    sam, image, _ = sam_inputs
    model = PromptableSAM(sam)
    monkeypatch.chdir(tmp_path)  # the block caches under "runs/emb"
    images = [torch.from_numpy(image), torch.from_numpy(image[:, :60, :80].copy())]  # uint8 [3, H, W]
    ns = run(block("SAM.md", "EmbeddingCache.for_model("), "SAM.md",
             {"model": model, "ids": ["a", "b"], "images": images, "torch": torch})
    emb = ns["emb"]
    assert emb.shape == (2, model.embed_dim) + model.embedding_size and emb.dtype == torch.float32
    assert len(list((tmp_path / "runs" / "emb").rglob("*.pt"))) == 2
    x, _ = model.preprocess(images[1])
    with torch.no_grad():
        direct = model.embed(x)[0]
    torch.testing.assert_close(emb[1], direct, atol=2e-2, rtol=2e-3)  # stored in fp16
