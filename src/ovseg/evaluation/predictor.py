"""The Segmenter's harness (spec §4.1) over many images at once: windows of several images share a batch.

Per image the numbers are those of ``Segmenter.predict`` (same window placement, encoder, group→class
head, averaging, resize, softmax and argmax); only which windows share a forward pass differs.
"""

from __future__ import annotations

import torch

from ..inference.head import crop_class_table, group_class_scores
from ..inference.precision import inference_precision
from ..inference.segmenter import Segmenter
from ..inference.slide import (
    Box,
    ImageEncoding,
    View,
    batches_of_same_shape,
    encode_crops,
    labels_and_scores,
    slide_boxes,
    window_views,
)
from .datasets import Sample


class HarnessPredictor:
    """``predictor(samples) -> [labels (H, W) int64]``: dataset indices (0 = background when
    ``bg_thresh`` is a float, then k = k-th class; else 0..N-1), at each sample's original size."""

    def __init__(self, segmenter: Segmenter, class_names: list[str], bg_thresh: float | None):
        self.seg, self.class_names, self.bg_thresh = segmenter, list(class_names), bg_thresh
        self.text = segmenter.class_embeddings(self.class_names)

    def boxes(self, sample: Sample) -> list[Box]:
        """The windows of ``sample`` at the processing scale."""
        c = self.seg.cfg
        height, width = sample.image.shape[-2:]
        return slide_boxes(height, width, c.crop_size, c.stride) if c.mode == "slide" else [(0, height, 0, width)]

    @torch.no_grad()
    def __call__(self, samples: list[Sample]) -> list[torch.Tensor]:
        return [self.labels(enc, s.size) for enc, s in zip(self.encode(samples), samples, strict=True)]

    def encode(self, samples: list[Sample]) -> list[ImageEncoding]:
        """Encode all windows of ``samples``, ``batch_crops`` same-sized windows per forward pass; with
        ``flip`` / ``rotate`` every window once more per view (window k + v·K of an image of K windows is
        window k in view v, as ``encode_windows`` orders them)."""
        views = window_views(bool(self.seg.cfg.flip), bool(self.seg.cfg.rotate))
        boxes = [self.boxes(s) * len(views) for s in samples]
        images = [s.image.to(self.seg.device, non_blocking=True) for s in samples]
        keys = [(i, k) for i, image_boxes in enumerate(boxes) for k in range(len(image_boxes))]
        view_of = {(i, k): views[k // (len(boxes[i]) // len(views))] for i, k in keys}
        parts: dict[tuple[int, int], tuple] = {}
        grids: dict[tuple[int, int], tuple[int, int]] = {}
        jobs = [(boxes[i][k], view_of[(i, k)]) for i, k in keys]
        for chunk in batches_of_same_shape(jobs, self.seg.cfg.batch_crops):
            chunk_keys = [keys[j] for j in chunk]
            out = self._encode_crops([_crop(images[i], boxes[i][k]) for i, k in chunk_keys],
                                     [view_of[key] for key in chunk_keys])
            for j, key in enumerate(chunk_keys):
                parts[key] = tuple(None if t is None else t[j] for t in out[:5])
                grids[key] = out[5]
        return [_assemble(s, boxes[i], [parts[(i, k)] for k in range(len(boxes[i]))], grids[(i, 0)])
                for i, s in enumerate(samples)]

    def _encode_crops(self, crops: list[torch.Tensor], views: list[View]) -> tuple:
        """``inference.slide.encode_crops`` at the segmenter's precision."""
        with inference_precision(self.seg.cfg.precision, self.seg.device):
            return encode_crops(self.seg.model, torch.cat(crops), self.seg.cfg.scoring == "patches", views)

    def labels(self, enc: ImageEncoding, size: tuple[int, int]) -> torch.Tensor:
        """As ``Segmenter.predict`` does after encoding: group→class table, average, resize, argmax."""
        scores = group_class_scores(self.seg.segments(enc), enc.image_emb, self.text,
                                    self.seg.model.scale().float(), self.seg.cfg.top_k)
        logits = self.seg.class_maps(enc, crop_class_table(scores.probs, self.bg_thresh))
        return labels_and_scores(logits, tuple(size))[0]


def _crop(image: torch.Tensor, box: Box) -> torch.Tensor:
    y1, y2, x1, x2 = box
    return image[:, :, y1:y2, x1:x2]


def _assemble(sample: Sample, boxes: list[Box], parts: list[tuple], grid: tuple[int, int]) -> ImageEncoding:
    soft, maps, groups, pooled, patches = (None if t[0] is None else torch.stack(t) for t in zip(*parts, strict=True))
    return ImageEncoding(size=tuple(sample.image.shape[-2:]), boxes=boxes, grid=grid, soft=soft, group_maps=maps,
                         group_emb=groups, image_emb=pooled, image=sample.image[0], patch_emb=patches)
