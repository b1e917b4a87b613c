"""SAM for fuzzylogic_seg: building/loading models, a differentiable prompted
forward equal to SamPredictor, an embedding cache, LoRA, and the embedded
small SAM's pretraining on generic synthetic shapes.

Importing this package imports torch and segment_anything: ``from
fuzzylogic_seg.sam import load_sam, PromptableSAM``.
"""
from .build import SAM_BUILDERS, EmbeddedConfig, build_embedded, load_sam, model_fingerprint
from .cache import EmbeddingCache, encoder_fingerprint
from .forward import PromptableSAM
from .lora import add_lora, encoder_frozen, merge_lora, trainable_parameters

__all__ = ["SAM_BUILDERS", "EmbeddedConfig", "build_embedded", "load_sam", "model_fingerprint",
           "PromptableSAM", "EmbeddingCache", "encoder_fingerprint", "add_lora", "merge_lora",
           "trainable_parameters", "encoder_frozen"]
