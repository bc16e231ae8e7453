"""Fusion feature extractors for SB3 policies (image encoders, text encoders, fusion modules)."""

from mmrl.extractors.fusion import FUSIONS, Fusion
from mmrl.extractors.image_encoders import IMAGE_ENCODERS, ImageEncoder, make_image_encoder
from mmrl.extractors.multimodal import IMAGE_ENCODER_NAMES, TEXT_ENCODER_NAMES, MultimodalExtractor
from mmrl.extractors.pretrained import PretrainedTextEncoder, SentenceEmbeddingCache, save_tiny_bert
from mmrl.extractors.pretrained_image import ImageFeatureCache, PretrainedImageEncoder
from mmrl.extractors.text_encoders import TEXT_ENCODERS, TextEncoder, TextFeatures

__all__ = [
    "FUSIONS",
    "IMAGE_ENCODERS",
    "IMAGE_ENCODER_NAMES",
    "TEXT_ENCODERS",
    "TEXT_ENCODER_NAMES",
    "Fusion",
    "ImageEncoder",
    "ImageFeatureCache",
    "MultimodalExtractor",
    "PretrainedImageEncoder",
    "PretrainedTextEncoder",
    "SentenceEmbeddingCache",
    "TextEncoder",
    "TextFeatures",
    "make_image_encoder",
    "save_tiny_bert",
]
