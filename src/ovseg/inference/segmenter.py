"""The predictor: load a model once, set an image once, segment it with any vocabulary (SAM's habit).

    seg = Segmenter.from_checkpoint("ovsegmentor.pth")
    seg.set_image("photo.jpg")                               # the image side runs once
    pred = seg.predict(["cat", "dog", "person|man|woman"])   # each vocabulary: only the text side
    pred.labels      # (H, W) int64, index into pred.class_names ("background" first when thresholded)
    seg.predict("other.jpg", ["sky", "tree"])                # the one-call form
    seg.predict_batch(["a.jpg", "b.jpg"], ["cat", "dog"])    # windows of all images share forward passes

Image encodings and class embeddings are kept in two bounded LRU caches (``image_cache_size`` images,
``text_cache_size`` vocabularies), so many vocabularies on one image cost only the text encoder, and one
vocabulary over many images embeds once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig

from ..checkpoints import load_model
from ..config import schema
from ..errors import OvsegError
from ..label_stats import pixel_shares
from ..model import OVSegmentor
from ..model.text import build_tokenizer
from .class_names import display_name, embed_class_names
from .decision import class_logits
from .lru import LruCache
from .precision import inference_precision
from .slide import ImageEncoding, encode_images, group_maps_from_soft, labels_and_scores
from .transforms import ImageLike, Preprocess, read_rgb

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


class EncodedImage(NamedTuple):
    """An image read and encoded: its windows at the processing scale, its own (H, W) and its (H, W, 3)
    uint8 RGB pixels."""

    encoding: ImageEncoding
    size: tuple[int, int]
    rgb: np.ndarray


class Segmenter:
    """Zero-shot segmentation with the original harness (``seg_cfg`` = the ``evaluate.seg`` section).

    ``image_cache_size``: images whose encodings are kept (least recently used dropped first; the image of
    ``set_image`` is held apart until ``reset_image``); ``text_cache_size``: vocabularies whose class
    embeddings are kept. Changing ``cfg`` between calls is fine: encodings are keyed by the settings that
    shape them."""

    def __init__(self, model: OVSegmentor, seg_cfg: DictConfig | None = None, tokenizer=None,
                 text_cache_size: int = 32, image_cache_size: int = 4):
        self.model = model.eval()
        self.cfg = seg_cfg if seg_cfg is not None else schema().evaluate.seg
        check_seg_config(model, self.cfg)
        te = model.cfg.text_encoder
        self.tokenizer = tokenizer or build_tokenizer(te.name, te.tokenizer)
        self.image_cache: LruCache = LruCache(image_cache_size)  # (pixels key, settings) -> EncodedImage
        self.text_cache: LruCache = LruCache(text_cache_size)  # (vocabulary, templates) -> (N, D) embeddings
        self._set: tuple[object, tuple, EncodedImage] | None = None  # set_image's (pixels key, settings, encoded)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", seg_cfg: DictConfig | None = None,
                        opts: list[str] | None = None) -> Segmenter:
        model, _ = load_model(path, device=device, opts=opts)
        return cls(model, seg_cfg)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def preprocess(self) -> Preprocess:
        """image -> the (1, 3, h, w) float32 normalised tensor that ``encode_tensors`` windows."""
        return Preprocess.for_model(self.model, self.cfg)

    def read(self, image: ImageLike) -> np.ndarray:
        """Any supported input -> (H, W, 3) uint8 RGB; ImageError (one line) when it cannot be read."""
        return read_rgb(image)

    # ------------------------------------------------------------------------------------------ image side
    def set_image(self, image: ImageLike) -> None:
        """Read and encode ``image`` (a path, PIL image or (H, W, 3) uint8 array) once; ``predict(names)``
        then segments it with any vocabulary at the cost of the text side only."""
        key = _image_key(image)
        self._set = (key, self._settings(), self._encode_keyed(key, image))

    def reset_image(self) -> None:
        """Forget the image of ``set_image`` (its encoding leaves the image cache too)."""
        if self._set is not None:
            self.image_cache.pop(self._set[:2], None)
        self._set = None

    @property
    def is_image_set(self) -> bool:
        return self._set is not None

    def encode(self, image: ImageLike) -> EncodedImage:
        """(window encodings, original (H, W), RGB array) of ``image``, from the image cache when it holds
        them for the current settings."""
        return self._encode_keyed(_image_key(image), image)

    def encode_tensors(self, images: list[torch.Tensor]) -> list[ImageEncoding]:
        """Processed images (1, 3, H, W) float32 (``preprocess``) -> their window encodings, windows of all
        images batched together."""
        c = self.cfg
        with inference_precision(c.precision, self.device):
            return encode_images(self.model, [t.to(self.device, non_blocking=True) for t in images], c.crop_size,
                                 c.stride, c.mode, c.batch_crops, c.scoring == "patches", bool(c.flip), bool(c.rotate))

    def _settings(self) -> tuple:
        """What an encoding depends on besides the pixels (per-patch encodings serve group scoring too)."""
        c = self.cfg
        return (c.short_side, c.max_long_side, c.crop_size, c.stride, c.mode, bool(c.flip), bool(c.rotate),
                c.precision)

    def _encode_keyed(self, key: object, image: ImageLike) -> EncodedImage:
        found = self._cached(key)
        return found if found is not None else self._encode_rgb(key, read_rgb(image))

    def _cached(self, key: object) -> EncodedImage | None:
        found = None if key is None else self.image_cache.get((key, self._settings()))
        if found is not None:
            self.image_cache.move_to_end((key, self._settings()))
        return found if found is not None and self._serves(found) else None

    def _serves(self, encoded: EncodedImage) -> bool:
        return encoded.encoding.patch_emb is not None or self.cfg.scoring != "patches"

    def _encode_rgb(self, key: object, rgb: np.ndarray) -> EncodedImage:
        return self._remember(key, EncodedImage(self.encode_tensors([self.preprocess(rgb)])[0], rgb.shape[:2], rgb))

    def _remember(self, key: object, encoded: EncodedImage) -> EncodedImage:
        if key is not None:
            self.image_cache[(key, self._settings())] = encoded
        return encoded

    def _set_image_encoding(self) -> EncodedImage:
        """The set image's encoding, encoded again if the settings changed since ``set_image``."""
        if self._set is None:
            raise RuntimeError("no image is set: call set_image(image) before predict(class_names), "
                               "or pass both: predict(image, class_names)")
        key, settings, encoded = self._set
        if settings != self._settings() or not self._serves(encoded):
            self._set = (key, self._settings(), self._encode_rgb(key, encoded.rgb))
        return self._set[2]

    # ------------------------------------------------------------------------------------------- text side
    def class_embeddings(self, class_names: list[str], templates: str | None = None) -> torch.Tensor:
        """(N, D) float32 L2-normalised class embeddings, cached per (vocabulary, templates) for the last
        ``text_cache_size`` vocabularies."""
        key = (tuple(class_names), templates or self.cfg.template)
        if key not in self.text_cache:
            self.text_cache[key] = embed_class_names(self.model, self.tokenizer, list(class_names), key[1])
        return self.text_cache[key]

    def class_logits(self, enc: ImageEncoding, text: torch.Tensor, bg_thresh: float | None,
                     top_k: int | None = None) -> tuple[torch.Tensor, bool]:
        """``decision.class_logits`` with this segmenter's model and settings."""
        return class_logits(self.model, self.cfg, enc, text, bg_thresh, top_k)

    # ------------------------------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict(self, image_or_names: ImageLike | list[str], class_names: list[str] | None = None, *,
                bg_thresh: float | None | object = _DEFAULT, templates: str | None = None,
                top_k: int | None = None) -> Prediction:
        """``predict(class_names)`` segments the image of ``set_image``; ``predict(image, class_names)``
        segments ``image`` (through the image cache, leaving the set image as it is). Class names: synonyms
        as ``"a|b"``. ``bg_thresh=None`` disables the background class; by default the config's is used.
        Returns labels (H, W) int64 and scores (H, W) float32 at the image's size, logits (C, h, w) float32
        at the processing scale (``Prediction``)."""
        if _is_vocabulary(image_or_names) and class_names is None:
            encoded, class_names = self._set_image_encoding(), list(image_or_names)
        elif class_names is not None and not _is_vocabulary(image_or_names):
            encoded = self.encode(image_or_names)
        else:
            raise TypeError("call predict(class_names) after set_image(image), or predict(image, class_names); "
                            "several images: predict_batch(images, class_names)")
        return self._decide(encoded, class_names, bg_thresh, templates, top_k)

    @torch.no_grad()
    def predict_batch(self, images: list[ImageLike], class_names: list[str], *,
                      bg_thresh: float | None | object = _DEFAULT, templates: str | None = None,
                      top_k: int | None = None) -> list[Prediction]:
        """One Prediction per image, as ``predict(image, class_names)`` gives it; the windows of all images
        not in the image cache share forward passes (``evaluate.seg.batch_crops`` windows each), so the
        logits may differ from one-by-one in the last float bits. Every image is read before any is encoded."""
        keys = [_image_key(image) for image in images]
        found = [self._cached(key) for key in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        rgbs = {i: read_rgb(images[i]) for i in missing}
        encodings = self.encode_tensors([self.preprocess(rgbs[i]) for i in missing]) if missing else []
        for i, enc in zip(missing, encodings, strict=True):
            found[i] = self._remember(keys[i], EncodedImage(enc, rgbs[i].shape[:2], rgbs[i]))
        return [self._decide(encoded, class_names, bg_thresh, templates, top_k) for encoded in found]

    def _decide(self, encoded: EncodedImage, class_names: list[str], bg_thresh: float | None | object,
                templates: str | None, top_k: int | None) -> Prediction:
        """The per-class decision on one encoded image -> its Prediction."""
        enc = encoded.encoding
        text = self.class_embeddings(class_names, templates)
        thresh = self.cfg.bg_thresh if bg_thresh is _DEFAULT else bg_thresh
        logits, with_background = self.class_logits(enc, text, thresh, top_k)
        labels, score = labels_and_scores(logits, encoded.size)
        names = (["background"] if with_background else []) + [display_name(n) for n in class_names]
        return Prediction(labels=labels.cpu(), scores=score.cpu(), class_names=names, logits=logits,
                          group_maps=enc.group_maps, boxes=enc.boxes)

    @torch.no_grad()
    def group_layers(self, image: ImageLike | None = None) -> list[torch.Tensor]:
        """Whole-image group maps of ``image`` (None: the set image), one per grouping block (the original's
        ``*_group`` vis modes): the resized image is encoded as one window; each map is (h, w) uint8 on the CPU,
        the argmax group per pixel at the processing scale, later blocks composed through the earlier ones
        (GroupViT's ``get_attn_maps``)."""
        rgb = self._set_image_encoding().rgb if image is None else read_rgb(image)
        tensor = self.preprocess(rgb)
        with inference_precision(self.cfg.precision, self.device):
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


def _is_vocabulary(value: object) -> bool:
    """A list or tuple of class names (the set-image form of ``predict``), as opposed to one image."""
    return isinstance(value, list | tuple) and all(isinstance(name, str) for name in value)
