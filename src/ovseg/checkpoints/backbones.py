"""The image encoder's start from a pretrained ViT (spec §1.2), mapped as the original maps it.

The original (``init_backbone_with_imagenet_weights``) loads DINO/timm/CLIP weights by name with
``strict=False``: ViT blocks ``0..d0-1`` become ``layers.0.blocks``, the next ``d1`` ``layers.1.blocks`` (the
same matrices, so DINO's 12 heads are read as 8 wider ones), the stem, position table (its CLS row dropped)
and final norm load by name; group tokens, the grouping block and the projectors keep their fresh init.
CLIP: ``ln_post`` is the final norm, ``class_embedding`` and ``ln_pre`` are dropped, and ``proj`` becomes the
encoder's extra output projection. Unlike the original, every tensor of the file must land or be listed
as unused, and a file of another width, depth, patch size or family is refused with one line.

``ovseg-ssl``: the file ``ovseg pretrain-ssl`` writes (any stem, the quickstart's conv stem included): its
tensors already carry the encoder's names and replace the stem (BatchNorm statistics included), the position
table and the blocks before the grouping; every shape is checked against the model before anything is read.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..errors import CheckpointError, ConfigError
from ..model import OVSegmentor
from ..model.vision import GroupViT, resize_pos_embed
from .backbone_formats import (
    BLOCK_PARTS,
    SSL_SHAPE_FIELDS,
    BackboneFile,
    SslEncoderFile,
    read_backbone,
    read_ssl_header,
    read_ssl_tensors,
    ssl_encoder_shape,
)

log = logging.getLogger(__name__)

INITS = ("dino", "dino_vits16", "dino_vitb8", "dino_vits8", "imagenet", "clip", "ovseg-ssl")
SSL = "ovseg-ssl"
ORIGINAL_NAMES = {
    "dino": "dino",
    "dinob8": "dino_vitb8",
    "dinos16": "dino_vits16",
    "dinos8": "dino_vits8",
    "imgnet": "imagenet",
    "clip": "clip",
}  # the original's imgnet_pretrained values
KEY = "model.img_encoder"


@dataclass(frozen=True)
class BackboneInit:
    """What the config asks for: ``kind`` (one of INITS), the file, whether to freeze what it loads."""

    kind: str
    path: str | None
    freeze: bool

    @property
    def family(self) -> str:
        return "clip" if self.kind == "clip" else SSL if self.kind == SSL else "vit"


@dataclass
class BackboneStart:
    """A backbone file read, mapped onto ``img_encoder`` keys and checked against the model's shapes."""

    init: BackboneInit
    tensors: dict[str, torch.Tensor]
    summary: str


def backbone_init(ie: DictConfig) -> BackboneInit | None:
    """``model.img_encoder``'s start, from ``init``/``init_checkpoint`` or the original's ``imgnet_pretrained``/
    ``imgnet_pretrained_checkpoint``; None: random init. Contradictions are ConfigErrors."""
    kind = None if ie.init == "none" else ie.init
    original = ie.imgnet_pretrained
    if original is not None and original not in ORIGINAL_NAMES:
        raise ConfigError(f"{KEY}.imgnet_pretrained: expected one of {', '.join(ORIGINAL_NAMES)}, got '{original}'")
    if original is not None and kind not in (None, ORIGINAL_NAMES[original]):
        raise ConfigError(f"{KEY}.init '{kind}' and {KEY}.imgnet_pretrained '{original}' disagree: set one of them")
    kind = kind or (ORIGINAL_NAMES[original] if original else None)
    paths = {p for p in (ie.init_checkpoint, ie.imgnet_pretrained_checkpoint) if p}
    if len(paths) > 1:
        raise ConfigError(
            f"{KEY}.init_checkpoint and {KEY}.imgnet_pretrained_checkpoint name different files: set one of them"
        )
    if kind is None and (paths or ie.freeze_backbone):
        what = "freeze_backbone" if ie.freeze_backbone and not paths else "init_checkpoint"
        raise ConfigError(f"{KEY}.{what} is set but {KEY}.init is none: set {KEY}.init to one of {', '.join(INITS)}")
    if kind is None:
        return None
    if ie.stem != "patch" and kind != SSL:
        raise ConfigError(f"{KEY}.init '{kind}' needs {KEY}.stem 'patch' (a pretrained ViT's stem), got '{ie.stem}'")
    return BackboneInit(kind, next(iter(paths), None), bool(ie.freeze_backbone))


def prepare_backbone(init: BackboneInit, model_cfg: DictConfig) -> BackboneStart:
    """Read ``init``'s file and map it for the model ``model_cfg`` describes; nothing is allocated for the
    model (its shapes come from a build on the meta device), so a wrong file fails fast."""
    if not init.path:
        raise ConfigError(
            f"{KEY}.init is '{init.kind}' but no file is given: --opts {KEY}.init_checkpoint=PATH "
            "(e.g. dino_vitbase16_pretrain.pth, or a local Hugging Face ViT folder)"
        )
    if init.kind == SSL:
        return _prepare_ssl(init, model_cfg)
    file = read_backbone(init.path)
    if file.family != init.family:
        hint = "clip" if file.family == "clip" else "dino (or imagenet)"
        raise CheckpointError(
            f"{init.path}: {file.format} weights, but {KEY}.init is '{init.kind}' (set {KEY}.init={hint})"
        )
    encoder = _meta_encoder(model_cfg)
    tensors, resized = _map(file, encoder)
    summary = (
        f"backbone init: {len(file.tensors)} tensors from {Path(init.path).name} ({file.format})"
        f"{resized}; unused: {_describe(file.unused)}"
    )
    return BackboneStart(init, tensors, summary)


def load_backbone(model: OVSegmentor, start: BackboneStart) -> None:
    """Copy the mapped tensors into the image encoder (and its momentum copy, which starts equal)."""
    params = model.img_encoder.state_dict()
    with torch.no_grad():
        for name, value in start.tensors.items():
            params[name].copy_(value)
    momentum = getattr(model, "img_encoder_momentum", None)
    if momentum is not None:
        momentum.load_state_dict(model.img_encoder.state_dict())
    log.info("%s", start.summary)


def freeze_backbone(model: OVSegmentor, init: BackboneInit) -> None:
    """As the original's ``fixed``: the parameters its file loads stop training (stem, blocks, final norm,
    CLIP's proj), the grouping block, group tokens and projectors train on. The position table trains too
    (the original re-creates it, CLS row dropped, after freezing), and so does CLIP's zero stem bias (not
    in the file)."""
    encoder = model.img_encoder
    names = ssl_targets(encoder) if init.kind == SSL else backbone_targets(encoder, init.family == "clip")
    params = dict(encoder.named_parameters())
    for name in names:
        if name in params and name != "pos_embed" and not (init.family == "clip" and name == "patch_embed.proj.bias"):
            params[name].requires_grad_(False)


def backbone_targets(encoder: GroupViT, clip: bool) -> list[str]:
    """The encoder's tensors a pretrained ViT supplies, in the order they are checked."""
    names = ["patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed"]
    for s, layer in enumerate(encoder.layers):
        names += [
            f"layers.{s}.blocks.{j}.{part}.{kind}"
            for j in range(len(layer.blocks))
            for part in BLOCK_PARTS
            for kind in ("weight", "bias")
        ]
    return names + ["norm.weight", "norm.bias"] + (["proj"] if clip else [])


def ssl_targets(encoder: GroupViT) -> list[str]:
    """The encoder's tensors an ovseg-ssl file replaces, stem first: the stem (parameters and BatchNorm
    statistics), the position table, the blocks before the grouping."""
    names = [f"patch_embed.{k}" for k in encoder.patch_embed.state_dict()] + ["pos_embed"]
    return names + [f"layers.0.blocks.{k}" for k in encoder.layers[0].blocks.state_dict()]


# ------------------------------------------------------------------------------------------------ ovseg-ssl
def _prepare_ssl(init: BackboneInit, model_cfg: DictConfig) -> BackboneStart:
    """Header first: every tensor's name and shape against the model's, then the encoder record; then the
    tensors."""
    file = read_ssl_header(init.path)
    encoder = _meta_encoder(model_cfg)
    _check_ssl_shapes(file, encoder)
    wanted = ssl_encoder_shape(model_cfg.img_encoder)
    bad = next((k for k in SSL_SHAPE_FIELDS if file.shape[k] != wanted[k]), None)
    if bad is not None:
        field = "depths[0]" if bad == "depth" else bad
        raise CheckpointError(f"{init.path}: made for {KEY}.{field}={file.shape[bad]}, this model has {wanted[bad]}")
    tensors = read_ssl_tensors(file)
    summary = f"backbone init: {len(tensors)} tensors from {Path(init.path).name} (ovseg-ssl, {file.method})"
    return BackboneStart(init, tensors, summary)


def _check_ssl_shapes(file: SslEncoderFile, encoder: GroupViT) -> None:
    expected = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    targets = ssl_targets(encoder)
    order = {t: i for i, t in enumerate(targets)}
    for key in sorted(file.shapes, key=lambda k: order.get(k, -1)):  # unknown keys first, then the stem
        if key not in order:
            raise CheckpointError(f"{file.source}: '{key}' {file.shapes[key]} has no place in {KEY}, "
                                  f"{_ssl_counterpart(key, encoder, expected)} (an init of another stem or depth?)")
        if file.shapes[key] != expected[key]:
            raise CheckpointError(f"{file.source}: '{key}' has shape {file.shapes[key]}, {KEY} expects "
                                  f"{expected[key]} (an init of another width, stem or patch size?)")
    missing = [t for t in targets if t not in file.shapes]
    if missing:
        raise CheckpointError(f"{file.source}: no tensor for 'img_encoder.{missing[0]}' ({len(missing)} of the "
                              "init's tensors missing; an init of another stem or depth?)")


def _ssl_counterpart(key: str, encoder: GroupViT, expected: dict[str, tuple[int, ...]]) -> str:
    """What the model has where a file's unknown tensor would go: the stem's first tensor, or the depth."""
    if key.startswith("patch_embed."):
        first = next(k for k in expected if k.startswith("patch_embed."))
        return f"whose stem starts with '{first}' {expected[first]}"
    return f"which has {len(encoder.layers[0].blocks)} blocks before the grouping"


# ------------------------------------------------------------------------------------------------ mapping
def _meta_encoder(model_cfg: DictConfig) -> GroupViT:
    cfg = model_cfg.copy()
    cfg.text_encoder.pretrained = False  # shapes only: no text weights are read
    with torch.device("meta"):
        return OVSegmentor(cfg).img_encoder


def _map(file: BackboneFile, encoder: GroupViT) -> tuple[dict[str, torch.Tensor], str]:
    """DINO names -> ``img_encoder`` names for the encoder's stages; every shape and count checked."""
    expected = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    src = file.source
    targets = backbone_targets(encoder, file.family == "clip")
    order = {t: i for i, t in enumerate(targets)}
    named = sorted(
        ((_target(n, encoder), n, v) for n, v in file.tensors.items()), key=lambda item: order.get(item[0], len(order))
    )  # the stem first: its width says most
    mapped: dict[str, torch.Tensor] = {}
    grid = encoder.base_grid
    for target, name, value in named:
        if name == "pos_embed":
            value, grid = _position_table(file, value, expected["pos_embed"], encoder.base_grid)
        elif target is not None and tuple(value.shape) != expected.get(target):
            raise CheckpointError(
                f"{src}: '{file.names[name]}' has shape {tuple(value.shape)}, {KEY} expects "
                f"{expected.get(target)} for 'img_encoder.{target}' (a backbone of another "
                "width, patch size or architecture?)"
            )
        if target is not None:
            mapped[target] = value
    _check_depth(file, encoder)
    if file.family == "clip" and "patch_embed.proj.bias" not in mapped:  # CLIP's conv1 has no bias
        mapped["patch_embed.proj.bias"] = torch.zeros(expected["patch_embed.proj.bias"])
    missing = [t for t in targets if t not in mapped]
    if missing:
        raise CheckpointError(
            f"{src}: no tensor for 'img_encoder.{missing[0]}' ({len(missing)} of the backbone's "
            f"tensors missing; an incomplete or other {file.format} file?)"
        )
    side = encoder.base_grid
    resized = f"; position table resized {grid[0]}x{grid[1]} -> {side[0]}x{side[1]}" if grid != side else ""
    return mapped, resized


def _target(name: str, encoder: GroupViT) -> str | None:
    """DINO name -> encoder name: block i goes to the stage whose cumulative depth covers it (None: beyond
    the encoder's blocks, reported by the depth check)."""
    if not name.startswith("blocks."):
        return name
    _, index, rest = name.split(".", 2)
    i = int(index)
    for s, layer in enumerate(encoder.layers):
        if i < len(layer.blocks):
            return f"layers.{s}.blocks.{i}.{rest}"
        i -= len(layer.blocks)
    return None


def _check_depth(file: BackboneFile, encoder: GroupViT) -> None:
    blocks = {int(n.split(".")[1]) for n in file.tensors if n.startswith("blocks.")}
    depths = [len(layer.blocks) for layer in encoder.layers]
    if len(blocks) != sum(depths) or blocks != set(range(len(blocks))):
        raise CheckpointError(
            f"{file.source}: {len(blocks)} ViT blocks, but {KEY}.depths {depths} hold "
            f"{sum(depths)} (a backbone of another depth?)"
        )


def _position_table(
    file: BackboneFile, value: torch.Tensor, expected: tuple[int, ...], base_grid: tuple[int, int]
) -> tuple[torch.Tensor, tuple[int, int]]:
    """(1, 1+N, C) or (1+N, C) -> (N, C): the CLS row dropped, bicubically resized to the encoder's grid."""
    table = value[0] if value.ndim == 3 and value.shape[0] == 1 else value
    rows = table.shape[0] if table.ndim == 2 else -1
    side = math.isqrt(max(rows - 1, 0))
    if table.ndim == 2 and side * side == rows - 1:
        table = table[1:]
    else:
        side = math.isqrt(max(rows, 0))
    if table.ndim != 2 or side == 0 or side * side != table.shape[0] or table.shape[1] != expected[1]:
        raise CheckpointError(
            f"{file.source}: '{file.names['pos_embed']}' has shape {tuple(value.shape)}, {KEY} "
            f"expects (1, 1+N, {expected[1]}) with N a square grid (another width?)"
        )
    return resize_pos_embed(table.float(), (side, side), base_grid), (side, side)


def _describe(keys: list[str]) -> str:
    """Unused keys, grouped by their first two name parts (one for ``a.b``) when several share them."""
    if not keys:
        return "none"
    groups: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split(".")
        groups.setdefault(".".join(parts[: min(2, len(parts) - 1)]) or key, []).append(key)
    return ", ".join(f"{head}.* ({len(ks)})" if len(ks) > 1 else ks[0] for head, ks in groups.items())
