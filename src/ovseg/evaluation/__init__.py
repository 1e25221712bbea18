"""Benchmark evaluation: dataset readers, the confusion-matrix mIoU, the loop, the COCO-Object converter."""

from .benchmarks import BENCHMARKS, PAPER_SUITE, TCL_SUITE, Benchmark, get_benchmark
from .coco_object import convert_coco_object, convert_from_instances
from .datasets import Sample, SegDataset, find_samples
from .evaluate import EvalResult, evaluate, load_eval_config
from .metrics import ConfusionMatrix, Scores
from .predictor import HarnessPredictor

__all__ = ["BENCHMARKS", "PAPER_SUITE", "TCL_SUITE", "Benchmark", "get_benchmark", "convert_coco_object",
           "convert_from_instances", "Sample", "SegDataset", "find_samples", "EvalResult", "evaluate",
           "load_eval_config", "ConfusionMatrix", "Scores", "HarnessPredictor"]
