"""BatchNorm over the global batch of every rank, on any device.

The projection heads normalise with SyncBatchNorm when training is distributed (spec §1.4), so that N
processes of batch b compute the same statistics as one process of batch N·b. ``torch.nn.SyncBatchNorm``
only runs on GPUs, so CPU (gloo) jobs use ``GlobalBatchNorm`` below, written here because no library
offers a CPU one: per-rank mean and squared deviations are gathered with gradient and combined exactly
(Chan et al.'s parallel variance formula).
"""

from __future__ import annotations

import torch
from torch import nn

from ..losses.contrastive import gather_with_grad
from ..ranks import is_distributed


class GlobalBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` whose training statistics span all ranks; same parameters, buffers and keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))  # every axis but the channels
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        n = torch.tensor(float(x.numel() // x.shape[1]), device=x.device)
        mean = xf.mean(dims)
        m2 = ((xf - mean.view(shape)) ** 2).sum(dims)
        stats = torch.cat([mean, m2, n.expand(1)])
        gathered = gather_with_grad(stats.unsqueeze(0))  # (world, 2C + 1), differentiable
        c = x.shape[1]
        means, m2s, counts = gathered[:, :c], gathered[:, c:2 * c], gathered[:, 2 * c:]
        total = counts.sum()
        g_mean = (counts * means).sum(0) / total
        g_var = (m2s.sum(0) + (counts * (means - g_mean) ** 2).sum(0)) / total
        if self.track_running_stats:
            self._update_running(g_mean.detach(), g_var.detach() * total / (total - 1).clamp(min=1))
        out = (xf - g_mean.view(shape)) * torch.rsqrt(g_var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)

    def _update_running(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean), momentum)
        self.running_var.lerp_(unbiased_var.to(self.running_var), momentum)


class GlobalBatchNorm2d(GlobalBatchNorm, nn.BatchNorm2d):
    """The same for ``BatchNorm2d`` (the ``conv`` stem): statistics over batch, height and width."""

    _check_input_dim = nn.BatchNorm2d._check_input_dim


GLOBAL_VERSIONS = {nn.BatchNorm1d: GlobalBatchNorm, nn.BatchNorm2d: GlobalBatchNorm2d}


def convert_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Batch statistics over every rank: torch's SyncBatchNorm on CUDA, ``GlobalBatchNorm(2d)`` elsewhere."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) in GLOBAL_VERSIONS:
            version = GLOBAL_VERSIONS[type(child)]
            replacement = version(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats).to(next(child.buffers(), torch.empty(0)).device)
            replacement.load_state_dict(child.state_dict())
            # keep the same Parameter objects, as torch's SyncBatchNorm conversion does: a frozen BatchNorm (the
            # EMA encoder's) must stay frozen, or DDP waits for its gradients and never averages their bucket
            if child.affine:
                replacement.weight, replacement.bias = child.weight, child.bias
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            convert_batchnorm(child, device_type)
    return module
