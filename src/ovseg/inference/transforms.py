"""What a user applies to an image before the model sees it, and ``create_model_and_transforms`` (open_clip's
habit): the model plus that exact preprocessing, so that ``preprocess(image)`` is the tensor the harness
windows (``Segmenter.encode_tensors``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from ..checkpoints.hub import load_pretrained
from ..config import load_config
from ..errors import ImageError
from ..factory import create_model, list_presets, preset_path
from ..images import load_image, to_rgb_array
from ..model import OVSegmentor
from .preprocess import prepare_image

ImageLike = str | Path | np.ndarray | Image.Image


def read_rgb(image: ImageLike) -> np.ndarray:
    """A path, PIL image or array ((H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA) -> (H, W, 3) uint8 RGB.
    An unreadable file or an array of another shape is an ImageError (one line)."""
    if isinstance(image, str | Path):
        return load_image(image)
    if isinstance(image, Image.Image):
        return to_rgb_array(image)
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or 0 in array.shape:
        raise ImageError(f"expected an (H, W, 3) RGB image array, got shape {array.shape}")
    return np.ascontiguousarray(array[..., :3].astype(np.uint8, copy=False))


@dataclass(frozen=True)
class Preprocess:
    """image -> (1, 3, h, w) float32, normalised with the ImageNet mean and std, resized (OpenCV bilinear) so
    that the short side is ``short_side`` unless the long side would pass ``max_long_side`` (the original's
    evaluation resize); each side at least ``min_side`` (one patch)."""

    short_side: int = 448
    max_long_side: int = 2048
    min_side: int = 16

    @classmethod
    def for_model(cls, model: OVSegmentor, seg_cfg: DictConfig) -> Preprocess:
        """The preprocessing of the harness that runs ``model`` with the ``evaluate.seg`` settings ``seg_cfg``."""
        return cls(int(seg_cfg.short_side), int(seg_cfg.max_long_side), int(model.cfg.img_encoder.patch_size))

    def __call__(self, image: ImageLike) -> torch.Tensor:
        return prepare_image(read_rgb(image), self.short_side, self.max_long_side, self.min_side)


def create_model_and_transforms(preset_or_path: str | Path, device: str | torch.device = "cpu"
                                ) -> tuple[OVSegmentor, Preprocess]:
    """(model in eval mode, its preprocessing). ``preset_or_path``: a preset of ``list_presets()`` or a YAML
    config (random weights), else a checkpoint (``OVSegmentor.from_pretrained``: a Hub-style folder, an ovseg
    ``.safetensors``, an official ``.pth`` or a Hub repo id). The preprocessing uses the config's
    ``evaluate.seg`` sizes (a checkpoint's: the defaults, as its file's config keeps only the model)."""
    name = str(preset_or_path)
    if name in list_presets() or name.endswith((".yml", ".yaml")):
        cfg = load_config(preset_path(name))
        model = create_model(cfg).to(device)
    else:
        model, cfg = load_pretrained(name, device=device)
    return model.eval(), Preprocess.for_model(model, cfg.evaluate.seg)
