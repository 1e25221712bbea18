"""Which checkpoint a training run continues from, and where its schedule stands then."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..checkpoints.training import latest_checkpoint, model_config_change

log = logging.getLogger(__name__)


def find_checkpoint(cfg: DictConfig, output: Path) -> tuple[str, str] | str | None:
    """(weights, state) paths to resume from: ``checkpoint.resume``'s folder, else (auto-resume) the output
    folder's latest; None to start afresh; a message (str) when the output folder holds another model's run
    or ``checkpoint.resume`` names no checkpoint. Strings only: rank 0 broadcasts the answer."""
    ckpt = cfg.checkpoint
    found = latest_checkpoint(output / "checkpoints") if ckpt.auto_resume and not ckpt.resume else None
    change = model_config_change(found[0], OmegaConf.to_container(cfg.model, resolve=True)) if found else None
    if change:
        return (f"{output} holds a run of another model ({change}); choose another output folder, or "
                f"delete {output / 'checkpoints'} to start afresh")
    if ckpt.resume:
        found = latest_checkpoint(Path(ckpt.resume)) if Path(ckpt.resume).is_dir() else None
        if found is None:
            return f"checkpoint.resume: no training checkpoint in {ckpt.resume}"
    return (str(found[0]), str(found[1])) if found else None


def same_samples_step(state: dict, global_batch: int, world_size: int, source: str, warn: bool) -> int | None:
    """For a checkpoint of another global batch (world size, batch or accumulation changed): the step of this
    run's ``global_batch`` that has seen as many samples as ``state["step"]`` did, so that the schedule and the
    data position continue where they were (logged when ``warn``). None when the global batch is the same."""
    saved = state.get("global_batch", global_batch)
    if saved == global_batch:
        return None
    step = round(state["step"] * saved / global_batch)
    if warn:
        log.warning("%s was written with a global batch of %d (world size %s); this run has %d (world size %d): "
                    "step %d becomes step %d (same samples seen)", source, saved, state.get("world_size"),
                    global_batch, world_size, state["step"], step)
    return step
