"""Build models from configs (a preset name, a YAML file or a config); files become models in ``checkpoints``."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from .config import load_config
from .errors import ConfigError
from .model import OVSegmentor

CONFIG_DIR = Path(__file__).parent / "configs"


def preset_path(name: str) -> Path:
    """A config by preset name (``tiny``, ``ovsegmentor/vit_b16_bert_8g`` …) or by file path."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = CONFIG_DIR / (name if name.endswith((".yml", ".yaml")) else f"{name}.yml")
    if candidate.is_file():
        return candidate
    raise ConfigError(f"config '{name}' not found (a file path, or one of: {', '.join(list_presets())})")


def list_presets() -> list[str]:
    """The preset names ``create_model`` and ``preset_path`` accept, sorted: ``tiny``, the paper's models
    (``ovsegmentor/vit_b16_bert_8g`` …), the benchmark configs (``test_voc12`` …) and the quickstart's. The
    ``ovsegmentor/pretrain_*`` presets start from the pretrained text encoder, fetched from the Hugging Face
    Hub on first use; every other preset builds offline."""
    return sorted(p.relative_to(CONFIG_DIR).with_suffix("").as_posix() for p in CONFIG_DIR.rglob("*.yml"))


def create_model(cfg: DictConfig | str | Path) -> OVSegmentor:
    """A randomly initialised OVSegmentor from a full config, its ``model`` section, or a preset name."""
    if isinstance(cfg, str | Path):
        cfg = load_config(preset_path(str(cfg)))
    return OVSegmentor(cfg.model if "model" in cfg else cfg)
