"""ovseg export and the onnxruntime predictor: the exported graphs reproduce PyTorch's logits and label maps.

One small model (the tiny preset cut to one block per stage and one text layer, seed 0) is saved as a
checkpoint and exported once through the command line (both formats); every test reads that folder. Its
grouping is made decisive, as a trained model's is: random weights assign every patch to the groups almost
uniformly (top-2 margins ~1e-6), so that float rounding alone, in either backend, could move a pixel between
two near-tied groups.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import ovseg
from ovseg.cli import main
from ovseg.errors import CheckpointError, OvsegError

pytest.importorskip("onnx", reason="the export extra is not installed (pip install 'ovseg[export]')")
pytest.importorskip("onnxscript", reason="the export extra is not installed (pip install 'ovseg[export]')")
pytest.importorskip("onnxruntime", reason="the export extra is not installed (pip install 'ovseg[export]')")

from ovseg.export import OnnxSegmenter  # noqa: E402
from ovseg.export.graphs import WindowEncoder  # noqa: E402

SMALL = ["model.img_encoder.depths=[1,1]", "model.text_encoder.hf_overrides.num_hidden_layers=1"]
HARNESS = ["evaluate.seg.stride=32", "evaluate.seg.short_side=64"]  # 64-px windows over a 64-px short side


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ovseg.load_config(ovseg.factory.preset_path("tiny"), SMALL)
    model = ovseg.create_model(cfg)
    with torch.no_grad():
        model.img_encoder.layers[0].downsample.assign.q_proj.weight.mul_(30)  # top-2 margins ~1e-3
    path = tmp_path_factory.mktemp("ckpt") / "small.safetensors"
    ovseg.save_model(model, cfg, path)
    return path


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "out"
    assert (
        main(
            [
                "export",
                str(checkpoint),
                "--output",
                str(out),
                "--crop-size",
                "64",
                "--format",
                "both",
                "--opts",
                *HARNESS,
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def pytorch_segmenter(checkpoint):
    model, cfg = ovseg.load_model(checkpoint)
    seg_cfg = ovseg.config.apply_opts(cfg, [*HARNESS, "evaluate.seg.crop_size=64"]).evaluate.seg
    return ovseg.Segmenter(model, seg_cfg)


def small(photo: np.ndarray, width: int) -> np.ndarray:
    height = round(photo.shape[0] * width / photo.shape[1])
    return np.asarray(Image.fromarray(photo).resize((width, height), Image.BILINEAR))


def test_export_writes_both_formats_and_a_manifest(exported):
    assert sorted(p.name for p in exported.iterdir()) == [
        "export.json",
        "image_encoder.onnx",
        "image_encoder.pt2",
        "text_encoder.onnx",
        "text_encoder.pt2",
    ]
    manifest = json.loads((exported / "export.json").read_text())
    assert manifest["harness"]["crop_size"] == 64 and manifest["harness"]["stride"] == 32
    assert manifest["harness"]["bg_thresh"] == pytest.approx(0.95) and "data_root" not in manifest["harness"]
    assert manifest["preprocess"] == {
        "mean": [123.675, 116.28, 103.53],
        "std": [58.395, 57.12, 57.375],
        "patch_size": 16,
    }
    assert manifest["tokenizer"] == {"text_encoder": "bert-base-uncased", "tokenizer": None, "max_length": 77}
    assert manifest["ovseg_version"] == ovseg.__version__
    assert all(diff < 1e-5 for diff in manifest["parity_max_abs_diff"].values())
    import onnx

    graph = onnx.load(exported / "image_encoder.onnx").graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert [o.name for o in graph.output] == ["group_emb", "image_emb", "soft_assign"]


def test_onnxruntime_reproduces_pytorch_logits_and_label_maps(exported, pytorch_segmenter, photos):
    onnx_segmenter = OnnxSegmenter(exported)
    vocabularies = [["person", "cat", "sky|clouds"], ["cup", "dog", "tree", "rocket", "grass", "wall"]]
    worst = 0.0
    for name, width in (("astronaut", 96), ("chelsea", 120), ("coffee", 80)):
        for names, templates in zip(vocabularies, ("simple", "subset"), strict=True):
            expected = pytorch_segmenter.predict(small(photos[name], width), names, templates=templates)
            got = onnx_segmenter.predict(small(photos[name], width), names, templates=templates)
            worst = max(worst, float((got.logits - expected.logits).abs().max()))
            assert torch.equal(got.labels, expected.labels), name
            assert got.class_names == expected.class_names and got.boxes == expected.boxes
            assert torch.equal(got.group_maps, expected.group_maps)
    assert worst < 1e-4, worst


def test_image_graph_serves_any_window_size(exported, pytorch_segmenter):
    """One patch high, the position table's own grid (224 px: the resize is an identity there), odd sizes."""
    onnx_segmenter = OnnxSegmenter(exported)
    encoder = WindowEncoder(pytorch_segmenter.model).eval()
    generator = torch.Generator().manual_seed(0)
    for size in ((16, 48), (224, 224), (70, 90)):
        windows = torch.randn(2, 3, *size, generator=generator)
        with torch.no_grad():
            expected = encoder(windows)
        got = onnx_segmenter.encoders.image.run(None, {"images": windows.numpy()})
        assert [g.shape for g in got] == [tuple(e.shape) for e in expected]
        assert max(float((torch.from_numpy(g) - e).abs().max()) for g, e in zip(got, expected, strict=True)) < 1e-5, (
            size
        )


def test_torch_export_program_matches_the_model(exported, pytorch_segmenter):
    program = torch.export.load(exported / "image_encoder.pt2").module()
    windows = torch.randn(3, 3, 64, 80, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = WindowEncoder(pytorch_segmenter.model).eval()(windows)
        got = program(windows)
    assert all(torch.allclose(g, e, atol=1e-6) for g, e in zip(got, expected, strict=True))


def cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    err = cli_error(capsys, ["export", str(tmp_path / "nope.safetensors"), "--output", str(tmp_path / "out")])
    assert "nope.safetensors" in err


def test_missing_onnx_names_the_extra(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    err = cli_error(capsys, ["export", str(checkpoint), "--output", str(tmp_path / "out")])
    assert "pip install 'ovseg[export]'" in err
    with pytest.raises(OvsegError, match=r"pip install 'ovseg\[export\]'"):
        OnnxSegmenter(tmp_path)


def test_a_model_whose_windows_cannot_be_exported_says_why(tmp_path, capsys):
    cfg = ovseg.load_config(
        ovseg.factory.preset_path("tiny"),
        [
            *SMALL[1:],
            "model.img_encoder.depths=[1,1,1]",
            "model.img_encoder.num_heads=[4,4,4]",
            "model.img_encoder.num_group_tokens=[8,4,0]",
            "model.img_encoder.num_output_groups=[4,2]",
            "model.img_encoder.embed_factors=[1,1,1]",
        ],
    )
    path = tmp_path / "two_blocks.safetensors"
    ovseg.save_model(ovseg.create_model(cfg), cfg, path)
    err = cli_error(capsys, ["export", str(path), "--output", str(tmp_path / "out")])
    assert "2 grouping blocks" in err
    assert not (tmp_path / "out").exists()


def test_runtime_refuses_what_a_folder_may_not_say(exported, tmp_path):
    import onnx
    from onnx.external_data_helper import set_external_data

    folder = tmp_path / "copy"
    shutil.copytree(exported, folder)
    manifest = json.loads((folder / "export.json").read_text())
    manifest["tokenizer"]["text_encoder"] = "https://example.com/tokenizer"
    (folder / "export.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="refused tokenizer.text_encoder"):
        OnnxSegmenter(folder)
    shutil.copy(exported / "export.json", folder / "export.json")
    model = onnx.load(folder / "text_encoder.onnx")
    tensor = model.graph.initializer[0]
    set_external_data(tensor, location="../../etc/passwd")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    onnx.save(model, folder / "text_encoder.onnx")
    with pytest.raises(CheckpointError, match="external data"):
        OnnxSegmenter(folder)
    with pytest.raises(CheckpointError, match="no such file"):
        OnnxSegmenter(tmp_path / "missing")
