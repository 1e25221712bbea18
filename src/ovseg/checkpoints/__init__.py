"""Checkpoints: the one place where a file becomes tensors, a config and a model.

- ``files``: ovseg's safetensors format (weights + the config in the header), read and written atomically;
- ``official``: the original's ``.pth`` read without running pickled code;
- ``official_mapping``: the original's key names and config -> ovseg's (pure functions);
- ``trust``: what a file's config may say (an architecture, never code, paths, hub ids or lookups);
- ``loading``: ``load_model`` / ``save_model``;
- ``training``: training checkpoints (weights + optimizer state) and resume;
- ``hub``: Hub-style folders (``model.safetensors`` + ``config.json`` + a model card), ``from_pretrained``;
- ``backbone_formats`` / ``backbones``: pretrained ViT files (DINO, timm, HF ViT, CLIP) -> the image
  encoder's start (spec §1.2).
"""

from .loading import load_model, load_state_dict_checked, save_model

__all__ = ["load_model", "save_model", "load_state_dict_checked"]
