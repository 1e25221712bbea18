"""Optional ``torch.compile`` of the training hot path (``train.compile``; measured in BENCHMARKS.md)."""

from __future__ import annotations

from torch import nn

FIXED_SHAPE = ("img_encoder", "img_encoder_momentum", "img_projector", "text_projector", "bridge_projector")


def compile_hot_modules(model: nn.Module) -> None:
    """Compile the hot parts in place (``nn.Module.compile``: state-dict keys unchanged).

    The image side sees one shape per run. The text transformer and the entity decoder see a different
    padded caption length every batch, so they are compiled for dynamic shapes: one graph for all lengths
    instead of a recompilation per length. With BERT-base the text side carries three quarters of a stage-1
    step's FLOPs (BENCHMARKS.md), so leaving it eager left most of the fusion on the table.
    """
    for name in FIXED_SHAPE:
        module = getattr(model, name, None)
        if module is not None:
            module.compile()
    text_encoder = getattr(model, "text_encoder", None)
    if text_encoder is not None:
        text_encoder.transformer.compile(dynamic=True)
    decoder = getattr(model, "multimodal_groupingblock", None)
    if decoder is not None:
        decoder.compile(dynamic=True)
