"""PromptableSAM equals segment_anything's SamPredictor (the reference) and keeps gradients."""
import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from fuzzylogic_seg.errors import ConfigError
from fuzzylogic_seg.sam.build import TINY_CONFIG, EmbeddedConfig, build_embedded
from fuzzylogic_seg.sam.forward import PromptableSAM

TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/seg/conftest.py)


@pytest.fixture(scope="module", params=["tiny", "embedded"])
def sam(request, varied_sam):
    return varied_sam(TINY_CONFIG if request.param == "tiny" else EmbeddedConfig())


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _chw(img):
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()


def _check(a, b):
    b = b.detach().cpu().numpy()
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= TOL
    assert np.abs(a).max() > 1e-3  # a non-trivial output was compared


@pytest.mark.parametrize("multimask", [False, True])
def test_box_prompt_equals_sampredictor(sam, multimask):
    img = _image(90, 131)
    pred = SamPredictor(sam)
    pred.set_image(img)
    box = np.array([12.3, 20.0, 85.7, 71.0])
    ref, ref_iou, ref_low = pred.predict(box=box, multimask_output=multimask, return_logits=True)
    model = PromptableSAM(sam)
    x, input_size = model.preprocess(_chw(img))
    low, iou = model.decode(model.embed(x), boxes=torch.tensor(box)[None], multimask=multimask,
                            orig_size=(90, 131))
    logits = model.postprocess(low, input_size, (90, 131))
    assert logits.shape == (1, 3 if multimask else 1, 90, 131)
    _check(ref, logits[0])
    _check(ref_low, low[0])
    _check(ref_iou, iou[0])


@pytest.mark.parametrize("multimask", [False, True])
def test_point_prompts_equal_sampredictor(sam, multimask):
    img = _image(140, 97, seed=1)  # portrait: padding on the right
    pred = SamPredictor(sam)
    pred.set_image(img)
    pts = np.array([[30.0, 40.0], [60.5, 100.0], [10.0, 12.0]])
    labels = np.array([1, 0, 1])
    ref, ref_iou, _ = pred.predict(point_coords=pts, point_labels=labels,
                                   multimask_output=multimask, return_logits=True)
    logits, iou = PromptableSAM(sam)(_chw(img), points=torch.tensor(pts)[None],
                                     point_labels=torch.tensor(labels)[None], multimask=multimask)
    _check(ref, logits[0])
    _check(ref_iou, iou[0])


def test_box_and_points_together_and_numpy_input(sam):
    img = _image(64, 200, seed=2)
    pred = SamPredictor(sam)
    pred.set_image(img)
    box, pts, labels = np.array([5.0, 3.0, 150.0, 60.0]), np.array([[40.0, 30.0]]), np.array([1])
    ref, _, _ = pred.predict(point_coords=pts, point_labels=labels, box=box,
                             multimask_output=False, return_logits=True)
    logits, _ = PromptableSAM(sam)(img, boxes=torch.tensor(box)[None],
                                   points=torch.tensor(pts)[None],
                                   point_labels=torch.tensor(labels)[None])
    _check(ref, logits[0])


def test_batched_prompts_over_several_images(sam):
    """Prompts of two images in one decoder call equal one SamPredictor call per prompt."""
    imgs = [_image(80, 120, seed=3), _image(150, 70, seed=4)]
    boxes = [np.array([[4.0, 5.0, 60.0, 70.0], [50.0, 10.0, 119.0, 79.0]]),
             np.array([[10.0, 20.0, 60.0, 140.0]])]
    model = PromptableSAM(sam)
    x, ins, origs = model.preprocess_batch([_chw(im) for im in imgs])
    assert x.shape[0] == 2 and origs == [(80, 120), (150, 70)]
    emb = model.embed(x)
    all_boxes = torch.tensor(np.concatenate(boxes))
    index = torch.tensor([0, 0, 1])
    low, iou = model.decode(emb, boxes=all_boxes, image_index=index, orig_size=origs,
                            multimask=True)
    pred = SamPredictor(sam)
    row = 0
    for i, im in enumerate(imgs):
        pred.set_image(im)
        for b in boxes[i]:
            ref, ref_iou, _ = pred.predict(box=b, multimask_output=True, return_logits=True)
            _check(ref, model.postprocess(low[row:row + 1], ins[i], origs[i])[0])
            _check(ref_iou, iou[row])
            row += 1


def test_padded_point_labels_in_a_batch(sam):
    """Label -1 pads prompts to a common number of points (PromptEncoder's 'not a point'):
    each row equals SamPredictor given the same (padded) points."""
    img = _image(100, 100, seed=5)
    pred = SamPredictor(sam)
    pred.set_image(img)
    model = PromptableSAM(sam)
    x, ins = model.preprocess(_chw(img))
    emb = model.embed(x)
    pts = torch.tensor([[[20.0, 30.0], [0.0, 0.0]], [[50.0, 60.0], [70.0, 10.0]]])
    labels = torch.tensor([[1, -1], [1, 0]])
    low, _ = model.decode(emb, points=pts, point_labels=labels, orig_size=(100, 100))
    for row in range(2):
        ref, _, _ = pred.predict(point_coords=pts[row].numpy(), point_labels=labels[row].numpy(),
                                 multimask_output=False, return_logits=True)
        _check(ref, model.postprocess(low[row:row + 1], ins, (100, 100))[0])


def test_gradients_flow_to_decoder_prompt_encoder_and_encoder(varied_sam):
    sam = varied_sam(TINY_CONFIG, seed=1)
    model = PromptableSAM(sam)
    img = _chw(_image(50, 64, seed=6))
    logits, iou = model(img, boxes=torch.tensor([[5.0, 5.0, 40.0, 30.0]]), multimask=True)
    (logits.sigmoid().mean() + iou.sum()).backward()
    for part in (sam.mask_decoder, sam.prompt_encoder.point_embeddings, sam.image_encoder):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_preprocess_torch_is_close_to_pil_preprocess():
    sam = build_embedded(TINY_CONFIG)
    model = PromptableSAM(sam)
    rng = np.random.default_rng(7)
    # A smooth image: resampling filters agree on smooth content, not on white noise.
    small = rng.integers(0, 256, (6, 9, 3)).astype(np.uint8)
    from PIL import Image
    img = np.asarray(Image.fromarray(small).resize((180, 120), Image.BICUBIC))
    a, ia = model.preprocess(_chw(img))
    b, ib = model.preprocess_torch(_chw(img)[None].float().requires_grad_())
    assert ia == ib == model.input_size((120, 180)) == (43, 64)
    assert (a - b).abs().max() < 0.05  # in normalised units: ~3 grey levels
    assert b.requires_grad


def test_errors_are_actionable():
    model = PromptableSAM(build_embedded(TINY_CONFIG))
    with pytest.raises(ConfigError, match=r"uint8 tensor \[3, H, W\]"):
        model.preprocess(torch.zeros(3, 10, 10))
    emb = torch.zeros(2, 32, 4, 4)
    with pytest.raises(ConfigError, match="image_index"):
        model.decode(emb, boxes=torch.zeros(1, 4))
    with pytest.raises(ConfigError, match="point_labels"):
        model.decode(emb[:1], points=torch.zeros(1, 2, 2), point_labels=torch.zeros(1, 3))
    with pytest.raises(ConfigError, match="boxes must be"):
        model.decode(emb[:1], boxes=torch.zeros(4))
    with pytest.raises(ConfigError, match="give boxes"):
        model.decode(emb[:1])


def test_orig_size_may_be_a_tensor_floats_or_one_per_image(varied_sam):
    from fuzzylogic_seg.errors import ConfigError

    model = PromptableSAM(varied_sam(TINY_CONFIG))
    x, _ = model.preprocess(torch.from_numpy(_image(40, 60)).permute(2, 0, 1).contiguous())
    emb = model.embed(x)
    box = torch.tensor([[5.0, 6.0, 30.0, 33.0]])
    ref = model.decode(emb, boxes=box, orig_size=(40, 60))[0]
    for size in (torch.tensor([40, 60]), (40.0, 60.0), [(40, 60)], np.array([40, 60])):
        assert torch.equal(model.decode(emb, boxes=box, orig_size=size)[0], ref)
    with pytest.raises(ConfigError, match="orig_size must be"):
        model.decode(emb, boxes=box, orig_size=(40, 60, 3))
