"""The pretraining loop of ``ovseg pretrain-ssl``: one process, CPU or one GPU.

Each step renders ``ssl.batch_size`` images of the scene stream (``stream``), draws their views (DINO's
multi-crop of ``augment``, or the method's own ``views``), takes one AdamW step on the method's student
(``dino``, ``ibot`` or ``simmim``) with a warm-up and cosine learning rate, and moves the teacher, where the
method has one, towards the student with a momentum that a cosine brings from ``ssl.momentum`` to 1. The
engine's pieces do the rest: atomic training checkpoints (``step_N`` pairs and ``latest.json``) and
auto-resume, ``metrics.jsonl``, a tqdm bar. A run resumed in a folder of a run with other settings is
refused. The result is ``encoder.safetensors`` (the method's exported stem, position table and pre-grouping
blocks — the teacher's, or SimMIM's trained encoder — in ``checkpoints.backbone_formats``' ovseg-ssl format)
and its record ``encoder.json``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ...checkpoints.backbone_formats import ssl_encoder_shape, write_ssl_encoder
from ...checkpoints.training import (
    first_difference,
    latest_checkpoint,
    load_training_checkpoint,
    save_training_checkpoint,
    stored_config,
)
from ...config import merge_checked, schema, to_container
from ...errors import ConfigError
from ...fileio import atomic_write
from ...weights import machine_description, software_versions, write_record
from ..optim import lr_at, param_groups, set_lr
from ..trainer import check_finite, seed_everything
from .augment import MultiCrop
from .dino import Dino
from .ibot import Ibot
from .simmim import Simmim
from .stream import SceneStream

METHODS = {"dino": Dino, "ibot": Ibot, "simmim": Simmim}
ENCODER_FILE = "encoder.safetensors"
RUN_ONLY = ("num_workers", "log_every", "checkpoint_every", "keep_last")  # may change when a run resumes


@dataclass
class SslResult:
    """``weights``: the exported encoder file (its record beside it, ``.json``)."""

    output: Path
    weights: Path
    steps: int
    minutes: float


def pick_device(name: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; a GPU asked for without one is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name}: no CUDA device is visible to this process")
    return torch.device(name)


def momentum_at(step: int, total: int, base: float) -> float:
    """DINO's teacher momentum: from ``base`` at step 0 to 1 at ``total`` along a cosine."""
    return 1 - (1 - base) * (math.cos(math.pi * min(step, total) / total) + 1) / 2


def settings(cfg: DictConfig) -> dict:
    """What a resumed run must share with the run it continues: the encoder, the method's settings, the
    stream's seed and images."""
    ssl = {k: v for k, v in to_container(cfg.ssl).items() if k not in RUN_ONLY}
    return {
        "model": {"img_encoder": to_container(cfg.model.img_encoder)},
        "ssl": ssl,
        "seed": cfg.seed,
        "data": {"image_size": cfg.data.image_size, "scenes": {"clutter": cfg.data.scenes.clutter}},
    }


class SslRun:
    """The method, its views, optimizer and state; ``fit`` drives it. Construction order fixes the draws."""

    def __init__(self, cfg: DictConfig, output: Path):
        self.cfg, self.output, s = cfg, output, cfg.ssl
        if s.method not in METHODS:
            raise ConfigError(f"ssl.method: '{s.method}' is not one of {', '.join(METHODS)}")
        self.device = pick_device(cfg.train.device)
        seed_everything(cfg.seed)
        self.method = METHODS[s.method](cfg).to(self.device).train()
        self.views = getattr(self.method, "views", None) or MultiCrop(  # a method may draw its own views
            s.global_size, tuple(s.global_scale), s.local_crops, s.local_size, tuple(s.local_scale)
        )
        self.optimizer = torch.optim.AdamW(param_groups(self.method.student, s.weight_decay), lr=s.base_lr)
        self.state = {"step": 0, "seconds": 0.0}
        self.started = time.perf_counter()

    def resume(self) -> None:
        """Continue from the output folder's latest checkpoint, if any; refused when its settings differ."""
        found = latest_checkpoint(self.output / "checkpoints")
        if found is None:
            return
        saved = merge_checked(schema(), stored_config(found[0]), str(found[0]))
        change = first_difference(settings(saved), settings(self.cfg))
        if change:
            raise ConfigError(
                f"{self.output} holds a pretraining with other settings ({change}); choose another "
                f"output folder, or delete {self.output / 'checkpoints'} to start afresh"
            )
        self.state.update(load_training_checkpoint(found[0], found[1], self.method, self.optimizer))
        self.started = time.perf_counter()

    def batches(self):
        """The stream's batches from the current step on (rendered beside training with ``num_workers``)."""
        s = self.cfg.ssl
        stream = SceneStream(
            self.cfg.seed,
            s.batch_size,
            self.cfg.data.image_size,
            self.cfg.data.scenes.clutter,
            start=self.state["step"] * s.batch_size,
        )
        return torch.utils.data.DataLoader(
            stream, batch_size=None, num_workers=s.num_workers, generator=torch.Generator().manual_seed(self.cfg.seed)
        )  # not the global one

    def step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        s, step = self.cfg.ssl, self.state["step"]
        set_lr(self.optimizer, lr_at(step, s.steps, s.warmup_steps, s.base_lr, 0.0, s.min_lr))
        parts = self.method(self.views(images.to(self.device, non_blocking=True)))
        parts["total"].backward()
        if s.clip_grad > 0:
            parts["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.method.student.parameters(), s.clip_grad)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.method.update_teacher(momentum_at(step, s.steps, s.momentum))
        self.state["step"] = step + 1
        return {k: v.detach() for k, v in parts.items()}

    def fit(self, bar: tqdm) -> None:
        s, tick = self.cfg.ssl, time.perf_counter()
        if self.state["step"] >= s.steps:
            return
        for images in self.batches():
            parts = self.step(images)
            step = self.state["step"]
            bar.update(1)
            if step % s.log_every == 0 or step == s.steps:
                rate = s.log_every * s.batch_size / (time.perf_counter() - tick)
                self.report(parts, rate, bar)
                tick = time.perf_counter()
            if s.checkpoint_every and step % s.checkpoint_every == 0 and step < s.steps:
                self.save()
            if step >= s.steps:
                break

    def report(self, parts: dict[str, torch.Tensor], rate: float, bar: tqdm) -> None:
        step = self.state["step"]
        check_finite(parts, step, self.output)
        record = {
            "step": step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "momentum": momentum_at(step, self.cfg.ssl.steps, self.cfg.ssl.momentum),
            "images_per_s": rate,
            **{f"loss_{k}": float(v) for k, v in parts.items()},
        }
        with open(self.output / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        bar.set_postfix(loss=f"{record['loss_total']:.3f}", rate=f"{rate:.0f}/s")

    def minutes(self) -> float:
        """Minutes of pretraining so far, over every session of a resumed run."""
        return (self.state["seconds"] + time.perf_counter() - self.started) / 60

    def save(self) -> Path:
        self.state["seconds"] += time.perf_counter() - self.started
        self.started = time.perf_counter()
        return save_training_checkpoint(
            self.output / "checkpoints", self.method, self.cfg, self.optimizer, dict(self.state), self.cfg.ssl.keep_last
        )


def pretrain(cfg: DictConfig, output: str | Path | None = None, command: str = "", progress: bool = True) -> SslResult:
    """Run (or resume) the pretraining ``cfg`` describes; write ``encoder.safetensors`` and its record."""
    output = Path(output or cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write(output / "config.yaml", lambda tmp: OmegaConf.save(cfg, tmp, resolve=True))
    run = SslRun(cfg, output)
    run.resume()
    with tqdm(
        total=cfg.ssl.steps,
        initial=run.state["step"],
        desc=f"pretrain-ssl ({cfg.ssl.method})",
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        run.fit(bar)
    run.save()
    weights = output / ENCODER_FILE
    write_ssl_encoder(run.method.exported(), ssl_encoder_shape(cfg.model.img_encoder), cfg.ssl.method, weights)
    minutes = run.minutes()
    write_record(
        weights,
        command=command,
        config=to_container(cfg),
        seed=cfg.seed,
        steps=run.state["step"],
        minutes=round(minutes, 2),
        machine=machine_description(str(run.device)),
        software=software_versions(),
    )
    return SslResult(output, weights, run.state["step"], minutes)
