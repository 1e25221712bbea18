"""Hugging Face Hub-style model folders: ``model.safetensors`` + ``config.json`` + a model card (``README.md``).

A folder is read like any checkpoint: its ``config.json`` is untrusted exactly as a safetensors header's config
is (``trust``: only the ``model`` section, built-in text encoders, no loader arguments, no interpolations,
bounded sizes, shapes compared with the weights before anything is allocated), and only those two files are
read. The weights file keeps the config in its header too, so ``model.safetensors`` alone is an ovseg
checkpoint. A repo id that is not a local path is downloaded with ``huggingface_hub`` (the three files only,
never code); nothing else here touches the network. ``OVSegmentor.from_pretrained`` / ``save_pretrained`` /
``push_to_hub`` call this module, which registers itself on import (``model/`` may not import ``checkpoints/``).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ..errors import CheckpointError
from ..fileio import atomic_write, atomic_write_json
from ..model import OVSegmentor
from ..model.ovsegmentor import HubIO
from .files import save_weights
from .loading import load_model, load_ovseg_weights, resolved_config
from .trust import parse_stored_config

WEIGHTS_NAME, CONFIG_NAME, CARD_NAME = "model.safetensors", "config.json", "README.md"
MAX_CONFIG_BYTES = 1_000_000  # ovseg's resolved config is ~5 kB; a larger file is not one
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
_CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def load_pretrained(path_or_repo_id: str | Path, device: str | torch.device = "cpu", training: bool = False,
                    opts: list[str] | None = None, revision: str | None = None) -> tuple[OVSegmentor, DictConfig]:
    """(model, config) from a Hub-style folder, an ovseg ``.safetensors`` or official ``.pth`` file, or a Hub
    repo id (``owner/name``, downloaded only when no such local path exists). ``training``, ``opts``: as in
    ``load_model``; ``revision``: a branch, tag or commit of the repo."""
    path = Path(path_or_repo_id)
    if path.is_dir():
        return load_folder(path, device, training, opts)
    if path.is_file() or not looks_like_repo_id(str(path_or_repo_id)):
        return load_model(path, device=device, training=training, opts=opts)  # a missing file: one line there
    return load_folder(download(str(path_or_repo_id), revision), device, training, opts)


def looks_like_repo_id(name: str) -> bool:
    """``owner/name`` and not a checkpoint file name, so that a mistyped local path is not sent to the Hub."""
    return bool(_REPO_ID.fullmatch(name)) and not name.endswith(_CHECKPOINT_SUFFIXES) and ".." not in name


def load_folder(folder: Path, device: str | torch.device = "cpu", training: bool = False,
                opts: list[str] | None = None) -> tuple[OVSegmentor, DictConfig]:
    """A Hub-style folder -> (model, config); without ``config.json`` the weights' header config is used."""
    weights, config_file = folder / WEIGHTS_NAME, folder / CONFIG_NAME
    if not weights.is_file():
        raise CheckpointError(f"{folder}: no {WEIGHTS_NAME} in this folder (a model folder holds {WEIGHTS_NAME} "
                              f"and {CONFIG_NAME})")
    if not config_file.is_file():
        return load_model(weights, device=device, training=training, opts=opts)
    return load_ovseg_weights(weights, read_config_json(config_file), str(config_file), device, training, opts)


def read_config_json(path: Path) -> Any:
    """The parsed ``config.json`` of a folder (untrusted: checked by the caller), size-bounded before reading."""
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{path}: {size} bytes, more than any ovseg config ({MAX_CONFIG_BYTES} at most)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not readable UTF-8 text ({type(e).__name__})") from e
    return parse_stored_config(text, str(path))


def download(repo_id: str, revision: str | None = None) -> Path:
    """The repo's weights, config and card in the local Hugging Face cache (nothing else is fetched)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=[WEIGHTS_NAME, CONFIG_NAME, CARD_NAME],
                                      library_name="ovseg"))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{repo_id}: no such local file or folder, and no model on the Hugging Face Hub "
                              f"under that id ({reason})") from e


def save_pretrained(model: OVSegmentor, folder: str | Path, preset: str | None = None,
                    trained_on: str | None = None, evaluation: Mapping[str, float] | None = None,
                    repo_id: str | None = None) -> Path:
    """Write ``model`` as a Hub-style folder (each file atomically); returns the folder. ``preset``,
    ``trained_on`` and ``evaluation`` ({benchmark: mIoU in %}) go into the model card when given."""
    folder = Path(folder)
    config = resolved_config(model.cfg)
    save_weights(model.state_dict(), config, folder / WEIGHTS_NAME)
    atomic_write_json(folder / CONFIG_NAME, config)
    card = model_card(model, preset, trained_on, evaluation, repo_id or folder.name, repo_id or str(folder))
    _write_text(folder / CARD_NAME, card)
    return folder


def push_to_hub(model: OVSegmentor, repo_id: str, private: bool | None = None, token: str | None = None,
                revision: str | None = None, commit_message: str = "Upload ovseg model", preset: str | None = None,
                trained_on: str | None = None, evaluation: Mapping[str, float] | None = None) -> Any:
    """``save_pretrained`` into a temporary folder, create the repo if needed and upload the folder as one
    commit; returns huggingface_hub's ``CommitInfo``. ``token``: as huggingface_hub takes it (None: the login)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="ovseg-push-") as tmp:
        save_pretrained(model, tmp, preset, trained_on, evaluation, repo_id)
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(repo_id=repo.repo_id, folder_path=tmp, revision=revision,
                                 commit_message=commit_message)


def model_card(model: OVSegmentor, preset: str | None, trained_on: str | None,
               evaluation: Mapping[str, float] | None, name: str, location: str) -> str:
    """A Hub model card: YAML metadata (library, task, evaluation results) and what a reader needs to use it;
    ``name`` titles it, ``location`` (a repo id or a folder) is what ``from_pretrained`` is shown loading."""
    from huggingface_hub import EvalResult, ModelCardData

    results = [EvalResult(task_type="image-segmentation", dataset_type=bench, dataset_name=bench, metric_type="mIoU",
                          metric_value=float(miou)) for bench, miou in (evaluation or {}).items()]
    data = ModelCardData(library_name="ovseg", pipeline_tag="image-segmentation", model_name=name,
                         tags=["open-vocabulary-segmentation", "zero-shot", "groupvit", "ovsegmentor"],
                         eval_results=results or None)
    sections = [f"# {name}", _INTRO, "## Architecture", architecture_table(model, preset), "## Training data",
                trained_on or "Not recorded.", "## Evaluation", evaluation_table(evaluation), "## How to use",
                _USAGE.format(location=location)]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"


_INTRO = ("An open-vocabulary semantic segmentation model in the format of ovseg, a re-implementation of "
          "OVSegmentor (CVPR 2023): it segments an image into any list of class names, having learned from "
          "image-caption pairs without masks.")

_USAGE = """```python
import ovseg

model = ovseg.OVSegmentor.from_pretrained("{location}")
seg = ovseg.Segmenter(model)
seg.set_image("photo.jpg")                       # encoded once
pred = seg.predict(["cat", "dog", "person|man|woman"])
pred.labels                                      # (H, W) int64 indices into pred.class_names
```

Loading reads `model.safetensors` and `config.json` only; `config.json` is checked like any checkpoint's
config (it describes an architecture and never chooses code, paths or hub ids)."""


def architecture_table(model: OVSegmentor, preset: str | None) -> str:
    """A two-column Markdown table: preset, both encoders, the joint space and the parameter count."""
    cfg, ie, te = model.cfg, model.cfg.img_encoder, model.cfg.text_encoder
    text_sizes = ", ".join(f"{k} {v}" for k, v in dict(te.hf_overrides).items())
    rows = [("preset", preset or "not recorded"),
            ("image encoder", f"GroupViT, {ie.patch_size}-px patches, width {ie.embed_dim}, blocks "
                              f"{list(ie.depths)}, group tokens {list(ie.num_group_tokens)} -> "
                              f"{ie.num_output_groups[-1]} segments"),
            ("text encoder", te.name + (f" ({text_sizes})" if text_sizes else "")),
            ("joint space", f"{cfg.output_dim} dimensions"),
            ("parameters", f"{sum(p.numel() for p in model.parameters()):,}")]
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def evaluation_table(evaluation: Mapping[str, float] | None) -> str:
    if not evaluation:
        return "No figures recorded."
    rows = "\n".join(f"| {bench} | {float(miou):.1f} |" for bench, miou in evaluation.items())
    return "| benchmark | mIoU (%) |\n|---|---|\n" + rows


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _from_pretrained(path_or_repo_id: str | Path, **kwargs: Any) -> OVSegmentor:
    return load_pretrained(path_or_repo_id, **kwargs)[0]


OVSegmentor.hub_io = HubIO(load=_from_pretrained, save=save_pretrained, push=push_to_hub)
