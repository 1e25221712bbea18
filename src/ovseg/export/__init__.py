"""Models out of PyTorch: ``export_model`` writes the image and text encoders as ONNX graphs (and
``torch.export`` programs) with an ``export.json``; ``OnnxSegmenter`` runs ovseg's harness on them in
onnxruntime. onnx, onnxscript and onnxruntime are the optional extra ``ovseg[export]`` (docs/export.md)."""

from .runtime import OnnxSegmenter
from .writer import ExportResult, export_model

__all__ = ["OnnxSegmenter", "ExportResult", "export_model"]
