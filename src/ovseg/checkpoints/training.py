"""Training checkpoints: model (ovseg safetensors) + training state, written atomically, resumable.

Layout under ``<output>/checkpoints``: ``step_00001000.safetensors`` (weights + config),
``step_00001000.state.pt`` (optimizer, step, epoch, RNG, metrics; plain tensors/containers, read back with
``weights_only=True``) and ``latest.json`` naming the last complete pair; it is replaced only after both
files are on disk, so a run killed at any moment resumes from the last complete checkpoint. A torn or damaged
newest checkpoint (a full disk, a copy cut short) does not end the run either: resume falls back to the newest
intact pair still kept, with a warning for each file it passes over.
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from ..errors import CheckpointError
from ..fileio import atomic_write
from ..model import OVSegmentor
from .files import read_header, read_weights
from .loading import load_state_dict_checked, save_model
from .trust import parse_stored_config

log = logging.getLogger(__name__)
STEP_FILE = re.compile(r"(step_\d+)\.(safetensors|state\.pt)")


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
    _prune(folder, keep_last, stem)
    return weights


def _prune(folder: Path, keep_last: int, current: str) -> None:
    """Keep the ``keep_last`` newest pairs up to ``current``; newer ones (left by a run resumed from an older
    pair, after its newest was found damaged) are not counted, so they never crowd out the pair just written."""
    if keep_last <= 0:
        return
    stems = [s for s in _stems(folder) if _step(s) <= _step(current)]
    for stem in stems[keep_last:]:
        for path in folder.glob(f"{stem}.*"):
            path.unlink(missing_ok=True)


def latest_checkpoint(folder: Path) -> tuple[Path, Path] | None:
    """(weights, state) of the newest intact checkpoint in ``folder``: the pair ``latest.json`` names or, when
    that file or its pair is unreadable, the newest intact ``step_*`` pair (each file passed over is logged as
    a warning). None when the folder holds no checkpoint; CheckpointError when it holds only damaged ones."""
    pointer, stems = folder / "latest.json", _stems(folder)
    if not stems and not pointer.is_file():
        return None
    named = _named_stem(pointer)
    for stem in dict.fromkeys(([named] if named else []) + stems):  # newest first, the named one before all
        problem = checkpoint_problem(folder, stem)
        if problem is None:
            if stem != named:
                log.warning("resuming from %s, the newest intact checkpoint", folder / f"{stem}.safetensors")
            return folder / f"{stem}.safetensors", folder / f"{stem}.state.pt"
        log.warning("skipped checkpoint %s", problem)
    raise CheckpointError(f"{folder}: no intact training checkpoint (the files are truncated or damaged, see the "
                          "warnings above); delete the folder to start afresh")


def _stems(folder: Path) -> list[str]:
    """Names ``step_N`` of the checkpoint files in ``folder`` (either half of a pair), newest first."""
    found = {m.group(1) for p in folder.glob("step_*") if (m := STEP_FILE.fullmatch(p.name))}
    return sorted(found, key=_step, reverse=True)


def _step(stem: str) -> int:
    return int(stem.removeprefix("step_"))


def _named_stem(pointer: Path) -> str | None:
    """The ``step_N`` that ``latest.json`` names; None (and a warning why) when it is missing or malformed."""
    try:
        info = json.loads(pointer.read_text(encoding="utf-8"))
    except FileNotFoundError:
        log.warning("skipped %s: missing", pointer)
        return None
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or not UTF-8
        log.warning("skipped %s: not readable JSON (%s)", pointer, _first_line(e))
        return None
    weights = info.get("weights") if isinstance(info, dict) else None
    found = STEP_FILE.fullmatch(weights) if isinstance(weights, str) else None
    if not found or found.group(2) != "safetensors" or info.get("state") != f"{found.group(1)}.state.pt":
        log.warning("skipped %s: does not name a step_N.safetensors + step_N.state.pt pair", pointer)
        return None
    return found.group(1)


def checkpoint_problem(folder: Path, stem: str) -> str | None:
    """'FILE: why' when the pair ``stem`` cannot be resumed from, else None. Checked cheaply but for real:
    safe_open checks that the file is as long as its header says, and the state is loaded memory-mapped
    (its archive directory and pickle are read; torch checks no checksum of tensor bytes, so reading them
    would find nothing more)."""
    weights, state = folder / f"{stem}.safetensors", folder / f"{stem}.state.pt"
    for path in (weights, state):
        if not path.is_file():
            return f"{path}: missing"
        if path.stat().st_size == 0:
            return f"{path}: empty"
    try:
        stored_config(weights)
    except CheckpointError as e:
        return _first_line(e)
    try:
        saved = torch.load(state, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # any failure to unpickle means the file is unusable
        return f"{state}: unreadable training state ({_first_line(e)})"
    if not (isinstance(saved, dict) and {"step", "optimizer", "rng"} <= saved.keys()):
        return f"{state}: not a training state (expected step, optimizer and rng)"
    return None


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def stored_config(weights: Path) -> dict:
    """The config in the header of ``weights``; CheckpointError (one line) when it is not a JSON mapping."""
    stored = parse_stored_config(read_header(weights).get("config"), str(weights))
    if not isinstance(stored, dict):
        raise CheckpointError(f"{weights}: the config in its header is not a mapping")
    return stored


def model_config_change(weights: Path, model_cfg: dict) -> str | None:
    """'key: saved → current' for the first model setting in which the checkpoint ``weights`` differs from
    ``model_cfg`` (a plain dict of the run's ``model`` section), or None when they agree. A header that is
    not JSON is a CheckpointError: the file is not what ovseg wrote."""
    saved = stored_config(weights).get("model")
    return None if saved is None else first_difference(saved, model_cfg, "model")


def first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    """'key: old → new' for the first setting (dotted path under ``prefix``) in which two nested mappings
    differ, else None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = first_difference(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
            if found:
                return found
        return None
    return None if old == new else f"{prefix}: {old} → {new}"


def load_training_checkpoint(weights: Path, state_path: Path, model: OVSegmentor,
                             optimizer: torch.optim.Optimizer) -> dict:
    """Restore model, optimizer and RNG; return the saved state (step, epoch, metrics …)."""
    load_state_dict_checked(model, read_weights(weights)[0], str(weights))
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling failure means the file is unusable
        raise CheckpointError(f"{state_path}: unreadable training state ({_first_line(e)})") from e
    if not (isinstance(state, dict) and {"optimizer", "rng"} <= state.keys()):
        raise CheckpointError(f"{state_path}: not a training state (expected step, optimizer and rng)")
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
