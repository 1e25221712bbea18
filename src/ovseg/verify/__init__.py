"""``ovseg verify-reference DIR``: recompute a reference folder's outputs and compare them."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..checkpoints.loading import load_state_dict_checked, model_config_from_official
from ..checkpoints.official_mapping import convert_official_state_dict
from ..config import schema
from ..errors import OvsegError
from ..inference.preprocess import keep_ratio_size
from ..inference.slide import encode_windows
from ..model import OVSegmentor
from ..model.text import build_tokenizer
from . import outputs as O
from .photos import check_photo, compute_photos, photo_inputs
from .rows import Row, compare, format_table

__all__ = ["Row", "compare", "format_table", "infer_step", "strided_steps", "verify_reference"]

REQUIRED_FILES = ("config.json", "manifest.json", "weights.safetensors", "io.safetensors")


def _read_folder(folder: Path) -> tuple[dict, dict, dict, dict]:
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise OvsegError(f"{folder}: not a reference folder ({name} is missing)")
    config = json.loads((folder / "config.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    return config, manifest, load_file(str(folder / "weights.safetensors")), load_file(str(folder / "io.safetensors"))


def build_reference_model(config: dict, weights: dict) -> OVSegmentor:
    """The training build (entity decoder, momentum encoder) of the reference weights, in eval mode."""
    cfg = schema()
    cfg.model = model_config_from_official(config, weights, training=True)
    model = OVSegmentor(cfg.model)
    converted, _ = convert_official_state_dict(weights, set(model.state_dict()))
    load_state_dict_checked(model, converted, "reference weights")
    return model.eval()


def check_tokenizer(model_name: str, manifest: dict, io: dict) -> list[Row]:
    """Re-tokenise every stored text input and compare ids/masks exactly."""
    tokenizer, rows = build_tokenizer(model_name), []
    for entry in manifest["inputs"]:
        if "texts" not in entry or entry["name"] not in io:
            continue
        call = dict(entry.get("tokenizer_call", {}))
        field = "input_ids" if entry["name"].endswith("input_ids") else "attention_mask"
        got = tokenizer(entry["texts"], return_tensors="pt", **call)[field]
        ref = io[entry["name"]]
        same = tuple(got.shape) == tuple(ref.shape) and torch.equal(got.to(ref.dtype), ref)
        rows.append(
            Row(
                entry["name"],
                tuple(ref.shape),
                None if same else math.inf,
                "exact",
                "ok" if same else "FAIL",
                "re-tokenised",
            )
        )
    return rows


def compute_all(
    model: OVSegmentor, config: dict, manifest: dict, io: dict, steps: dict[str, int] | None = None
) -> dict[str, torch.Tensor]:
    """Every output this folder's inputs allow, keyed by manifest name (``steps``: see ``strided_steps``)."""
    steps = strided_steps(manifest) if steps is None else steps
    got: dict[str, torch.Tensor] = {}
    seg = config.get("seg", {})
    classes = seg.get("class_names", [])
    store, remove = O.debug_taps(model)
    with torch.no_grad():
        for name in (e["name"][len("input.") :] for e in manifest["inputs"] if e["name"].startswith("input.")):
            if io[f"input.{name}"].dtype != torch.float32:
                continue
            got.update(O.compute_image(model, io, name))
            if name == "batch224":
                got.update({f"img.batch224.tap.{k}": v for k, v in store.items() if k != "bert_embeddings_out"})
                if getattr(model, "img_encoder_momentum", None) is not None:
                    got.update(O.compute_image(model, io, name, momentum=True))
        got.update(O.compute_text(model, io, len(classes)))
        if "bert_embeddings_out" in store and "text.captions.input_ids" in io:
            model.encode_text(io["text.captions.input_ids"], io["text.captions.attention_mask"])
            got["text.captions.tap.bert_embeddings_out"] = store["bert_embeddings_out"]
        remove()
        if "text.classes.embedding" in got:
            for name in [k for k in got if re.fullmatch(r"img\.[^.]+\.image_x_norm", k)]:
                got[name.replace("image_x_norm", "zero_shot_logits")] = got[name] @ got["text.classes.embedding"].t()
        if "entity.question.input_ids" in io and getattr(model, "multimodal_groupingblock", None) is not None:
            got.update(O.compute_entity(model, io, got["img.batch224.image_feat_before_proj"]))
        got.update(O.compute_losses(model, io, got))
        if "text.classes.embedding" in got:
            got.update(_compute_seg(model, config, manifest, io, got["text.classes.embedding"], steps))
    return got


def _compute_seg(
    model: OVSegmentor, config: dict, manifest: dict, io: dict, text_emb: torch.Tensor, steps: dict[str, int]
) -> dict:
    seg = config["seg"]
    test_cfg = seg.get("test_cfg", {})
    crop, stride = test_cfg.get("crop_size", [448, 448])[0], test_cfg.get("stride", [224, 224])[0]
    settings = seg.get("settings", [])
    top_k, scale = seg.get("top_k", 5), model.scale()
    names = [e["name"] for e in manifest["outputs"]]
    inputs = {e["name"]: e for e in manifest["inputs"]}
    out: dict[str, torch.Tensor] = {}
    heads = sorted({n.split(".")[1] for n in names if n.startswith("seg.")})
    for head in heads:
        source = _seg_source(head)
        if f"input.{source}" not in io:
            continue
        image = io[f"input.{source}"]
        ori = inputs[f"input.{source}"].get("ori_shape", list(image.shape[-2:]))[:2]
        enc = encode_windows(model, image, crop=crop, stride=stride, mode="slide" if head == "slide" else "whole")
        if head == "slide":
            crops = [f"crop{k}" for k in range(len(enc.boxes))]
            out.update(O.compute_crops("seg.slide.", enc, text_emb, scale, top_k, settings, crops))
        else:
            out.update(
                {
                    k.replace(f"seg.{head}.{head}.", f"seg.{head}."): v
                    for k, v in O.compute_crops(f"seg.{head}.", enc, text_emb, scale, top_k, settings, [head]).items()
                }
            )
        out.update(O.compute_slide(f"seg.{head}.", enc, text_emb, scale, top_k, settings, tuple(ori), steps))
    return out


def _seg_source(head: str) -> str:
    """The input a ``seg.<head>.*`` entry is computed from."""
    return "slide_img" if head in ("slide", "whole") else head


def strided_steps(manifest: dict) -> dict[str, int]:
    """Row/column step of every strided entry (``seg.*`` and a photo's): its own ``strided_step``, else the
    one its shape implies (sets may subsample by any step to stay small, without always saying which)."""
    inputs = {e["name"]: e for e in manifest["inputs"]}
    outputs = {e["name"]: e for e in manifest["outputs"]}
    steps = {}
    for name, entry in outputs.items():
        if not name.endswith("_strided"):
            continue
        if "strided_step" in entry:
            steps[name] = int(entry["strided_step"])
            continue
        full = _full_size(name, inputs, outputs)
        if full is not None:
            steps[name] = infer_step(name, tuple(entry["shape"][-2:]), full)
    return steps


def _full_size(name: str, inputs: dict, outputs: dict) -> tuple[int, int] | None:
    """(H, W) a strided field was subsampled from: the processed image's size before the resize back
    (a ``seg.*`` input's own size, a photo's resized size), its ``ori_shape`` after."""
    prefix, field = name.rsplit(".", 2)[0], name.rsplit(".", 1)[1]
    if field not in ("avg_logits_strided", "final_logits_strided"):
        return None
    if name.startswith("seg."):
        source = inputs.get(f"input.{_seg_source(name.split('.')[1])}")
        if source is None:
            return None
        processed, original = source["shape"][-2:], source.get("ori_shape", source["shape"][-2:])
    else:
        source = inputs.get(f"input.{prefix}")
        if source is None or "file" not in source:
            return None
        processed, original = _photo_processed_size(source, outputs, prefix), source.get("ori_shape", source["shape"])
    return tuple((original if field == "final_logits_strided" else processed)[:2])


def _photo_processed_size(source: dict, outputs: dict, prefix: str) -> list[int]:
    """A photo's size after the keep-ratio resize: its ``resized_uint8`` entry's, else the default scale's."""
    resized = outputs.get(f"{prefix}.resized_uint8")
    if resized is not None:
        return resized["shape"][:2]
    return list(keep_ratio_size(*source.get("ori_shape", source["shape"])[:2]))


def infer_step(name: str, shape: tuple[int, int], full: tuple[int, int]) -> int:
    """The one step s with ``shape == ceil(full / s)`` (rows 0::s of ``full``); none or several is an error."""
    fits = [s for s in range(1, max(full) + 2) if tuple(-(-n // s) for n in full) == tuple(shape)]
    if len(fits) != 1:
        found = f"steps {fits[0]}..{fits[-1]} all fit" if fits else "no step fits"
        raise OvsegError(
            f"{name}: cannot infer strided_step from shape {list(shape)} of the {full[0]}x{full[1]} "
            f"field ({found}); state strided_step in the manifest entry"
        )
    return fits[0]


def verify_reference(folder: str | Path, device: str = "cpu") -> list[Row]:
    """All rows for a reference folder (tokenizer and photo-file checks first, then every manifest output),
    computed on ``device`` and compared on the CPU."""
    folder = Path(folder)
    config, manifest, weights, io = _read_folder(folder)
    # the reference is float32: no TF32 shortcuts in cuDNN convolutions or matmuls on GPUs
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    steps = strided_steps(manifest)  # a manifest mistake fails before the model is built
    photos = photo_inputs(folder, manifest)  # so does a missing photo
    model = build_reference_model(config, weights).to(device)
    rows = check_tokenizer(model.cfg.text_encoder.name, manifest, io)
    rows += [check_photo(photo, io) for photo in photos]
    got = compute_all(model, config, manifest, {k: v.to(device) for k, v in io.items()}, steps)
    got = {k: v.detach().cpu() for k, v in got.items()}
    if photos and "text.classes.embedding" in got:
        got.update(compute_photos(model, config, manifest, photos, got["text.classes.embedding"], steps))
    for entry in manifest["outputs"]:
        if entry["name"] not in io:
            rows.append(Row(entry["name"], tuple(entry["shape"]), None, "-", "missing", "absent from io.safetensors"))
            continue
        rows.append(compare({**entry, "ref": io[entry["name"]]}, got.get(entry["name"])))
    return rows
