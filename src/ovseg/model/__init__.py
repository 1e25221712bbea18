"""The OVSegmentor model: GroupViT image encoder, transformers text encoder, heads, entity decoder."""

from .ovsegmentor import ImageOutput, OVSegmentor, TextOutput, class_embeddings

__all__ = ["OVSegmentor", "ImageOutput", "TextOutput", "class_embeddings"]
