"""Pretrained ViT backbones as published -> one naming (DINO's): what a file holds, in which format.

Read: DINO's backbone ``.pth`` (``dino_vitbase16_pretrain.pth``), DINO's ``*_full_checkpoint.pth`` (the
teacher's backbone, the one DINO's own evaluation reads), a Hugging Face ``ViTModel`` folder
(``model.safetensors`` or ``pytorch_model.bin``, with ``config.json``; e.g. a local copy of
facebook/dino-vitb16), timm's ImageNet ViT state dict, and OpenAI CLIP's visual tower as a state dict
(``visual.`` prefix optional). Every tensor of the file gets a DINO name or is listed as deliberately unused;
anything else is refused by name. Files are data: safetensors or ``torch.load(weights_only=True)``, never
code (OpenAI's TorchScript ``ViT-B-16.pt`` is refused with the one-line way to get its state dict).

Also ovseg's own ``ovseg-ssl`` format, written by ``ovseg pretrain-ssl``: a safetensors file of exactly the
image-encoder tensors it initialises (stem, position table, blocks before the grouping, under the encoder's
names) with the encoder's shape and the method in its header; read header first, size-capped. The header
holds one metadata entry (sorted JSON) because safetensors writes several in a per-process random order, and
a rerun of the recorded pretraining must be able to reproduce the shipped file's sha256 byte for byte.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..errors import CheckpointError
from ..fileio import atomic_write
from .files import read_header, read_shapes, read_weights, safetensors_header_size, sniff_format
from .official import torch_load_data

# the tensors of a plain ViT block, in DINO's (and timm's) names
BLOCK_PARTS = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
_DINO_KEY = re.compile(
    r"^(pos_embed|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)|"
    r"blocks\.\d+\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias))$"
)
_TIMM_UNUSED = ("head.", "fc_norm.", "pre_logits.")
_HF_BLOCK = {
    "attention.output.dense": "attn.proj",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_CLIP_BLOCK = {
    "attn.in_proj_weight": "attn.qkv.weight",
    "attn.in_proj_bias": "attn.qkv.bias",
    "attn.out_proj.weight": "attn.proj.weight",
    "attn.out_proj.bias": "attn.proj.bias",
    "ln_1.weight": "norm1.weight",
    "ln_1.bias": "norm1.bias",
    "ln_2.weight": "norm2.weight",
    "ln_2.bias": "norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_CLIP_TOP = {
    "conv1.weight": "patch_embed.proj.weight",
    "positional_embedding": "pos_embed",
    "ln_post.weight": "norm.weight",
    "ln_post.bias": "norm.bias",
    "proj": "proj",
}
_CLIP_UNUSED = ("class_embedding", "ln_pre.weight", "ln_pre.bias")  # the original drops them (strict=False)
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
MAX_JSON_BYTES = 1_000_000  # a ViT config.json is ~1 kB


@dataclass
class BackboneFile:
    """A backbone in DINO's names. ``tensors``: ``pos_embed`` (T, C) with the CLS row if the file has
    one, ``patch_embed.proj.*``, ``blocks.i.*``, ``norm.*``, and CLIP's ``proj``; ``names``: each one's key in
    the file (for messages); ``unused``: the file's keys deliberately left out; ``family``: 'vit' or 'clip'."""

    source: str
    format: str
    family: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)

    def add(self, name: str, key: str, value: torch.Tensor) -> None:
        self.tensors[name], self.names[name] = value, key


def read_backbone(path: str | Path) -> BackboneFile:
    """The backbone in ``path`` (a file or a Hugging Face folder), recognised from its key names."""
    path = Path(path)
    if path.is_dir():
        return _from_hf(_read_hf_folder(path), str(path))
    raw = read_tensor_file(path)
    if isinstance(raw.get("teacher"), dict):
        return _from_dino_full(raw, str(path))
    state = _state_dict(raw, str(path))
    if "visual.conv1.weight" in state or "conv1.weight" in state:
        return _from_clip(state, str(path))
    if any(k.removeprefix("vit.").startswith("embeddings.patch_embeddings.") for k in state):
        return _from_hf(state, str(path))
    if "patch_embed.proj.weight" in state:
        timm = any(k.startswith(_TIMM_UNUSED) for k in state)
        return _from_dino_names(state, str(path), "timm ViT" if timm else "DINO", _TIMM_UNUSED if timm else ())
    first = ", ".join(list(state)[:4])
    raise CheckpointError(
        f"{path}: not a ViT backbone in a known format (DINO, DINO full checkpoint, timm, Hugging "
        f"Face ViT, OpenAI CLIP visual); its first keys: {first or 'none'}"
    )


# ------------------------------------------------------------------------------------------------ reading
class _Namespace:
    """Inert stand-in for ``argparse.Namespace`` (DINO's full checkpoints keep their ``args``): holds, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state


def read_tensor_file(path: Path) -> dict[str, Any]:
    """A safetensors file, or a torch file read with ``weights_only`` (tensors and plain containers only)."""
    if not path.exists():
        raise CheckpointError(
            f"{path}: not found (a local file or folder; ovseg downloads nothing: fetch the "
            "weights yourself and name the local copy)"
        )
    if sniff_format(path) == "safetensors":
        return read_weights(path)[0]
    zipped = zipfile.is_zipfile(path)
    if zipped and any(n.endswith("/constants.pkl") for n in zipfile.ZipFile(path).namelist()):
        raise CheckpointError(
            f"{path}: a TorchScript archive (as OpenAI publishes CLIP), which ovseg does not run; save its state dict: "
            "python -c \"import clip, torch; m, _ = clip.load('ViT-B/16', 'cpu', jit=False); "
            "torch.save(m.visual.state_dict(), 'clip_vitb16_visual.pth')\""
        )
    raw = torch_load_data(path, [(_Namespace, "argparse.Namespace")], mmap=zipped)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(raw).__name__}")
    return raw


def _read_hf_folder(folder: Path) -> dict[str, torch.Tensor]:
    """A Hugging Face ViT folder's weights; its config.json, when present, must be a ViT's."""
    config = folder / "config.json"
    if config.is_file():
        if config.stat().st_size > MAX_JSON_BYTES:
            raise CheckpointError(f"{config}: {config.stat().st_size} bytes, more than a model config")
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, RecursionError) as e:
            raise CheckpointError(f"{config}: not a JSON model config ({e})") from e
        if model_type not in (None, "vit"):
            raise CheckpointError(
                f"{config}: model_type '{model_type}', not a ViT ('vit'); ovseg reads ViTModel "
                "folders (e.g. facebook/dino-vitb16), DINO/timm files and OpenAI CLIP state dicts"
            )
    for name in HF_WEIGHTS:
        if (folder / name).is_file():
            return _state_dict(read_tensor_file(folder / name), str(folder / name))
    raise CheckpointError(f"{folder}: a folder without weights (expected {' or '.join(HF_WEIGHTS)})")


def _state_dict(raw: dict[str, Any], source: str) -> dict[str, torch.Tensor]:
    """The flat name -> tensor mapping of a file (DDP's ``module.`` prefix dropped)."""
    bad = next((k for k, v in raw.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise CheckpointError(
            f"{source}: not a backbone state dict ('{bad}' holds a {type(raw[bad]).__name__}, not a tensor)"
        )
    return {str(k).removeprefix("module."): v for k, v in raw.items()}


# ------------------------------------------------------------------------------------------------ formats
def _from_dino_names(
    state: dict[str, torch.Tensor],
    source: str,
    fmt: str,
    unused_prefixes: tuple[str, ...],
    out: BackboneFile | None = None,
) -> BackboneFile:
    out = out or BackboneFile(source, fmt, "vit")
    for key, value in state.items():
        if _DINO_KEY.match(key):
            out.add(key, key, value)
        elif key == "cls_token" or key.startswith(unused_prefixes):
            out.unused.append(key)
        else:
            _unexpected(source, key, fmt)
    return out


def _from_dino_full(raw: dict[str, Any], source: str) -> BackboneFile:
    """DINO's training checkpoint: the teacher's ``backbone.`` (its ``head`` and the student unused)."""
    out = BackboneFile(source, "DINO full checkpoint, teacher", "vit")
    out.unused += [f"student.{k}" for k in raw.get("student") or {}]
    original = {k.removeprefix("module.").removeprefix("backbone."): f"teacher.{k}" for k in raw["teacher"]}
    teacher = {k.removeprefix("backbone."): v for k, v in _state_dict(raw["teacher"], source).items()}
    out.unused += [original[k] for k in teacher if k.startswith("head.")]
    backbone = {k: v for k, v in teacher.items() if not k.startswith("head.")}
    _from_dino_names(backbone, source, out.format, (), out)
    out.names = {name: original[key] for name, key in out.names.items()}
    out.unused = [original.get(k, k) for k in out.unused]
    return out


def _from_hf(state: dict[str, torch.Tensor], source: str) -> BackboneFile:
    """transformers' ``ViTModel`` names (``vit.`` prefix when saved from a classifier); q, k, v -> one qkv."""
    out = BackboneFile(source, "Hugging Face ViT", "vit")
    qkv: dict[tuple[int, str], dict[str, tuple[str, torch.Tensor]]] = {}
    for key, value in state.items():
        name = key.removeprefix("vit.")
        block = re.match(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", name)
        if name in ("embeddings.cls_token", "embeddings.mask_token") or name.startswith(("pooler.", "classifier.")):
            out.unused.append(key)
        elif name == "embeddings.position_embeddings":
            out.add("pos_embed", key, value)
        elif name.startswith("embeddings.patch_embeddings.projection."):
            out.add("patch_embed.proj." + name.rsplit(".", 1)[1], key, value)
        elif name in ("layernorm.weight", "layernorm.bias"):
            out.add("norm." + name.rsplit(".", 1)[1], key, value)
        elif block and block.group(2) in _HF_BLOCK:
            out.add(f"blocks.{block.group(1)}.{_HF_BLOCK[block.group(2)]}.{block.group(3)}", key, value)
        elif block and block.group(2).startswith("attention.attention."):
            part = block.group(2).rsplit(".", 1)[1]
            if part not in ("query", "key", "value"):
                _unexpected(source, key, out.format)
            qkv.setdefault((int(block.group(1)), block.group(3)), {})[part] = (key, value)
        else:
            _unexpected(source, key, out.format)
    for (i, kind), parts in sorted(qkv.items()):
        if len(parts) != 3:
            first = next(iter(parts.values()))[0]
            raise CheckpointError(f"{source}: '{first}' without all of query, key and value")
        names = "/".join(parts[p][0] for p in ("query", "key", "value"))
        out.add(f"blocks.{i}.attn.qkv.{kind}", names, torch.cat([parts[p][1] for p in ("query", "key", "value")]))
    return out


def _from_clip(state: dict[str, torch.Tensor], source: str) -> BackboneFile:
    """OpenAI CLIP's visual tower; with the ``visual.`` prefix, everything else (the text tower) is unused."""
    out = BackboneFile(source, "OpenAI CLIP visual", "clip")
    prefixed = "visual.conv1.weight" in state
    for key, value in state.items():
        if prefixed and not key.startswith("visual."):
            out.unused.append(key)
            continue
        name = key.removeprefix("visual.") if prefixed else key
        block = re.match(r"^transformer\.resblocks\.(\d+)\.(.+)$", name)
        if name in _CLIP_TOP:
            out.add(_CLIP_TOP[name], key, value)
        elif name in _CLIP_UNUSED:
            out.unused.append(key)
        elif block and block.group(2) in _CLIP_BLOCK:
            out.add(f"blocks.{block.group(1)}.{_CLIP_BLOCK[block.group(2)]}", key, value)
        else:
            _unexpected(source, key, out.format)
    return out


def _unexpected(source: str, key: str, fmt: str) -> None:
    raise CheckpointError(
        f"{source}: '{key}' has no place in GroupViT's backbone (not a tensor of a plain "
        f"{fmt} ViT; another architecture?)"
    )


# ------------------------------------------------------------------------------------------------ ovseg-ssl
SSL_FORMAT = "ovseg-ssl/2"  # one metadata entry, SSL_KEY; "ovseg-ssl/1" (three entries) is still read
SSL_KEY = "ovseg-ssl"
SSL_SHAPE_FIELDS = ("embed_dim", "patch_size", "stem", "stem_extra_convs", "depth", "img_size")
MAX_SSL_HEADER_BYTES = 1_000_000  # the header of a quickstart encoder's ~60 tensors is ~10 kB


@dataclass
class SslEncoderFile:
    """The header of an ``ovseg pretrain-ssl`` file: what encoder it was made for (``shape``: the fields of
    SSL_SHAPE_FIELDS), the method, and every tensor's shape (image-encoder names). No tensor is read yet."""

    source: str
    shape: dict[str, Any]
    method: str
    shapes: dict[str, tuple[int, ...]]


def ssl_encoder_shape(ie: Any) -> dict[str, Any]:
    """The record of ``model.img_encoder`` an ovseg-ssl file carries; ``depth``: blocks before the grouping."""
    return {"embed_dim": int(ie.embed_dim), "patch_size": int(ie.patch_size), "stem": str(ie.stem),
            "stem_extra_convs": int(ie.stem_extra_convs), "depth": int(ie.depths[0]), "img_size": int(ie.img_size)}


def write_ssl_encoder(tensors: dict[str, torch.Tensor], shape: dict[str, Any], method: str, path: str | Path) -> None:
    """The image-encoder tensors an ovseg-ssl init replaces, with the encoder's record, written atomically."""
    record = {"format": SSL_FORMAT, "encoder": shape, "method": method}
    metadata = {SSL_KEY: json.dumps(record, sort_keys=True)}  # one entry: the header's bytes are deterministic
    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata))


def read_ssl_header(path: str | Path) -> SslEncoderFile:
    """An ovseg-ssl file's header, checked (safetensors only, size-capped, the format, the encoder record)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: init file not found (an ovseg-ssl init is the .safetensors file that "
                              "ovseg pretrain-ssl writes)")
    with open(path, "rb") as f:
        size = safetensors_header_size(f.read(9))
    if size is None or size > MAX_SSL_HEADER_BYTES or size + 8 > path.stat().st_size:
        raise CheckpointError(f"{path}: not a safetensors file with a header of at most {MAX_SSL_HEADER_BYTES} "
                              "bytes (an ovseg-ssl init is the .safetensors file that ovseg pretrain-ssl writes)")
    record = _ssl_record(read_header(path), str(path))
    return SslEncoderFile(str(path), _ssl_shape(record.get("encoder"), str(path)), str(record.get("method")),
                          read_shapes(path))


def _ssl_record(meta: dict[str, str], source: str) -> dict[str, Any]:
    """The header's record: format, encoder (a dict) and method, from either layout."""
    if meta.get("format") == "ovseg-ssl/1":  # the first layout: three entries, the encoder as JSON text
        return {**meta, "encoder": _json(meta.get("encoder"), source)}
    record = _json(meta[SSL_KEY], source) if SSL_KEY in meta else {}
    found = record.get("format") if isinstance(record, dict) else None
    if found != SSL_FORMAT:
        raise CheckpointError(f"{source}: not an ovseg-ssl init (header format '{found or meta.get('format')}', "
                              f"expected '{SSL_FORMAT}')")
    return record


def _json(text: str | None, source: str) -> Any:
    try:
        return json.loads(text or "")
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{source}: the encoder record in its header is not JSON ({e})") from e


def _ssl_shape(shape: Any, source: str) -> dict[str, Any]:
    if not isinstance(shape, dict) or set(shape) != set(SSL_SHAPE_FIELDS):
        raise CheckpointError(f"{source}: the encoder record in its header needs exactly {', '.join(SSL_SHAPE_FIELDS)}")
    bad = next((k for k, v in shape.items() if not isinstance(v, int | str) or isinstance(v, bool)), None)
    if bad is not None:
        raise CheckpointError(f"{source}: the encoder record's '{bad}' is not a number or a name")
    return shape


def read_ssl_tensors(file: SslEncoderFile) -> dict[str, torch.Tensor]:
    """The tensors of a checked header: floating point and finite (BatchNorm's counters: integer)."""
    tensors, _ = read_weights(file.source)
    for key, value in tensors.items():
        if key.endswith("num_batches_tracked"):
            if value.is_floating_point():
                raise CheckpointError(f"{file.source}: '{key}' is not an integer count")
        elif not value.is_floating_point() or not torch.isfinite(value).all():
            raise CheckpointError(f"{file.source}: '{key}' does not hold finite floating-point weights")
    return tensors
