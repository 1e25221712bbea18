"""ovseg: open-vocabulary semantic segmentation learned from captions (OVSegmentor, CVPR 2023)."""

from .checkpoints import hub as _hub  # noqa: F401  registers OVSegmentor.from_pretrained / save_pretrained
from .checkpoints import load_model, save_model
from .config import load_config
from .evaluation import evaluate
from .factory import create_model, list_presets
from .inference import Prediction, Segmenter
from .inference.transforms import Preprocess, create_model_and_transforms
from .model import OVSegmentor

__version__ = "0.1.0"
__all__ = ["OVSegmentor", "Segmenter", "Prediction", "Preprocess", "create_model", "create_model_and_transforms",
           "list_presets", "load_model", "save_model", "load_config", "evaluate"]
