"""Training checkpoints: model (ovseg safetensors) + training state, written atomically, resumable.

Layout under ``<output>/checkpoints``: ``step_00001000.safetensors`` (weights + config),
``step_00001000.state.pt`` (optimizer, step, epoch, RNG, metrics; plain tensors/containers, read back with
``weights_only=True``) and ``latest.json`` naming the last complete pair; it is replaced only after both
files are on disk, so a run killed at any moment resumes from the last complete checkpoint.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from ..errors import CheckpointError
from ..fileio import atomic_write
from ..model import OVSegmentor
from .loading import load_state_dict_checked, save_model


def save_training_checkpoint(folder: Path, model: OVSegmentor, cfg: DictConfig, optimizer: torch.optim.Optimizer,
                             state: dict, keep_last: int) -> Path:
    """Write weights + state for ``state['step']`` and point ``latest.json`` at them."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"step_{state['step']:08d}"
    weights, train_state = folder / f"{stem}.safetensors", folder / f"{stem}.state.pt"
    save_model(model, cfg, weights, extra={"step": str(state["step"])})
    payload = {**state, "optimizer": optimizer.state_dict(), "rng": _rng_state()}
    atomic_write(train_state, lambda tmp: torch.save(payload, tmp))
    pointer = {"step": state["step"], "weights": weights.name, "state": train_state.name}
    atomic_write(folder / "latest.json", lambda tmp: Path(tmp).write_text(json.dumps(pointer)))
    _prune(folder, keep_last)
    return weights


def _prune(folder: Path, keep_last: int) -> None:
    if keep_last <= 0:
        return
    stems = sorted({p.name.split(".")[0] for p in folder.glob("step_*.safetensors")})
    for stem in stems[:-keep_last]:
        for path in folder.glob(f"{stem}.*"):
            path.unlink(missing_ok=True)


def latest_checkpoint(folder: Path) -> tuple[Path, Path] | None:
    """(weights, state) of the last complete checkpoint in ``folder``, if any."""
    pointer = folder / "latest.json"
    if not pointer.is_file():
        return None
    info = json.loads(pointer.read_text())
    weights, state = folder / info["weights"], folder / info["state"]
    if not (weights.is_file() and state.is_file()):
        raise CheckpointError(f"{pointer}: names {info['weights']} / {info['state']}, which are missing")
    return weights, state


def model_config_change(weights: Path, model_cfg: dict) -> str | None:
    """'key: saved → current' for the first model setting in which the checkpoint ``weights`` differs from
    ``model_cfg`` (a plain dict of the run's ``model`` section), or None when they agree."""
    from .files import read_header

    saved = json.loads(read_header(weights).get("config", "{}")).get("model")
    if saved is None:
        return None

    def first_difference(old, new, prefix: str) -> str | None:
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                found = first_difference(old.get(key), new.get(key), f"{prefix}.{key}")
                if found:
                    return found
            return None
        return None if old == new else f"{prefix}: {old} → {new}"

    return first_difference(saved, model_cfg, "model")


def load_training_checkpoint(weights: Path, state_path: Path, model: OVSegmentor,
                             optimizer: torch.optim.Optimizer) -> dict:
    """Restore model, optimizer and RNG; return the saved state (step, epoch, metrics …)."""
    from safetensors.torch import load_file

    load_state_dict_checked(model, load_file(str(weights)), str(weights))
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling failure means the file is unusable
        raise CheckpointError(f"{state_path}: unreadable training state ({str(e).splitlines()[0]})") from e
    optimizer.load_state_dict(state.pop("optimizer"))
    _set_rng_state(state.pop("rng"))
    return state


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(),
            "python": list(random.getstate()[1])}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np_state = np.random.get_state()
    np.random.set_state((np_state[0], np.asarray(state["numpy"], dtype=np.uint32), *np_state[2:]))
    py = random.getstate()
    random.setstate((py[0], tuple(state["python"]), py[2]))
