"""``ovseg verify-reference DIR``: recompute a reference folder's outputs and compare them."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..checkpoints.loading import load_state_dict_checked, model_config_from_official
from ..checkpoints.official_mapping import convert_official_state_dict
from ..config import schema
from ..errors import OvsegError
from ..inference.slide import encode_windows
from ..model import OVSegmentor
from ..model.text import build_tokenizer
from . import outputs as O

REQUIRED_FILES = ("config.json", "manifest.json", "weights.safetensors", "io.safetensors")


@dataclass
class Row:
    """One compared entry: status is 'ok', 'FAIL', 'skipped' or 'missing'."""

    name: str
    shape: tuple
    diff: float | None
    tolerance: str
    status: str
    note: str = ""


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
        rows.append(Row(entry["name"], tuple(ref.shape), None if same else math.inf, "exact",
                        "ok" if same else "FAIL", "re-tokenised"))
    return rows


def compute_all(model: OVSegmentor, config: dict, manifest: dict, io: dict,
                steps: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """Every output this folder's inputs allow, keyed by manifest name (``steps``: see ``strided_steps``)."""
    steps = strided_steps(manifest) if steps is None else steps
    got: dict[str, torch.Tensor] = {}
    seg = config.get("seg", {})
    classes = seg.get("class_names", [])
    store, remove = O.debug_taps(model)
    with torch.no_grad():
        for name in (e["name"][len("input."):] for e in manifest["inputs"] if e["name"].startswith("input.")):
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


def _compute_seg(model: OVSegmentor, config: dict, manifest: dict, io: dict, text_emb: torch.Tensor,
                 steps: dict[str, int]) -> dict:
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
            out.update({k.replace(f"seg.{head}.{head}.", f"seg.{head}."): v for k, v in
                        O.compute_crops(f"seg.{head}.", enc, text_emb, scale, top_k, settings, [head]).items()})
        out.update(O.compute_slide(f"seg.{head}.", enc, text_emb, scale, top_k, settings, tuple(ori), steps))
    return out


def _seg_source(head: str) -> str:
    """The input a ``seg.<head>.*`` entry is computed from."""
    return "slide_img" if head in ("slide", "whole") else head


def strided_steps(manifest: dict) -> dict[str, int]:
    """Row/column step of every strided ``seg.*`` entry: its own ``strided_step``, else the one its shape
    implies (sets may subsample by any step to stay small, without always saying which)."""
    inputs = {e["name"]: e for e in manifest["inputs"]}
    steps = {}
    for entry in manifest["outputs"]:
        name = entry["name"]
        if not (name.startswith("seg.") and name.endswith("_strided")):
            continue
        if "strided_step" in entry:
            steps[name] = int(entry["strided_step"])
            continue
        full = _full_size(inputs.get(f"input.{_seg_source(name.split('.')[1])}"), name.rsplit(".", 1)[1])
        if full is not None:
            steps[name] = infer_step(name, tuple(entry["shape"][-2:]), full)
    return steps


def _full_size(source: dict | None, field: str) -> tuple[int, int] | None:
    """(H, W) a strided field was subsampled from: the input's size before the resize, ``ori_shape`` after."""
    if source is None or field not in ("avg_logits_strided", "final_logits_strided"):
        return None
    size = source["shape"][-2:]
    if field == "final_logits_strided":
        size = source.get("ori_shape", size)[:2]
    return tuple(size)


def infer_step(name: str, shape: tuple[int, int], full: tuple[int, int]) -> int:
    """The one step s with ``shape == ceil(full / s)`` (rows 0::s of ``full``); none or several is an error."""
    fits = [s for s in range(1, max(full) + 2) if tuple(-(-n // s) for n in full) == tuple(shape)]
    if len(fits) != 1:
        found = f"steps {fits[0]}..{fits[-1]} all fit" if fits else "no step fits"
        raise OvsegError(f"{name}: cannot infer strided_step from shape {list(shape)} of the {full[0]}x{full[1]} "
                         f"field ({found}); state strided_step in the manifest entry")
    return fits[0]


def compare(entry: dict, got: torch.Tensor | None) -> Row:
    """One manifest output against ovseg's value, with the entry's own tolerance rule."""
    name, shape = entry["name"], tuple(entry["shape"])
    if got is None:
        optional = ".tap." in name
        return Row(name, shape, None, "-", "skipped" if optional else "missing",
                   "optional debug tap" if optional else "not computed by ovseg")
    ref = entry["ref"]
    if tuple(got.shape) != tuple(ref.shape):
        return Row(name, shape, math.inf, "-", "FAIL", f"shape {tuple(got.shape)}")
    if entry.get("exact"):
        return _compare_exact(entry, got.to(ref.dtype), ref)
    diff = (got.double() - ref.double()).abs().max().item() if ref.numel() else 0.0
    atol = float(entry.get("atol", 5e-4 + 1e-4 * ref.double().abs().max().item()))
    return Row(name, shape, diff, f"atol {atol:g}", "ok" if diff <= atol else "FAIL")


def _compare_exact(entry: dict, got: torch.Tensor, ref: torch.Tensor) -> Row:
    wrong = (got != ref).nonzero().tolist() if got.ndim else ([[]] if got.item() != ref.item() else [])
    fragile = {tuple(p) for p in entry.get("fragile_yx_margin_below_1e-5", [])}
    excused = [p for p in wrong if tuple(p) in fragile]
    bad = len(wrong) - len(excused)
    note = f"{len(excused)} fragile pixel(s) differ" if excused else ""
    diff = (got.double() - ref.double()).abs().max().item() if ref.numel() else 0.0
    return Row(entry["name"], tuple(ref.shape), diff, "exact", "ok" if bad == 0 else "FAIL",
               note + (f"{bad} value(s) differ" if bad else ""))


def verify_reference(folder: str | Path, device: str = "cpu") -> list[Row]:
    """All rows for a reference folder (tokenizer checks first, then every manifest output), computed on
    ``device`` and compared on the CPU."""
    folder = Path(folder)
    config, manifest, weights, io = _read_folder(folder)
    # the reference is float32: no TF32 shortcuts in cuDNN convolutions or matmuls on GPUs
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    steps = strided_steps(manifest)  # a manifest mistake fails before the model is built
    model = build_reference_model(config, weights).to(device)
    rows = check_tokenizer(model.cfg.text_encoder.name, manifest, io)
    got = compute_all(model, config, manifest, {k: v.to(device) for k, v in io.items()}, steps)
    got = {k: v.detach().cpu() for k, v in got.items()}
    for entry in manifest["outputs"]:
        if entry["name"] not in io:
            rows.append(Row(entry["name"], tuple(entry["shape"]), None, "-", "missing", "absent from io.safetensors"))
            continue
        rows.append(compare({**entry, "ref": io[entry["name"]]}, got.get(entry["name"])))
    return rows


def format_table(rows: list[Row]) -> str:
    width = max(len(r.name) for r in rows)
    lines = [f"{'name':<{width}}  {'shape':<16} {'max abs diff':>12}  {'tolerance':<12} status"]
    for r in rows:
        diff = "-" if r.diff is None else f"{r.diff:.3g}"
        shape = "x".join(map(str, r.shape)) or "scalar"
        lines.append(f"{r.name:<{width}}  {shape:<16} {diff:>12}  {r.tolerance:<12} {r.status}"
                     + (f"  ({r.note})" if r.note else ""))
    counts = {s: sum(r.status == s for r in rows) for s in ("ok", "FAIL", "missing", "skipped")}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n or s in ("ok", "FAIL")))
    return "\n".join(lines)
