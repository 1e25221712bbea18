"""The training engine: both stages, one process or many (torchrun, srun), CPU (gloo) or GPU (NCCL).

``train(cfg)`` builds the model (stage 2 starts from ``checkpoint.stage1_checkpoint``), runs AdamW with the
original's cosine schedule and linear lr scaling, bf16 autocast where configured, gradient accumulation
and clipping, EMA updates of the momentum encoder, JSONL metrics and a progress bar, periodic validation
with best-checkpoint selection (validation split only, never test), atomic checkpoints and auto-resume.

Distributed training is built to equal one process over the concatenated batch: every world size draws
the same global batches (one ``DistributedSampler`` permutation, split across ranks), contrastive negatives
are gathered from every rank with gradient, the optional prompt losses run over the global batch,
projection heads normalise over the global batch, and DDP averages gradients. Only stage 2's mask loss
keeps the original's per-process normalisation (summed over the process's batch, spec §2.3), so there
W processes equal one process with ``maskloss_weight / W``. Rank 0 logs, validates and writes checkpoints;
every rank resumes from the checkpoint rank 0 names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..checkpoints import load_model, save_model
from ..checkpoints.training import (
    latest_checkpoint,
    load_training_checkpoint,
    model_config_change,
    save_training_checkpoint,
)
from ..config import TrainingPrecision
from ..data.builder import build_collator, build_train_dataset, scene_split
from ..data.scenes.dataset import class_names
from ..errors import ConfigError, OvsegError
from ..factory import create_model
from ..fileio import atomic_write
from ..inference.segmenter import check_seg_config
from ..model import OVSegmentor
from ..model.text import build_tokenizer
from ..model.vision import stem_precision
from . import distributed as D
from .compilation import compile_hot_modules
from .optim import build_optimizer, lr_at, scaled_lrs, set_lr
from .sync_batchnorm import convert_batchnorm
from .task import compute_losses
from .text_features import TextFeatures
from .validate import evaluate_scenes

log = logging.getLogger(__name__)


class NonFiniteLoss(OvsegError):
    """Training stopped because a loss became NaN or infinite."""


@dataclass
class TrainResult:
    output: Path
    final: Path
    best: Path | None
    best_val_miou: float | None
    best_bg_thresh: float | None
    steps: int


AMP_MODES = get_args(TrainingPrecision)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The training step's autocast dtype: bf16 when asked for (or on CUDA with ``auto``), else None (fp32;
    ``bf16-stem`` runs only the image stem in bf16, see ``stem_dtype``)."""
    if amp not in AMP_MODES:
        raise ConfigError(f"train.amp: expected {', '.join(AMP_MODES)}, got '{amp}'")
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def stem_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 for the image stem alone with ``bf16-stem`` where bf16 is native (CUDA, or a CPU with AMX):
    the quickstart's conv stem then runs ~2x faster on CPU, while its small transformer would lose more
    to casts than it gains (BENCHMARKS.md). A CPU without AMX would emulate bf16, so it stays fp32 there."""
    if amp != "bf16-stem":
        return None
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_amx()):
        return torch.bfloat16
    log.info("train.amp=bf16-stem: this CPU has no AMX, so the stem stays fp32")
    return None


def cpu_has_amx() -> bool:
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, hence the guard
    return bool(probe and probe())


def build_model(cfg: DictConfig, device: torch.device) -> OVSegmentor:
    """A fresh model; stage 2 loads the stage-1 weights and copies the image encoder into the EMA one."""
    model = create_model(cfg)
    if cfg.train.stage == 2:
        path = cfg.checkpoint.stage1_checkpoint
        if not path:
            raise ConfigError("stage 2 needs checkpoint.stage1_checkpoint (the stage-1 result to start from)")
        stage1, _ = load_model(path, training=True)
        missing, unexpected = model.load_state_dict(stage1.state_dict(), strict=False)
        bad = [k for k in missing if not k.startswith("img_encoder_momentum.")] + list(unexpected)
        if bad:
            raise ConfigError(f"{path}: does not fit the stage-2 model ({len(bad)} keys differ, e.g. {bad[0]})")
        model.img_encoder_momentum.load_state_dict(model.img_encoder.state_dict())
    if D.is_distributed():
        model = convert_batchnorm(model, device.type)
    return model.to(device).train()


def set_hard_assignment(model: OVSegmentor, hard: bool) -> None:
    """Switch the grouping between Gumbel hard (the paper) and soft assignment (a warm-up option).
    A model configured soft (``img_encoder.hard_assignment: false``) stays soft."""
    hard = hard and model.cfg.img_encoder.hard_assignment
    for module in model.modules():
        if module.__class__.__name__ == "AssignAttention":
            module.hard = module.gumbel = hard


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class TrainStep(nn.Module):
    """The losses of one batch as a module's forward, so that DDP can wrap it (it hooks ``forward``)."""

    def __init__(self, model: OVSegmentor, text: TextFeatures, cfg: DictConfig):
        super().__init__()
        self.model, self.text, self.cfg = model, text, cfg

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return compute_losses(self.model, batch, self.text, self.cfg)


class Run:
    """Everything one training run holds; ``train`` drives it."""

    def __init__(self, cfg: DictConfig, output: Path):
        self.cfg, self.output = cfg, output
        t = cfg.train
        self.device = D.init_from_environment(t.device, t.dist_backend, t.dist_timeout_s)
        seed_everything(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        self.model = build_model(cfg, self.device)
        if t.compile:
            compile_hot_modules(self.model)
        seed_everything(cfg.seed + D.rank())  # then independent randomness per rank (Gumbel noise, dropout)
        te = cfg.model.text_encoder
        self.text = TextFeatures(self.model, build_tokenizer(te.name, te.tokenizer), te.max_length, cache=te.fixed,
                                 cache_dtype=torch.bfloat16 if cfg.train.text_cache_bf16 else None)
        self.step_module: nn.Module = TrainStep(self.model, self.text, cfg.model)
        if D.is_distributed():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module = DistributedDataParallel(self.step_module, device_ids=ids)
        self.dataset = build_train_dataset(cfg)
        self.loader = self._loader()
        self.steps_per_epoch = max(1, self._batches_per_epoch() // cfg.train.accumulation_steps)
        self.total = cfg.train.max_steps or cfg.train.epochs * self.steps_per_epoch
        self.warmup = round(cfg.train.warmup_epochs * self.steps_per_epoch)
        self.global_batch = global_batch = cfg.data.batch_size * D.world_size() * cfg.train.accumulation_steps
        self.base_lr, self.warmup_lr, self.min_lr = scaled_lrs(cfg.train, global_batch)
        self.optimizer = build_optimizer(self.model, cfg.train, self.base_lr)
        self.amp = autocast_dtype(cfg.train.amp, self.device)
        self.stem_amp = stem_dtype(cfg.train.amp, self.device)
        self.state = {"step": 0, "epoch": 0, "best_val_miou": None, "best_bg_thresh": None}
        self.val_set = scene_split(cfg, "val") if cfg.data.type == "scenes" else None
        if self.val_set is not None:
            check_seg_config(self.model, cfg.evaluate.seg)

    def _loader(self) -> torch.utils.data.DataLoader:
        """Map-style data: one seeded permutation per epoch, split across ranks (rank r takes every W-th
        sample), so any world size sees the same global batches. Streaming data split themselves."""
        self.sampler = None
        if not isinstance(self.dataset, torch.utils.data.IterableDataset):
            self.sampler = torch.utils.data.DistributedSampler(
                self.dataset, num_replicas=D.world_size(), rank=D.rank(), shuffle=True, seed=self.cfg.seed,
                drop_last=True)
        self.collator = build_collator(self.cfg, self.cfg.seed)
        # workers are started per epoch (not persistent) so that they see the epoch set on dataset and collator
        return torch.utils.data.DataLoader(
            self.dataset, batch_size=self.cfg.data.batch_size, sampler=self.sampler,
            num_workers=self.cfg.data.num_workers, collate_fn=self.collator, drop_last=True,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.cfg.seed))  # its own: never draws from the global RNG

    def _batches_per_epoch(self) -> int:
        """Map-style: the loader's length. Streaming: what the rank with the fewest samples yields, so that
        every rank takes the same number of steps (DDP needs lock-step)."""
        if isinstance(self.dataset, torch.utils.data.IterableDataset):
            return self.dataset.batches_per_epoch(self.cfg.data.batch_size, self.cfg.data.num_workers)
        return len(self.loader)

    def warm_text_cache(self) -> None:
        """Encode every caption and question of a known caption pool at once (frozen text encoder only)."""
        captions = getattr(self.dataset, "captions", None)
        pool = captions() if captions is not None and self.text.cache is not None else None
        if pool is None:  # large corpora: features are cached as the captions come
            return
        texts = list(pool)
        collator = build_collator(self.cfg, 0)
        if collator.extractor is not None:
            texts += [collator.extractor.question_answer(c)[0] for c in texts]
        start, cache_file = time.perf_counter(), self.cfg.train.text_cache_file
        if cache_file:
            self.text.load(Path(cache_file))
        self.text.warm(texts)
        self.set_text_center(list(pool))
        if cache_file and D.is_main():
            self.text.save(Path(cache_file))
        log.info("encoded %d texts with the frozen text encoder in %.1f s", len(texts), time.perf_counter() - start)

    def set_text_center(self, captions: list[str]) -> None:
        """Centre the frozen text features on the training captions' mean (a buffer saved with the model)."""
        encoder = self.model.text_encoder
        if not encoder.center or self.state["step"] > 0:
            return
        pooled = torch.stack([self.text.cache[c][0] for c in captions])  # cached features are uncentred
        encoder.feature_mean.copy_(pooled.mean(0).to(encoder.feature_mean))

    def resume(self) -> None:
        """Continue from the last checkpoint; rank 0 chooses it, so that every rank loads the same one."""
        found = self._find_checkpoint() if D.is_main() else None
        found = D.broadcast_object(found)
        if isinstance(found, str):  # rank 0's error, raised on every rank
            raise ConfigError(found)
        if found:
            self.state.update(load_training_checkpoint(*map(Path, found), self.model, self.optimizer))
            self._rescale_schedule(found[0])
            log.info("resumed from %s at step %d", found[0], self.state["step"])

    def _find_checkpoint(self) -> tuple[str, str] | str | None:
        ckpt = self.cfg.checkpoint
        found = latest_checkpoint(self.output / "checkpoints") if ckpt.auto_resume and not ckpt.resume else None
        change = model_config_change(found[0], OmegaConf.to_container(self.cfg.model, resolve=True)) if found else None
        if change:
            return (f"{self.output} holds a run of another model ({change}); choose another output folder, or "
                    f"delete {self.output / 'checkpoints'} to start afresh")
        if ckpt.resume:
            found = latest_checkpoint(Path(ckpt.resume)) if Path(ckpt.resume).is_dir() else None
            if found is None:
                return f"checkpoint.resume: no training checkpoint in {ckpt.resume}"
        return (str(found[0]), str(found[1])) if found else None

    def _rescale_schedule(self, source: str) -> None:
        """A checkpoint of another global batch (world size, batch or accumulation changed): keep the number
        of samples seen, so the schedule and the data position continue where they were."""
        saved = self.state.get("global_batch", self.global_batch)
        if saved == self.global_batch:
            return
        step = round(self.state["step"] * saved / self.global_batch)
        if D.is_main():
            log.warning("%s was written with a global batch of %d (world size %s); this run has %d (world size %d): "
                        "step %d becomes step %d (same samples seen)", source, saved, self.state.get("world_size"),
                        self.global_batch, D.world_size(), self.state["step"], step)
        self.state.update(step=step, epoch=step // self.steps_per_epoch)

    def save(self) -> Path | None:
        self.state.update(global_batch=self.global_batch, world_size=D.world_size())
        if not D.is_main():
            return None
        return save_training_checkpoint(self.output / "checkpoints", self.model, self.cfg, self.optimizer,
                                        dict(self.state), self.cfg.checkpoint.keep_last)

    def epoch_batches(self, epoch: int):
        """The epoch's batches; on resume the ones already consumed are skipped (same order)."""
        for obj in (self.dataset, self.sampler):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)
        self.collator.epoch = epoch
        self.loader.generator.manual_seed(self.cfg.seed * 1000 + epoch)  # worker seeds, resumable
        wanted = self.steps_per_epoch * self.cfg.train.accumulation_steps
        done = (self.state["step"] - epoch * self.steps_per_epoch) * self.cfg.train.accumulation_steps
        i = 0
        while i < wanted:  # a streaming epoch that skipped samples is topped up from its own start
            before = i
            for batch in self.loader:
                if i >= wanted:
                    break
                if i >= done:
                    yield batch
                i += 1
            if i == before:
                raise OvsegError(f"epoch {epoch}: the training data gave no complete batch of "
                                 f"{self.cfg.data.batch_size} (too few readable samples here; see the warnings)")
        if hasattr(self.dataset, "skipped"):
            self.log({"epoch": epoch, "skipped": self.dataset.skipped()})

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def step(self, batches: list[dict]) -> dict[str, torch.Tensor]:
        """One optimizer step over ``accumulation_steps`` micro-batches."""
        step = self.state["step"]
        set_lr(self.optimizer, lr_at(step, self.total, self.warmup, self.base_lr, self.warmup_lr, self.min_lr))
        set_hard_assignment(self.model, step >= self.cfg.train.soft_assignment_fraction * self.total)
        parts: dict[str, torch.Tensor] = {}
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1  # DDP averages gradients once, after the last micro-batch
            sync = self.step_module.no_sync() if D.is_distributed() and not last else contextlib.nullcontext()
            with sync:
                with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None), \
                        stem_precision(self.model.image_encoders(), self.stem_amp):
                    losses = self.step_module(self.to_device(batch))
                (losses["total"] / len(batches)).backward()
            parts = {k: parts.get(k, 0) + v.detach() / len(batches) for k, v in losses.items()}
        if self.cfg.train.clip_grad > 0:
            parts["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.clip_grad)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.cfg.model.use_maskloss:
            self.model.momentum_update()
        self.state["step"] = step + 1
        return parts

    def validate(self) -> None:
        """Zero-shot val mIoU for each candidate background threshold; keep the best model."""
        if self.val_set is None or not D.is_main():
            return
        results = evaluate_scenes(self.model, self.val_set, class_names(), list(self.cfg.evaluate.val_bg_thresholds),
                                  self.cfg.data.image_size, self.cfg.evaluate.seg)
        thresh, best = max(results.items(), key=lambda kv: kv[1]["miou"])
        self.log({"step": self.state["step"], "val_miou": best["miou"], "val_bg_thresh": thresh})
        if self.state["best_val_miou"] is None or best["miou"] > self.state["best_val_miou"]:
            self.state.update(best_val_miou=best["miou"], best_bg_thresh=thresh)
            save_model(self.model, self.cfg, self.output / "best.safetensors",
                       extra={"step": str(self.state["step"]), "val_miou": f"{best['miou']:.4f}",
                              "bg_thresh": str(thresh)})

    def log(self, record: dict) -> None:
        if D.is_main():
            with open(self.output / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")


def check_finite(parts: dict[str, torch.Tensor], step: int, output: Path) -> None:
    """Stop with the step and the loss part when a loss is NaN or infinite (host sync: log steps only)."""
    bad = [k for k, v in parts.items() if k != "grad_norm" and not math.isfinite(float(v))]
    if bad:
        try:
            found = latest_checkpoint(output / "checkpoints")
        except OvsegError:
            found = None
        keep = found[0].name if found else "none yet"
        raise NonFiniteLoss(f"step {step}: loss '{bad[0]}' is {float(parts[bad[0]])}; stopped "
                            f"(last good checkpoint: {keep})")


def train(cfg: DictConfig, output: str | Path | None = None) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; checkpoints and metrics go to ``output``.

    Under torchrun or srun every process calls this; it joins the process group (and leaves it at the end
    if it joined it here)."""
    joins = not D.is_distributed()
    D.init_from_environment(cfg.train.device, cfg.train.dist_backend, cfg.train.dist_timeout_s)
    try:
        result = _train(cfg, Path(output or cfg.output))
        D.barrier()  # the other ranks wait for rank 0's final validation and checkpoint
        return result
    finally:
        if joins:
            D.shutdown()


def _train(cfg: DictConfig, output: Path) -> TrainResult:
    output.mkdir(parents=True, exist_ok=True)
    if D.is_main():
        atomic_write(output / "config.yaml", lambda tmp: OmegaConf.save(cfg, tmp, resolve=True))
    run = Run(cfg, output)
    run.warm_text_cache()
    run.resume()
    cfg_t, every = cfg.train, cfg.checkpoint.every_steps
    bar = tqdm(total=run.total, initial=run.state["step"], desc=f"stage {cfg_t.stage}", disable=not D.is_main(),
               dynamic_ncols=True)
    tick, seen = time.perf_counter(), 0
    while run.state["step"] < run.total:
        epoch = run.state["step"] // run.steps_per_epoch
        run.state["epoch"] = epoch
        pending: list[dict] = []
        for batch in run.epoch_batches(epoch):
            pending.append(batch)
            if len(pending) < cfg_t.accumulation_steps:
                continue
            parts, pending = run.step(pending), []
            step, seen = run.state["step"], seen + cfg.data.batch_size * cfg_t.accumulation_steps
            bar.update(1)
            if step % cfg_t.log_every == 0 or step == run.total or (every and step % every == 0):
                parts = D.mean_over_ranks(parts)  # every rank takes this branch: the steps agree
                check_finite(parts, step, output)
                rate, tick, seen = seen * D.world_size() / (time.perf_counter() - tick), time.perf_counter(), 0
                record = {"step": step, "epoch": epoch, "lr": run.optimizer.param_groups[0]["lr"],
                          "logit_scale": float(run.model.scale().detach()), "samples_per_s": rate,
                          **{f"loss_{k}": float(v) for k, v in parts.items()}}
                run.log(record)
                bar.set_postfix(loss=f"{record['loss_total']:.3f}", rate=f"{rate:.0f}/s")
            if cfg.evaluate.val_every_steps and step % cfg.evaluate.val_every_steps == 0 and step < run.total:
                run.validate()
            if every and step % every == 0 and step < run.total:  # the last step is saved after validation
                run.save()
            if step >= run.total:
                break
    bar.close()
    run.validate()  # may update best_val_miou, so the final checkpoint is written after it
    run.save()
    final = output / "final.safetensors"
    if D.is_main():
        save_model(run.model, cfg, final, extra={"step": str(run.state["step"])})
    best = output / "best.safetensors"
    return TrainResult(output, final, best if best.is_file() else None, run.state["best_val_miou"],
                       run.state["best_bg_thresh"], run.state["step"])
