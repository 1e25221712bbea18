"""Optional ``torch.compile`` of the training hot path (``train.compile``; measured in BENCHMARKS.md)."""

from __future__ import annotations

from torch import nn


def compile_hot_modules(model: nn.Module) -> None:
    """Compile the fixed-shape parts in place (``nn.Module.compile``: state-dict keys unchanged). The text
    encoder sees a different padded length every batch and stays eager."""
    for name in ("img_encoder", "img_encoder_momentum", "img_projector", "text_projector"):
        module = getattr(model, name, None)
        if module is not None:
            module.compile()
