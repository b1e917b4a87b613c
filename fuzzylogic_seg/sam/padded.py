"""SAM's mask decoder over prompts padded to one number of tokens.

``MaskDecoder`` takes one prompt structure per call: every prompt of a call has
the same number of sparse tokens (a box is two, a point one plus SAM's padding
point...). Prompts of different structures are therefore decoded in separate
passes, and a small decoder's pass is mostly fixed cost (at 128 px, one pass
over 9 prompts costs 40% of one over 36). Here the sparse tokens of all prompts
are padded to one length and the padding is masked out of the attention that
reads tokens as keys (the tokens' self-attention and the image's attention to
the tokens), so each prompt gets what its own pass gives it, to float rounding.
Padding tokens still flow through the per-token layers as queries; nothing
reads them. The arithmetic is ``segment_anything.modeling.transformer`` step for
step (``TwoWayTransformer``, ``TwoWayAttentionBlock``, ``Attention``), run with
that module's own weights.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

from ..errors import ConfigError


def _attend(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            key_valid: Optional[torch.Tensor]) -> torch.Tensor:
    """``Attention.forward``; ``key_valid`` [P, 1, 1, Nk] bool masks keys out."""
    q = attn._separate_heads(attn.q_proj(q), attn.num_heads)
    k = attn._separate_heads(attn.k_proj(k), attn.num_heads)
    v = attn._separate_heads(attn.v_proj(v), attn.num_heads)
    scores = q @ k.permute(0, 1, 3, 2)
    scores = scores / math.sqrt(q.shape[-1])
    if key_valid is not None:
        # The lowest finite value, not -inf: exp underflows to exactly 0 all the
        # same, and no inf can meet an inf of the opposite sign (every row keeps
        # the output tokens, so it is never all masked).
        scores = scores.masked_fill(~key_valid, torch.finfo(scores.dtype).min)
    out = torch.softmax(scores, dim=-1) @ v
    return attn.out_proj(attn._recombine_heads(out))


def _block(layer: nn.Module, queries, keys, query_pe, key_pe, key_valid):
    """``TwoWayAttentionBlock.forward`` with padded tokens masked as keys."""
    if layer.skip_first_layer_pe:
        queries = _attend(layer.self_attn, queries, queries, queries, key_valid)
    else:
        q = queries + query_pe
        queries = queries + _attend(layer.self_attn, q, q, queries, key_valid)
    queries = layer.norm1(queries)
    q = queries + query_pe
    k = keys + key_pe
    queries = layer.norm2(queries + _attend(layer.cross_attn_token_to_image, q, k, keys, None))
    queries = layer.norm3(queries + layer.mlp(queries))
    q = queries + query_pe
    k = keys + key_pe
    keys = layer.norm4(keys + _attend(layer.cross_attn_image_to_token, k, q, queries, key_valid))
    return queries, keys


def padded_transformer(transformer: nn.Module, image_embedding: torch.Tensor,
                       image_pe: torch.Tensor, point_embedding: torch.Tensor,
                       key_valid: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``TwoWayTransformer.forward``; ``image_pe`` may be [1, C, h, w] (broadcast)."""
    keys = image_embedding.flatten(2).permute(0, 2, 1)
    key_pe = image_pe.flatten(2).permute(0, 2, 1)
    queries = point_embedding
    for layer in transformer.layers:
        queries, keys = _block(layer, queries, keys, point_embedding, key_pe, key_valid)
    q = queries + point_embedding
    k = keys + key_pe
    queries = queries + _attend(transformer.final_attn_token_to_image, q, k, keys, None)
    return transformer.norm_final_attn(queries), keys


def padded_predict_masks(decoder: nn.Module, src: torch.Tensor, pos_src: torch.Tensor,
                         sparse: torch.Tensor, valid: Optional[torch.Tensor] = None
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``forward.predict_masks`` for sparse tokens padded to one length.

    src: [P, C, h, w]; pos_src: [P or 1, C, h, w]; sparse: [P, N, C]; valid:
    [P, N] bool, False for padding (None: no padding). Returns every mask token's
    logits [P, 4, 4h, 4w] and IoU predictions [P, 4].
    """
    p = sparse.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(p, -1, -1), sparse), dim=1)
    key_valid = None
    if valid is not None:
        if valid.shape != sparse.shape[:2]:
            raise ConfigError(f"padded_predict_masks: valid must be [P, N] = "
                              f"{tuple(sparse.shape[:2])}, got {tuple(valid.shape)}")
        valid = valid.bool()
        key_valid = torch.cat([valid.new_ones(p, output_tokens.shape[0]), valid], 1)[:, None, None, :]
    hs, keys = padded_transformer(decoder.transformer, src, pos_src, tokens, key_valid)
    return masks_and_iou(decoder, hs, keys, src.shape, contiguous=True)


def masks_and_iou(decoder: nn.Module, hs: torch.Tensor, keys: torch.Tensor,
                  shape: torch.Size, contiguous: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """The end of ``MaskDecoder.predict_masks``: the transformer's tokens ``hs`` and
    image ``keys`` (of an image embedding of ``shape``) -> (logits [P, 4, 4h, 4w],
    IoU [P, 4]).

    SAM's reshape of the keys leaves the image in channels-last strides, so the
    output upscaling runs channels-last while the gradient that reaches its last
    GELU is contiguous: ATen's CPU kernel for that mix is ~7x slower than for one
    layout (22 of 90 ms of a 36-prompt pass at 256 px). ``contiguous`` copies the
    image first (the same values to float rounding); off by default, so SAM's own
    forward and fine-tuning keep their exact arithmetic."""
    b, c, h, w = shape
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1: (1 + decoder.num_mask_tokens), :]
    src = keys.transpose(1, 2).reshape(b, c, h, w)
    if contiguous:
        src = src.contiguous()
    upscaled = decoder.output_upscaling(src)
    hyper_in = torch.stack([decoder.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :])
                            for i in range(decoder.num_mask_tokens)], dim=1)
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    return masks, decoder.iou_prediction_head(iou_token_out)
