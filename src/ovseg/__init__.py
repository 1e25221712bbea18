"""ovseg: open-vocabulary semantic segmentation learned from captions (OVSegmentor, CVPR 2023)."""

from .checkpoints import load_model, save_model
from .config import load_config
from .evaluation import evaluate
from .factory import create_model
from .inference import Prediction, Segmenter
from .model import OVSegmentor

__version__ = "0.1.0"
__all__ = ["OVSegmentor", "Segmenter", "Prediction", "create_model", "load_model", "save_model", "load_config",
           "evaluate"]
