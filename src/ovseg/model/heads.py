"""Projection heads: GroupViT's ``ProjectMLP`` (Linear → BatchNorm → ReLU → Linear), token-wise.

The original uses Conv1d(kernel 1) layers; a Linear over the last axis computes the same thing, and the
checkpoint converter squeezes the trailing kernel axis. BatchNorm statistics are taken over every token
of the batch (B·L rows), exactly as BatchNorm1d over (B, C, L) does.
"""

from __future__ import annotations

import torch
from torch import nn


class ProjectMLP(nn.Module):
    """(…, in_dim) -> (…, out_dim); ``num_layers`` = 2 gives in → inner → out with one BatchNorm."""

    def __init__(self, in_dim: int, inner_dim: int, out_dim: int, num_layers: int = 2):
        super().__init__()
        hidden: list[nn.Module] = []
        for i in range(num_layers - 1):
            hidden += [nn.Linear(in_dim if i == 0 else inner_dim, inner_dim), nn.BatchNorm1d(inner_dim),
                       nn.ReLU(inplace=True)]
        self.linear_hidden = nn.Sequential(*hidden)
        if num_layers >= 1:
            self.linear_out = nn.Linear(in_dim if num_layers == 1 else inner_dim, out_dim)
        else:
            self.linear_out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = self.linear_out(self.linear_hidden(x.reshape(-1, x.shape[-1])))
        return x.reshape(*lead, x.shape[-1])
