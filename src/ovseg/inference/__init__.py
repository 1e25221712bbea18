"""Zero-shot segmentation: the original harness (sliding window, group→class head) and the predictor."""

from .segmenter import Prediction, Segmenter

__all__ = ["Segmenter", "Prediction"]
