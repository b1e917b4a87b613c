"""A differentiable, batched, prompted SAM forward that equals SamPredictor.

``Sam.forward`` and ``SamPredictor`` run under ``torch.no_grad``, so fine-tuning
calls the three parts directly: ``preprocess`` (exactly SamPredictor's
ResizeLongestSide + normalisation + padding), ``embed`` (image encoder),
``decode`` (prompt encoder + mask decoder, prompts in original image
coordinates) and ``postprocess`` (== ``Sam.postprocess_masks``).

``decode`` batches prompts of several images in one decoder call: each prompt
names its image (``image_index``) and the image embedding is gathered per
prompt, where ``MaskDecoder.predict_masks`` would repeat one image's embedding.
The mask decoder's arithmetic is otherwise the same, step for step (tested
against SamPredictor to 1e-4).
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..devices import to_device
from .padded import masks_and_iou, padded_predict_masks

Size = Tuple[int, int]


def _to_hwc_uint8(image) -> np.ndarray:
    """uint8 Tensor [3, H, W] or numpy [H, W, 3] -> numpy HWC uint8 (SamPredictor's input)."""
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ConfigError(f"image: expected a uint8 tensor [3, H, W], got "
                              f"{image.dtype} {tuple(image.shape)}")
        return image.detach().cpu().permute(1, 2, 0).contiguous().numpy()
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ConfigError(f"image: expected a uint8 array [H, W, 3], got {arr.dtype} {arr.shape}")
    return arr


class PromptableSAM(nn.Module):
    """Wraps a ``segment_anything`` ``Sam``; every step keeps the autograd graph."""

    def __init__(self, sam: nn.Module):
        super().__init__()
        from segment_anything.utils.transforms import ResizeLongestSide

        self.sam = sam
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)

    # -------------------------------------------------------------- helpers
    @property
    def img_size(self) -> int:
        return int(self.sam.image_encoder.img_size)

    @property
    def device(self) -> torch.device:
        return self.sam.pixel_mean.device

    @property
    def embed_dim(self) -> int:
        return int(self.sam.prompt_encoder.embed_dim)

    @property
    def embedding_size(self) -> Size:
        return tuple(self.sam.prompt_encoder.image_embedding_size)

    def input_size(self, orig_size: Size) -> Size:
        """Size (h, w) of an image of `orig_size` after ResizeLongestSide."""
        return self.transform.get_preprocess_shape(int(orig_size[0]), int(orig_size[1]),
                                                   self.img_size)

    # ----------------------------------------------------------- preprocess
    def preprocess(self, image) -> Tuple[torch.Tensor, Size]:
        """uint8 [3, H, W] tensor (or HWC array) -> ([1, 3, S, S], input_size), as
        SamPredictor.set_image: PIL resize of the long side to S, normalise, pad."""
        arr = _to_hwc_uint8(image)
        if self.sam.image_format != "RGB":
            arr = arr[..., ::-1]
        resized = self.transform.apply_image(arr)
        x = to_device(torch.as_tensor(resized), self.device).permute(2, 0, 1).contiguous()[None]
        return self.sam.preprocess(x), (int(x.shape[-2]), int(x.shape[-1]))

    def preprocess_batch(self, images: Sequence) -> Tuple[torch.Tensor, List[Size], List[Size]]:
        """Several images of any sizes -> ([B, 3, S, S], input_sizes, orig_sizes)."""
        xs, ins, origs = [], [], []
        for im in images:
            arr = _to_hwc_uint8(im)
            x, ins_ = self.preprocess(arr)
            xs.append(x)
            ins.append(ins_)
            origs.append((int(arr.shape[0]), int(arr.shape[1])))
        return torch.cat(xs, 0), ins, origs

    def preprocess_torch(self, images: torch.Tensor) -> Tuple[torch.Tensor, Size]:
        """Differentiable variant for float images [B, 3, H, W] in 0..255: antialiased
        bilinear resize instead of PIL's (close to, not bit-equal with, `preprocess`)."""
        h, w = images.shape[-2:]
        size = self.input_size((h, w))
        x = F.interpolate(images.float(), size, mode="bilinear", align_corners=False,
                          antialias=True)
        return self.sam.preprocess(x), size

    # ---------------------------------------------------------------- embed
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed [B, 3, S, S] -> image embeddings [B, C, h, w]."""
        return self.sam.image_encoder(x)

    # --------------------------------------------------------------- decode
    def _scale(self, orig_sizes: Sequence[Size], index: torch.Tensor) -> torch.Tensor:
        """Per-prompt (sx, sy) factors of ResizeLongestSide.apply_coords, float64."""
        f = []
        for oh, ow in orig_sizes:
            nh, nw = self.input_size((oh, ow))
            f.append((nw / ow, nh / oh))
        # built on the host, copied without blocking (a blocking copy would sync)
        return to_device(torch.tensor(f, dtype=torch.float64), index.device)[index]

    def decode(self, emb: torch.Tensor, boxes: Optional[torch.Tensor] = None,
               points: Optional[torch.Tensor] = None,
               point_labels: Optional[torch.Tensor] = None, multimask: bool = False,
               orig_size: Union[None, Size, Sequence[Size]] = None,
               image_index: Optional[torch.Tensor] = None,
               mask_input: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Masks for P prompts -> (low-res logits [P, M, 4h, 4w], predicted IoU [P, M]).

        emb: [B, C, h, w]. boxes: [P, 4] xyxy; points: [P, K, 2] xy with
        point_labels [P, K] (1 positive, 0 negative, -1 padding); coordinates in
        the original image's pixels when `orig_size` is given (one (H, W) for all
        images or one per image), else already in the model's input frame.
        image_index: [P] image of each prompt (default: all 0, needs B == 1).
        mask_input: [P, 1, 4h, 4w] low-res logits of a previous round.
        M = 3 with `multimask`, else 1 (SAM's single-output token).
        """
        sparse, dense, image_index = self._prompt_embeddings(
            emb, boxes, points, point_labels, orig_size, image_index, mask_input)
        low_res, iou = predict_masks(self.sam.mask_decoder, emb[image_index] + dense,
                                     self._dense_pe().expand(sparse.shape[0], -1, -1, -1), sparse)
        sl = slice(1, None) if multimask else slice(0, 1)
        return low_res[:, sl], iou[:, sl]

    def decode_groups(self, emb: torch.Tensor, groups: Sequence[Mapping[str, Any]]
                      ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """``decode`` for several groups of prompts in one mask-decoder pass.

        Each group is a mapping of ``decode``'s keyword arguments (``boxes``,
        ``points``, ``point_labels``, ``multimask``, ``orig_size``, ``image_index``,
        ``mask_input``); groups may differ in structure (a box, one point, three
        points...). Their prompt tokens are padded to one length and the padding is
        masked out of every attention (``padded_predict_masks``), so each group gets
        what ``decode`` gives it, to float rounding (tested), for one pass over the
        decoder instead of one per group: pretraining mixes four prompt kinds a
        step, and at 128 px a pass is mostly fixed cost.
        """
        if not groups:
            return []
        known = {"boxes", "points", "point_labels", "multimask", "orig_size", "image_index",
                 "mask_input"}
        parts = []
        for g in groups:
            if set(g) - known:
                raise ConfigError(f"decode_groups: unknown keys {sorted(set(g) - known)}")
            parts.append(self._prompt_embeddings(
                emb, g.get("boxes"), g.get("points"), g.get("point_labels"), g.get("orig_size"),
                g.get("image_index"), g.get("mask_input")))
        if len(parts) == 1:
            sparse, dense, index = parts[0]
            valid = None
        else:
            n = max(p[0].shape[1] for p in parts)
            sparse = torch.cat([F.pad(p[0], (0, 0, 0, n - p[0].shape[1])) for p in parts])
            tok = torch.arange(n, device=sparse.device)
            valid = torch.cat([(tok < p[0].shape[1]).expand(p[0].shape[0], n) for p in parts])
            dense = torch.cat([p[1] for p in parts])
            index = torch.cat([p[2] for p in parts])
        low_res, iou = padded_predict_masks(self.sam.mask_decoder, emb[index] + dense,
                                            self._dense_pe(), sparse, valid)
        out, start = [], 0
        for g, p in zip(groups, parts):
            stop = start + p[0].shape[0]
            sl = slice(1, None) if g.get("multimask", False) else slice(0, 1)
            out.append((low_res[start:stop, sl], iou[start:stop, sl]))
            start = stop
        return out

    def _dense_pe(self) -> torch.Tensor:
        with torch.autocast(self.device.type, enabled=False):  # (see _prompt_embeddings)
            return self.sam.prompt_encoder.get_dense_pe()

    def _prompt_embeddings(self, emb, boxes, points, point_labels, orig_size, image_index,
                           mask_input) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The prompt encoder's (sparse [P, N, C], dense [P, C, h, w]) and the image
        of each prompt [P], with ``decode``'s checks and coordinate scaling."""
        if boxes is None and points is None and mask_input is None:
            raise ConfigError("decode: give boxes, points or a mask_input")
        n_prompts = next(t.shape[0] for t in (boxes, points, mask_input) if t is not None)
        dev = emb.device
        if image_index is None:
            if emb.shape[0] != 1:
                raise ConfigError(f"decode: {emb.shape[0]} image embeddings need an image_index "
                                  "naming the image of each prompt")
            image_index = torch.zeros(n_prompts, dtype=torch.long, device=dev)
        image_index = image_index.to(dev, torch.long)
        if orig_size is not None:
            # (H, W) for all images, or one per image; ints, numpy or tensor values alike
            arr = np.asarray(orig_size.tolist() if isinstance(orig_size, torch.Tensor)
                             else orig_size)
            if arr.ndim not in (1, 2) or arr.shape[-1] != 2:
                raise ConfigError(f"decode: orig_size must be (H, W) or one (H, W) per image, "
                                  f"got shape {tuple(arr.shape)}")
            rows = arr.reshape(-1, 2)
            sizes = [(int(h), int(w)) for h, w in rows]
            if arr.ndim == 1:
                sizes = sizes * emb.shape[0]
            scale = self._scale(sizes, image_index)  # [P, 2]
        pe = self.sam.prompt_encoder
        coords = labels = None
        if points is not None:
            if point_labels is None or point_labels.shape != points.shape[:2]:
                raise ConfigError(f"decode: point_labels must be [P, K] = {tuple(points.shape[:2])}, "
                                  f"got {None if point_labels is None else tuple(point_labels.shape)}")
            coords = points.to(dev)
            # float64 products, then float32: as apply_coords (numpy) + torch.as_tensor(float).
            coords = (coords.double() * scale[:, None, :] if orig_size is not None else coords).float()
            labels = point_labels.to(dev, torch.int)
        if boxes is not None:
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise ConfigError(f"decode: boxes must be [P, 4], got {tuple(boxes.shape)}")
            boxes = boxes.to(dev)
            if orig_size is not None:
                boxes = (boxes.double().reshape(-1, 2, 2) * scale[:, None, :]).float().reshape(-1, 4)
            else:
                boxes = boxes.float()
        # The prompt encoder outside autocast: its random Fourier features multiply
        # pixel coordinates by a Gaussian matrix before sin/cos, and half-precision
        # phases would move every positional encoding (the reason the matrix is
        # stored fp32 in the embedded weights).
        with torch.autocast(dev.type, enabled=False):
            sparse, dense = pe(points=None if coords is None else (coords, labels), boxes=boxes,
                               masks=None if mask_input is None else mask_input.float())
        return sparse, dense, image_index

    # ---------------------------------------------------------- postprocess
    def postprocess(self, low_res: torch.Tensor, input_size: Size, orig_size: Size) -> torch.Tensor:
        """Low-res logits -> logits at the original image size (Sam.postprocess_masks)."""
        return self.sam.postprocess_masks(low_res, tuple(input_size), tuple(orig_size))

    def upscale(self, low_res: torch.Tensor) -> torch.Tensor:
        """Low-res logits -> logits on the padded S x S input frame (postprocess's first step)."""
        return F.interpolate(low_res, (self.img_size, self.img_size), mode="bilinear",
                             align_corners=False)

    # ------------------------------------------------------------ one image
    def forward(self, image, boxes: Optional[torch.Tensor] = None,
                points: Optional[torch.Tensor] = None,
                point_labels: Optional[torch.Tensor] = None,
                multimask: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """One image, P prompts in its pixel coordinates -> (logits [P, M, H, W], iou [P, M])."""
        x, input_size = self.preprocess(image)
        orig = tuple(image.shape[-2:]) if isinstance(image, torch.Tensor) else tuple(np.shape(image)[:2])
        low, iou = self.decode(self.embed(x), boxes=boxes, points=points,
                               point_labels=point_labels, multimask=multimask, orig_size=orig)
        return self.postprocess(low, input_size, orig), iou


def predict_masks(decoder: nn.Module, src: torch.Tensor, pos_src: torch.Tensor,
                  sparse: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``MaskDecoder.predict_masks`` with the image embedding already per prompt.

    src: [P, C, h, w] (image embedding + dense prompt embedding), pos_src:
    [P, C, h, w], sparse: [P, N, C]. Returns all mask tokens' logits [P, 4, 4h, 4w]
    and IoU predictions [P, 4]. Follows segment_anything/modeling/mask_decoder.py.
    """
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
    tokens = torch.cat((output_tokens, sparse), dim=1)
    hs, keys = decoder.transformer(src, pos_src, tokens)
    return masks_and_iou(decoder, hs, keys, src.shape)
