"""Hub-style model folders: save_pretrained -> from_pretrained round trips, the model card, and a folder's
config.json refused exactly like a checkpoint's stored config. Offline: local folders only; the Hub's download
and upload functions are replaced by recorders."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

import ovseg
from ovseg.checkpoints.hub import looks_like_repo_id
from ovseg.errors import CheckpointError

SECRET_NAME, SECRET = "OVSEG_TEST_SECRET", "s3cr3t-6f1d0a"
REFERENCE_CONFIG = Path(__file__).parent / "data" / "reference" / "config.json"
NAMES = ["sky", "person", "rocket"]


@pytest.fixture(scope="module")
def tiny_model() -> ovseg.OVSegmentor:
    torch.manual_seed(0)
    return ovseg.create_model("tiny").eval()


@pytest.fixture(scope="module")
def folder(tiny_model, tmp_path_factory) -> Path:
    return tiny_model.save_pretrained(tmp_path_factory.mktemp("hub") / "tiny-ovseg", preset="tiny",
                                      trained_on="the quickstart's captioned scenes",
                                      evaluation={"voc": 12.34, "context": 5.0})


@pytest.fixture(scope="module")
def photo(photos) -> np.ndarray:
    return photos["astronaut"][::4, ::4].copy()  # 128 × 128: a short side of 448 after the resize


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    one, two = a.state_dict(), b.state_dict()
    return one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)


def one_line(error: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def test_a_folder_round_trips_weights_config_and_predictions(tiny_model, folder, photo):
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = ovseg.OVSegmentor.from_pretrained(folder)
    assert same_state(tiny_model, loaded) and not loaded.training
    assert json.loads((folder / "config.json").read_text())["model"] == json.loads(
        json.dumps(ovseg.config.to_container(loaded.cfg)))
    before = ovseg.Segmenter(tiny_model).predict(photo, NAMES, bg_thresh=None)
    after = ovseg.Segmenter(loaded).predict(photo, NAMES, bg_thresh=None)
    assert torch.equal(before.labels, after.labels) and torch.equal(before.logits, after.logits)


def test_the_weights_file_alone_is_an_ovseg_checkpoint(tiny_model, folder, tmp_path):
    assert same_state(tiny_model, ovseg.OVSegmentor.from_pretrained(folder / "model.safetensors"))
    only_weights = tmp_path / "only-weights"
    only_weights.mkdir()
    (only_weights / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    assert same_state(tiny_model, ovseg.OVSegmentor.from_pretrained(only_weights))  # the header's config


def test_the_model_card_describes_the_model_and_its_figures(tiny_model, folder):
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "ovseg" and card.data.pipeline_tag == "image-segmentation"
    results = {r.dataset_name: r.metric_value for r in card.data.eval_results}
    assert results == {"voc": 12.34, "context": 5.0}
    text = card.text
    assert "| preset | tiny |" in text
    assert f"| parameters | {sum(p.numel() for p in tiny_model.parameters()):,} |" in text
    assert "blocks [2, 2], group tokens [16, 0] -> 4 segments" in text and "| joint space | 32 dimensions |" in text
    assert "the quickstart's captioned scenes" in text and "| voc | 12.3 |" in text
    assert f'ovseg.OVSegmentor.from_pretrained("{folder}")' in text


def test_a_card_without_figures_says_so(tiny_model, tmp_path):
    text = (tiny_model.save_pretrained(tmp_path / "bare") / "README.md").read_text()
    assert "| preset | not recorded |" in text and "No figures recorded." in text and "model-index" not in text


def test_a_folder_without_weights_is_one_line(folder, tmp_path):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(CheckpointError) as error:
        ovseg.OVSegmentor.from_pretrained(empty)
    one_line(error, str(empty), "no model.safetensors")


def crafted_folder(tmp_path: Path, folder: Path, edit=None, text: str | None = None) -> Path:
    """A copy of ``folder`` whose config.json was changed by ``edit(config)`` or replaced by ``text``."""
    copy = tmp_path / "crafted"
    copy.mkdir()
    (copy / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    config = json.loads((folder / "config.json").read_text())
    if edit is not None:
        edit(config)
    (copy / "config.json").write_text(json.dumps(config) if text is None else text)
    return copy


def remote_code_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A transformers model folder whose configuration module writes a marker file when imported."""
    evil, marker = tmp_path / "evil_model", tmp_path / "code-ran"
    evil.mkdir()
    (evil / "config.json").write_text(json.dumps({"model_type": "evil",
                                                  "auto_map": {"AutoConfig": "configuration_evil.EvilConfig"}}))
    (evil / "configuration_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return evil, marker


@pytest.mark.parametrize("case", ["remote code", "loader argument", "interpolation", "outside model", "not json"])
def test_a_folders_config_is_untrusted_like_a_checkpoints(folder, tmp_path, monkeypatch, case):
    monkeypatch.setenv(SECRET_NAME, SECRET)
    evil, marker = remote_code_folder(tmp_path)
    edits = {
        "remote code": lambda c: c["model"]["text_encoder"].update(name=str(evil),
                                                                   hf_overrides={"trust_remote_code": True}),
        "loader argument": lambda c: c["model"]["text_encoder"]["hf_overrides"].update(trust_remote_code=True),
        "interpolation": lambda c: c["model"].update(entity_prompt="${oc.env:" + SECRET_NAME + "}"),
        "outside model": lambda c: c.update(data={"root": "${oc.env:" + SECRET_NAME + "}"}),
        "not json": None,
    }
    crafted = crafted_folder(tmp_path, folder, edits[case], text="{not json" if case == "not json" else None)
    if case == "outside model":  # ignored, never resolved: the model loads and nothing leaks
        _, cfg = ovseg.checkpoints.hub.load_pretrained(crafted)
        assert SECRET not in json.dumps(ovseg.config.to_container(cfg))
        return
    with pytest.raises(CheckpointError) as error:
        ovseg.OVSegmentor.from_pretrained(crafted)
    needle = {"remote code": "model.text_encoder.name", "loader argument": "hf_overrides.trust_remote_code",
              "interpolation": "interpolation", "not json": "not valid JSON"}[case]
    message = one_line(error, str(crafted / "config.json"), needle)
    assert SECRET not in message and not marker.exists()


def test_an_oversized_config_is_refused_before_it_is_read(folder, tmp_path):
    crafted = crafted_folder(tmp_path, folder, text=" " * 1_000_001 + "{}")
    with pytest.raises(CheckpointError) as error:
        ovseg.OVSegmentor.from_pretrained(crafted)
    one_line(error, "config.json", "1000003 bytes")


def test_a_config_that_does_not_describe_the_weights_names_the_tensor(folder, tmp_path):
    crafted = crafted_folder(tmp_path, folder, lambda c: c["model"].update(output_dim=48))
    with pytest.raises(CheckpointError) as error:
        ovseg.OVSegmentor.from_pretrained(crafted)
    one_line(error, "model.safetensors", "has shape", "32")


def test_an_official_pth_loads_through_from_pretrained(reference_weights, tmp_path):
    path = tmp_path / "official.pth"
    torch.save({"model": load_file(reference_weights), "config": json.loads(REFERENCE_CONFIG.read_text())}, path)
    expected, _ = ovseg.load_model(path)
    assert same_state(ovseg.OVSegmentor.from_pretrained(path), expected)


def test_a_repo_id_is_downloaded_only_then_and_only_the_model_files(tiny_model, folder, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert same_state(ovseg.OVSegmentor.from_pretrained("someone/tiny-ovseg", revision="v1"), tiny_model)
    assert calls == [("someone/tiny-ovseg", {"revision": "v1", "library_name": "ovseg",
                                             "allow_patterns": ["model.safetensors", "config.json", "README.md"]})]
    with pytest.raises(CheckpointError, match="not found"):  # a mistyped checkpoint path never reaches the Hub
        ovseg.OVSegmentor.from_pretrained("runs/final.safetensors")
    assert len(calls) == 1
    assert looks_like_repo_id("owner/name") and not looks_like_repo_id("a/b/c") and not looks_like_repo_id("../x")


def test_push_to_hub_uploads_the_folder_save_pretrained_writes(tiny_model, monkeypatch):
    from huggingface_hub import HfApi

    seen = {}

    def create_repo(self, repo_id, **kwargs):
        seen["create"] = (repo_id, kwargs)
        return types.SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        seen["upload"] = (repo_id, sorted(files), kwargs)
        seen["card"] = files["README.md"].decode()
        return "commit-info"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    assert tiny_model.push_to_hub("someone/tiny-ovseg", private=True, preset="tiny") == "commit-info"
    assert seen["create"] == ("someone/tiny-ovseg", {"private": True, "exist_ok": True})
    repo, files, kwargs = seen["upload"]
    assert repo == "someone/tiny-ovseg" and files == ["README.md", "config.json", "model.safetensors"]
    assert kwargs["commit_message"] == "Upload ovseg model"
    assert '# someone/tiny-ovseg' in seen["card"] and 'from_pretrained("someone/tiny-ovseg")' in seen["card"]
