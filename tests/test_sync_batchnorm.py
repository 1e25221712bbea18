"""GlobalBatchNorm on CPU: two ranks with half a batch each normalise exactly like one process with all of it."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ovseg.engine.sync_batchnorm import GlobalBatchNorm, GlobalBatchNorm2d, convert_batchnorm


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(2), nn.BatchNorm1d(4))


def _batch() -> torch.Tensor:
    return torch.randn(6, 3, 7, 5, generator=torch.Generator().manual_seed(1)) * 2 + 1


def _rank(rank: int, store_file: str, result_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=2)
    model = convert_batchnorm(_model(), "cpu")
    x = _batch()[rank * 3 : rank * 3 + 3].requires_grad_()
    out = model(x)
    out.sum().backward()
    if rank == 0:
        torch.save({"out": out.detach(), "grad": x.grad, "state": model.state_dict()}, result_file)
    dist.destroy_process_group()


def test_two_ranks_match_one_process_with_the_whole_batch(tmp_path):
    converted = convert_batchnorm(_model(), "cpu")
    assert type(converted[1]) is GlobalBatchNorm2d and type(converted[3]) is GlobalBatchNorm
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path / "rank0.pt")), nprocs=2)
    got = torch.load(tmp_path / "rank0.pt")
    model = _model()
    x = _batch().requires_grad_()
    out = model(x)
    out.sum().backward()
    assert torch.allclose(got["out"], out[:3].detach(), atol=1e-5)
    assert torch.allclose(got["grad"], x.grad[:3], atol=1e-5)
    for key in ("1.running_mean", "1.running_var", "3.running_mean", "3.running_var"):
        assert torch.allclose(got["state"][key], model.state_dict()[key], rtol=1e-5, atol=1e-6), key


def test_conversion_keeps_parameters_frozen_state_and_mode():
    """A frozen BatchNorm (the stage-2 EMA encoder's) must stay frozen after conversion: a trainable copy
    never gets a gradient, so DDP never averaged the gradient bucket holding it (found as stage-2 ranks
    ending with different weights)."""
    model = _model()
    model[1].requires_grad_(False).eval()
    weight, bias = model[1].weight, model[1].bias
    converted = convert_batchnorm(model, "cpu")
    assert converted[1].weight is weight and converted[1].bias is bias
    assert not converted[1].weight.requires_grad and not converted[1].training
    assert converted[3].weight.requires_grad and converted[3].training
