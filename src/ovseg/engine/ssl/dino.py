"""DINO (Caron et al., 2021), the paper's initialiser: a student matches an EMA teacher's sharpened, centred
distribution over prototypes across multi-crop views of an image; no labels.

The quickstart's encoder has no CLS token, so an image's embedding is the mean of its patch tokens after a
LayerNorm (as DINO does for backbones without one). Views are encoded in one pass per resolution (the stem's
BatchNorm sees the two global views together, and the local views together). The teacher stays in training
mode, as in DINO, so its BatchNorm uses batch statistics and keeps running statistics of its own: those are
what the exported stem carries.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from .backbone import SslBackbone


class ProjectionHead(nn.Module):
    """(…, C) tokens -> (…, K) prototype scores: LayerNorm, a 3-layer MLP to a bottleneck, L2-normalised, then
    cosine similarity with K unit-norm prototypes (DINO's weight-normalised last layer with its norm fixed)."""

    def __init__(self, dim: int, hidden: int, bottleneck: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck)
        )
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck))
        nn.init.trunc_normal_(self.prototypes, std=0.02)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, C): the image's mean normalised token."""
        return self.norm(tokens).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(x), dim=-1)
        return z @ F.normalize(self.prototypes, dim=-1).t()


def sharpened_targets(logits: torch.Tensor, center: torch.Tensor, temp: float) -> torch.Tensor:
    """The teacher's targets: softmax((logits − center) / temp), no gradient."""
    return F.softmax((logits.detach() - center) / temp, dim=-1)


def cross_entropy(targets: torch.Tensor, logits: torch.Tensor, temp: float) -> torch.Tensor:
    """Σ_k −q_k log p_k with p = softmax(logits / temp), per row (…,)."""
    return -(targets * F.log_softmax(logits / temp, dim=-1)).sum(dim=-1)


@torch.no_grad()
def update_center(center: torch.Tensor, logits: torch.Tensor, momentum: float) -> None:
    """center ← m·center + (1 − m)·mean of the teacher's logits over the batch (and tokens)."""
    center.mul_(momentum).add_(logits.reshape(-1, logits.shape[-1]).mean(0, keepdim=True), alpha=1 - momentum)


class Dino(nn.Module):
    """Student and teacher (backbone + projection head), the centre; ``forward(views)`` -> loss parts."""

    def __init__(self, cfg: DictConfig):
        super().__init__()
        s = cfg.ssl
        self.settings = s
        self.student = nn.ModuleDict(
            {
                "backbone": SslBackbone(cfg.model.img_encoder),
                "head": ProjectionHead(cfg.model.img_encoder.embed_dim, s.head_hidden, s.head_bottleneck, s.out_dim),
            }
        )
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, s.out_dim))

    def encode(
        self, net: nn.ModuleDict, views: list[torch.Tensor], masks: list[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """Patch tokens of each view, one backbone pass per run of views of the same size."""
        out, i = [], 0
        while i < len(views):
            j = i
            while j < len(views) and views[j].shape == views[i].shape:
                j += 1
            mask = torch.cat(masks[i:j]) if masks is not None and j <= len(masks) else None
            out += net["backbone"](torch.cat(views[i:j]), mask).chunk(j - i)
            i = j
        return out

    def image_loss(self, teacher_tokens: list[torch.Tensor], student_tokens: list[torch.Tensor]) -> torch.Tensor:
        """DINO's loss: every student view against every teacher (global) view but its own."""
        s = self.settings
        t_logits = [self.teacher["head"](self.teacher["head"].embed(t)) for t in teacher_tokens]
        s_logits = [self.student["head"](self.student["head"].embed(t)) for t in student_tokens]
        targets = [sharpened_targets(t, self.center, s.teacher_temp) for t in t_logits]
        terms = [
            cross_entropy(q, p, s.student_temp).mean()
            for iq, q in enumerate(targets)
            for v, p in enumerate(s_logits)
            if v != iq
        ]
        update_center(self.center, torch.cat(t_logits), s.center_momentum)
        return torch.stack(terms).mean()

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            teacher = self.encode(self.teacher, views[:2])
        loss = self.image_loss(teacher, self.encode(self.student, views))
        return {"total": loss, "image": loss.detach()}

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher ← m·teacher + (1 − m)·student, parameters only (the teacher's BatchNorm keeps its own
        statistics)."""
        for t, s in zip(self.teacher.parameters(), self.student.parameters(), strict=True):
            t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)

    def exported(self) -> dict[str, torch.Tensor]:
        """The teacher's encoder tensors (DINO's evaluations use the teacher), under the encoder's names."""
        return self.teacher["backbone"].encoder_state()
