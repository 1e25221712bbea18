"""The predictor: load a model once, set an image once, segment it with any vocabulary.

    seg = Segmenter.from_checkpoint("ovsegmentor.pth")
    pred = seg.predict("photo.jpg", ["cat", "dog", "person|man|woman"])
    pred.labels      # (H, W) int64, index into pred.class_names ("background" first when thresholded)

The image side (window encodings) and the text side (class embeddings) are cached separately, so many
vocabularies on one image cost only the text encoder, and one vocabulary over many images embeds once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from ..checkpoints import load_model
from ..config import schema
from ..errors import OvsegError
from ..images import load_image, to_rgb_array
from ..label_stats import pixel_shares
from ..model import OVSegmentor
from ..model.text import build_tokenizer
from .class_names import display_name, embed_class_names
from .decision import class_logits
from .lru import LruCache
from .precision import inference_precision
from .preprocess import prepare_image
from .slide import ImageEncoding, encode_images, group_maps_from_soft, labels_and_scores

ImageLike = str | Path | np.ndarray | Image.Image
_DEFAULT = object()


@dataclass
class Prediction:
    """labels (H, W) int64 at the input's size, indices into ``class_names`` (``"background"`` first when
    a background threshold is used); scores (H, W) float32 softmax probability of that label;
    logits (C, h, w) averaged window logits at the processing scale; group_maps (K, h_c, w_c) per-window
    argmax groups; boxes the K windows (y1, y2, x1, x2) at the processing scale."""

    labels: torch.Tensor
    scores: torch.Tensor
    class_names: list[str]
    logits: torch.Tensor
    group_maps: torch.Tensor
    boxes: list[tuple[int, int, int, int]]

    def present(self) -> list[tuple[str, float]]:
        """(class name, pixel share) for every label present, largest first."""
        share = pixel_shares(self.labels, len(self.class_names))  # float32, as always reported
        order = torch.argsort(share, descending=True).tolist()
        return [(self.class_names[i], float(share[i])) for i in order if share[i] > 0]


class Segmenter:
    """Zero-shot segmentation with the original harness (``cfg`` = the ``evaluate.seg`` section)."""

    def __init__(self, model: OVSegmentor, seg_cfg: DictConfig | None = None, tokenizer=None,
                 text_cache_size: int = 32):
        self.model = model.eval()
        self.cfg = seg_cfg if seg_cfg is not None else schema().evaluate.seg
        check_seg_config(model, self.cfg)
        te = model.cfg.text_encoder
        self.tokenizer = tokenizer or build_tokenizer(te.name, te.tokenizer)
        self._image_key: object = None
        self._image: tuple[ImageEncoding, tuple[int, int], np.ndarray] | None = None
        self.text_cache: LruCache = LruCache(text_cache_size)  # (vocabulary, templates) -> (N, D) embeddings

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", seg_cfg: DictConfig | None = None,
                        opts: list[str] | None = None) -> Segmenter:
        model, _ = load_model(path, device=device, opts=opts)
        return cls(model, seg_cfg)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def read(self, image: ImageLike) -> np.ndarray:
        """Any supported input -> (H, W, 3) uint8 RGB."""
        if isinstance(image, str | Path):
            return load_image(image)
        if isinstance(image, Image.Image):
            return to_rgb_array(image)
        array = np.asarray(image)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"expected an (H, W, 3) RGB array, got shape {array.shape}")
        return np.ascontiguousarray(array[..., :3].astype(np.uint8, copy=False))

    def encode(self, image: ImageLike) -> tuple[ImageEncoding, tuple[int, int], np.ndarray]:
        """(window encodings, original (H, W), RGB array); the last image is cached."""
        per_patch = self.cfg.scoring == "patches"
        key = _image_key(image)
        key = None if key is None else (key, bool(self.cfg.flip), bool(self.cfg.rotate))
        if key is not None and key == self._image_key and self._image is not None \
                and (self._image[0].patch_emb is not None or not per_patch):  # patches also serve groups
            return self._image
        rgb = self.read(image)
        c = self.cfg
        tensor = prepare_image(rgb, c.short_side, c.max_long_side, self.model.cfg.img_encoder.patch_size)
        self._image_key, self._image = key, (self.encode_tensors([tensor])[0], rgb.shape[:2], rgb)
        return self._image

    def encode_tensors(self, images: list[torch.Tensor]) -> list[ImageEncoding]:
        """Processed images (1, 3, H, W) -> their window encodings, windows of all images batched together."""
        c = self.cfg
        with inference_precision(c.precision, self.device):
            return encode_images(self.model, [t.to(self.device, non_blocking=True) for t in images], c.crop_size,
                                 c.stride, c.mode, c.batch_crops, c.scoring == "patches", bool(c.flip), bool(c.rotate))

    def class_logits(self, enc: ImageEncoding, text: torch.Tensor, bg_thresh: float | None,
                     top_k: int | None = None) -> tuple[torch.Tensor, bool]:
        """``decision.class_logits`` with this segmenter's model and settings."""
        return class_logits(self.model, self.cfg, enc, text, bg_thresh, top_k)

    def class_embeddings(self, class_names: list[str], templates: str | None = None) -> torch.Tensor:
        """(N, D) normalised class embeddings, cached per (vocabulary, templates) for the last
        ``text_cache_size`` vocabularies."""
        key = (tuple(class_names), templates or self.cfg.template)
        if key not in self.text_cache:
            self.text_cache[key] = embed_class_names(self.model, self.tokenizer, list(class_names), key[1])
        return self.text_cache[key]

    @torch.no_grad()
    def predict(self, image: ImageLike, class_names: list[str], bg_thresh: float | None | object = _DEFAULT,
                templates: str | None = None, top_k: int | None = None) -> Prediction:
        """Segment ``image`` into ``class_names`` (synonyms as ``"a|b"``); ``bg_thresh=None`` disables the
        background class; by default the config's threshold is used."""
        enc, ori, _ = self.encode(image)
        text = self.class_embeddings(class_names, templates)
        thresh = self.cfg.bg_thresh if bg_thresh is _DEFAULT else bg_thresh
        logits, with_background = self.class_logits(enc, text, thresh, top_k)
        labels, score = labels_and_scores(logits, ori)
        names = (["background"] if with_background else []) + [display_name(n) for n in class_names]
        return Prediction(labels=labels.cpu(), scores=score.cpu(), class_names=names, logits=logits,
                          group_maps=enc.group_maps, boxes=enc.boxes)

    @torch.no_grad()
    def group_layers(self, image: ImageLike) -> list[torch.Tensor]:
        """Whole-image group maps, one per grouping block (the original's ``*_group`` vis modes): the
        resized image is encoded as one window; each map is (h, w) uint8 on the CPU, the argmax group per pixel
        at the processing scale, later blocks composed through the earlier ones (GroupViT's ``get_attn_maps``)."""
        cached = self._image is not None and self._image_key is not None and _image_key(image) == self._image_key[0]
        rgb = self._image[2] if cached else self.read(image)
        c = self.cfg
        tensor = prepare_image(rgb, c.short_side, c.max_long_side, self.model.cfg.img_encoder.patch_size)
        with inference_precision(c.precision, self.device):
            out = self.model.encode_image(tensor.to(self.device))
        maps = composed_group_maps([a.soft.float() for a in out.assignments], out.grid, tuple(tensor.shape[-2:]))
        return [m.cpu() for m in maps]


def check_seg_config(model: OVSegmentor, cfg: DictConfig) -> None:
    """One-line OvsegError for an ``evaluate.seg`` setting this model cannot use (training calls it before its
    first step, so a bad setting does not surface at the first validation). The allowed values of each
    setting are the schema's (``config.py``), checked when the config is loaded."""
    if cfg.scoring == "patches" and not model.img_encoder.supports_patch_tokens:
        depths = list(model.cfg.img_encoder.depths)
        raise OvsegError("evaluate.seg.scoring=patches needs one grouping block and no block after it "
                         f"(model.img_encoder.depths [d, 0]); this model has depths {depths}")
    if cfg.background == "learned" and not hasattr(model, "background_embedding"):
        raise OvsegError("evaluate.seg.background=learned needs a model trained with model.learned_background")


def composed_group_maps(softs: list[torch.Tensor], grid: tuple[int, int], size: tuple[int, int]
                        ) -> list[torch.Tensor]:
    """softs: per grouping block (1, 1, G_i, N_i), N_0 = h·w patches and N_i = G_{i-1} -> one (H, W) uint8
    argmax-group map per block, the patch-to-group map of block i being soft_i ∘ … ∘ soft_0."""
    maps, chain = [], None
    for soft in softs:
        chain = soft if chain is None else soft @ chain  # (1, 1, G_i, G_{i-1}) @ (1, 1, G_{i-1}, h·w)
        maps.append(group_maps_from_soft(chain, grid, size)[0])
    return maps


def _image_key(image: ImageLike) -> object:
    """A cache key: paths by (path, mtime, size), arrays and PIL images by a hash of their pixels."""
    if isinstance(image, str | Path):
        stat = Path(image).stat() if Path(image).is_file() else None
        return (str(Path(image).resolve()), stat.st_mtime_ns, stat.st_size) if stat else None
    array = np.ascontiguousarray(np.asarray(image))
    return (array.shape, str(array.dtype), hashlib.blake2b(array.data, digest_size=16).hexdigest())
