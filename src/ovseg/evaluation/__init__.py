"""Benchmark evaluation: dataset readers, the confusion-matrix mIoU, the loop, the COCO-Object converter;
zero-shot classification of labelled images."""

from .classification import ClassificationResult, evaluate_classification
from .coco_object import convert_coco_object, convert_from_instances
from .datasets import Sample, SegDataset, find_samples
from .evaluate import EvalResult, evaluate, load_eval_config
from .labelled_images import ClassList, LabelledImages, load_class_list, read_labelled_images
from .metrics import ConfusionMatrix, Scores
from .predictor import HarnessPredictor
from .registry import EVAL_SETS, PAPER_SUITE, TCL_SUITE, EvalSet, get_eval_set

__all__ = ["EVAL_SETS", "PAPER_SUITE", "TCL_SUITE", "EvalSet", "get_eval_set", "convert_coco_object",
           "convert_from_instances", "Sample", "SegDataset", "find_samples", "EvalResult", "evaluate",
           "load_eval_config", "ConfusionMatrix", "Scores", "HarnessPredictor", "ClassificationResult",
           "evaluate_classification", "ClassList", "LabelledImages", "load_class_list", "read_labelled_images"]
