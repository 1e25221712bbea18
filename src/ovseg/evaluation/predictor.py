"""The evaluation harness (spec §4.1) over many images at once, through the Segmenter's one inference path.

Per image the numbers are those of ``Segmenter.predict`` (same window placement, encoder, per-class
decision, averaging, resize, softmax and argmax); only which windows share a forward pass differs: the
windows of all images of a batch are encoded together (``inference.slide.encode_images``).
"""

from __future__ import annotations

import torch

from ..inference.segmenter import Segmenter
from ..inference.slide import Box, ImageEncoding, labels_and_scores, window_boxes
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
        return window_boxes(tuple(sample.image.shape[-2:]), c.crop_size, c.stride, c.mode)

    @torch.no_grad()
    def __call__(self, samples: list[Sample]) -> list[torch.Tensor]:
        return [self.labels(enc, s.size) for enc, s in zip(self.encode(samples), samples, strict=True)]

    def encode(self, samples: list[Sample]) -> list[ImageEncoding]:
        """All windows of ``samples`` (and their flipped / turned views), batched across images."""
        return self.seg.encode_tensors([s.image for s in samples])

    def labels(self, enc: ImageEncoding, size: tuple[int, int]) -> torch.Tensor:
        """As ``Segmenter.predict`` does after encoding: the per-class decision, resize, argmax."""
        logits, _ = self.seg.class_logits(enc, self.text, self.bg_thresh)
        return labels_and_scores(logits, tuple(size))[0]
