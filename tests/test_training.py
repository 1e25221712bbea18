"""Training: a short run lowers the loss, resumes exactly, stops cleanly on NaN, freezes what it must."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from ovseg.config import load_config
from ovseg.engine import objective as objective_module
from ovseg.engine import precision as precision_module
from ovseg.engine import trainer as trainer_module
from ovseg.engine.trainer import NonFiniteLoss, TrainingRun, train
from ovseg.errors import ConfigError
from ovseg.factory import preset_path

SMALL = ["data.scenes.train_size=64", "data.scenes.val_size=4", "data.batch_size=16", "data.image_size=32",
         "model.img_encoder.img_size=32", "model.img_encoder.embed_dim=32", "model.img_encoder.num_heads=[2,2]",
         "model.img_encoder.depths=[1,0]", "model.proj_inner_dim=64", "model.output_dim=32",
         "evaluate.val_every_steps=0", "evaluate.val_bg_thresholds=[0.5]", "train.log_every=1"]


def small_cfg(stage: int = 1, extra: list[str] = ()):
    return load_config(preset_path(f"quickstart/stage{stage}"), SMALL + list(extra))


def test_a_short_run_lowers_the_loss(tmp_path):
    cfg = small_cfg(extra=["train.max_steps=40", "train.warmup_epochs=0", "train.base_lr=2e-3",
                           "train.soft_assignment_fraction=0", "checkpoint.every_steps=0"])
    result = train(cfg, tmp_path)
    losses = [r["loss_total"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
              if "loss_total" in r]
    assert len(losses) == 40
    assert sum(losses[-8:]) / 8 < 0.9 * sum(losses[:8]) / 8
    assert result.final.is_file() and result.best is not None and result.best.is_file()


class Killed(Exception):
    pass


def test_an_interrupted_run_resumes_at_the_same_step_with_identical_state(tmp_path, monkeypatch):
    cfg = small_cfg(extra=["checkpoint.every_steps=3", "train.max_steps=6", "checkpoint.keep_last=0",
                           "train.text_cache_bf16=false"])  # fp32: cached features do not depend on batching
    uninterrupted = train(cfg, tmp_path / "a")
    real_save = trainer_module.save_training_checkpoint

    def save_then_die(folder, model, cfg, optimizer, state, keep_last):
        path = real_save(folder, model, cfg, optimizer, state, keep_last)
        if state["step"] == 3:
            raise Killed  # the process dies right after writing step 3
        return path

    monkeypatch.setattr(trainer_module, "save_training_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "b")
    monkeypatch.setattr(trainer_module, "save_training_checkpoint", real_save)
    saved = torch.load(tmp_path / "b" / "checkpoints" / "step_00000003.state.pt", weights_only=True)
    run = TrainingRun(cfg, tmp_path / "b")
    run.resume()
    assert run.state["step"] == 3
    assert _same(run.optimizer.state_dict()["state"], saved["optimizer"]["state"])
    weights = load_file(tmp_path / "b" / "checkpoints" / "step_00000003.safetensors")
    assert all(torch.equal(v, weights[k]) for k, v in run.model.state_dict().items())
    resumed = train(cfg, tmp_path / "b")
    assert resumed.steps == 6
    # continuing gives the uninterrupted run's weights up to float noise: frozen-text features that the
    # resumed process encodes lazily (entity prompts) fall into other batches, which moves their last bits
    a, b = load_file(uninterrupted.final), load_file(resumed.final)
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def _same(x, y) -> bool:
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    return torch.equal(x, y) if torch.is_tensor(x) else x == y


def test_a_non_finite_loss_stops_with_step_and_part_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    original = objective_module.compute_losses
    calls = {"n": 0}

    def poisoned(model, batch, text, cfg):
        losses = original(model, batch, text, cfg)
        calls["n"] += 1
        if calls["n"] >= 3:
            losses["entity"] = losses["entity"] * float("nan")
            losses["total"] = losses["contrast"] + losses["entity"]
        return losses

    monkeypatch.setattr(objective_module, "compute_losses", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"step 3: loss 'entity' is nan.*step_00000002"):
        train(small_cfg(extra=["train.max_steps=6", "checkpoint.every_steps=2"]), tmp_path)
    latest = json.loads((tmp_path / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 2


def test_stage2_needs_a_stage1_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="stage1_checkpoint"):
        train(small_cfg(2, ["checkpoint.stage1_checkpoint=null", "train.max_steps=1"]), tmp_path)


def test_stage2_gradients_skip_the_momentum_and_frozen_text_encoders(tmp_path):
    stage1 = train(small_cfg(extra=["train.max_steps=1"]), tmp_path / "s1")
    cfg = small_cfg(2, [f"checkpoint.stage1_checkpoint={stage1.final}", "train.max_steps=1"])
    run = TrainingRun(cfg, tmp_path / "s2")
    torch.testing.assert_close(run.model.img_encoder_momentum.pos_embed, run.model.img_encoder.pos_embed)
    batch = run.to_device(next(iter(run.loader)))
    losses = objective_module.compute_losses(run.model, batch, run.text, cfg.model)
    assert set(losses) >= {"contrast", "entity", "mask", "total"}
    losses["total"].backward()
    assert all(p.grad is None for p in run.model.img_encoder_momentum.parameters())
    assert all(p.grad is None for p in run.model.text_encoder.parameters())
    assert run.model.text_projector.linear_out.weight.grad is not None
    assert run.model.img_encoder.layers[0].group_token.grad is not None


def test_train_cli_smoke(tmp_path):
    import subprocess
    import sys

    args = [sys.executable, "-m", "ovseg", "train", "--cfg", str(preset_path("quickstart/stage1")),
            "--output", str(tmp_path), "--max-steps", "2", "--opts", *SMALL]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained 2 steps" in done.stdout
    bad = subprocess.run(args[:-len(SMALL)] + ["model.nope=1"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "model.nope" in bad.stderr and "Traceback" not in bad.stderr


def test_an_output_folder_of_another_model_is_refused_with_the_setting_that_differs(tmp_path):
    train(small_cfg(extra=["train.max_steps=2", "checkpoint.every_steps=2"]), tmp_path)
    with pytest.raises(ConfigError, match=r"another model \(model.img_encoder.stem: conv → patch\); choose another"):
        train(small_cfg(extra=["train.max_steps=3", "model.img_encoder.stem=patch",
                               "model.img_encoder.stem_extra_convs=0"]), tmp_path)


def test_the_patch_prompt_loss_scores_each_entity_by_its_best_patch(tmp_path):
    from ovseg.losses import multi_label_loss, presence

    cfg = small_cfg(extra=["model.patch_label_weight=0.5", "model.multi_label_weight=0"])
    run = TrainingRun(cfg, tmp_path)
    batch = run.to_device(next(iter(run.loader)))
    torch.manual_seed(0)  # the same Gumbel noise for the loss and the check
    losses = objective_module.compute_losses(run.model, batch, run.text, cfg.model)
    torch.manual_seed(0)
    image = run.model.encode_image(batch["image"], per_patch=True)
    vocabulary = sorted({e for names in batch["entities"] for e in names})
    prompts = run.model.text_projector(run.text.encode([cfg.model.entity_prompt.format(e) for e in vocabulary])[0])
    expected = multi_label_loss(image.patch_feat, prompts, presence(batch["entities"], vocabulary, prompts.device),
                                run.model.scale())
    torch.testing.assert_close(losses["patch_label"], expected)
    torch.testing.assert_close(losses["total"], losses["contrast"] + losses["entity"] + 0.5 * expected)
    with pytest.raises(ConfigError, match="patch_label_weight needs one grouping block"):
        TrainingRun(small_cfg(extra=["model.patch_label_weight=1", "model.img_encoder.depths=[1,1]"]), tmp_path / "b")


@pytest.mark.parametrize("configured_hard", [True, False])
def test_the_soft_warm_up_ends_in_the_configured_assignment(configured_hard):
    from ovseg.factory import create_model
    from ovseg.model.grouping import AssignAttention

    model = create_model(small_cfg(extra=[f"model.img_encoder.hard_assignment={configured_hard}"]))
    assign = [m for m in model.modules() if isinstance(m, AssignAttention)]
    model.set_hard_assignment(False)
    assert not any(m.hard or m.gumbel for m in assign)
    model.set_hard_assignment(True)  # the warm-up is over
    assert all(m.hard == m.gumbel == configured_hard for m in assign)


def test_stem_precision_runs_only_the_stem_in_bf16_and_restores_it():
    from ovseg.factory import create_model
    from ovseg.model.vision import stem_precision

    torch.manual_seed(0)
    encoder = create_model(small_cfg()).eval().img_encoder
    dtypes = {}
    encoder.patch_embed.proj.register_forward_hook(lambda m, i, o: dtypes.__setitem__("stem", o.dtype))
    encoder.layers[0].blocks[0].register_forward_pre_hook(lambda m, i: dtypes.__setitem__("block", i[0].dtype))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference, _ = encoder.embed_patches(images)
        with stem_precision([encoder], torch.bfloat16):
            fast, _ = encoder.embed_patches(images)
            encoder(images)
        assert dtypes == {"stem": torch.bfloat16, "block": torch.float32}
        assert fast.dtype == torch.float32 and encoder.stem_dtype is None
        error = (fast - reference).norm() / reference.norm()
        assert 0 < error < 0.01  # bf16 rounding (measured 0.003)
        with pytest.raises(RuntimeError), stem_precision([encoder], torch.bfloat16):
            raise RuntimeError
        assert encoder.stem_dtype is None
        encoder(images)
    assert dtypes["stem"] == torch.float32


def test_bf16_stem_needs_native_bf16_and_unknown_modes_are_refused(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision_module, "cpu_has_amx", lambda: False)  # bf16 would be emulated: slower
    assert precision_module.stem_dtype("bf16-stem", cpu) is None
    assert precision_module.stem_dtype("bf16-stem", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(precision_module, "cpu_has_amx", lambda: True)
    assert precision_module.stem_dtype("bf16-stem", cpu) == torch.bfloat16
    assert precision_module.stem_dtype("fp32", cpu) is None
    assert precision_module.autocast_dtype("bf16-stem", cpu) is None  # the rest of the step stays fp32
    with pytest.raises(ConfigError, match="train.amp: expected auto, fp32, bf16, bf16-stem, got 'fp16'"):
        precision_module.autocast_dtype("fp16", cpu)


def test_a_bf16_stem_step_trains_the_stem_and_validation_runs_in_fp32(tmp_path, monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_amx", lambda: True)
    run = TrainingRun(small_cfg(extra=["train.amp=bf16-stem"]), tmp_path)
    run.warm_text_cache()
    seen = []
    run.model.img_encoder.patch_embed.proj.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    stem = run.model.img_encoder.patch_embed.proj[0].weight
    before = stem.detach().clone()
    parts = run.step([next(run.epoch_batches(0))])
    assert seen == [torch.bfloat16] and stem.dtype == torch.float32
    assert torch.isfinite(parts["total"]) and not torch.equal(stem, before)
    with torch.no_grad():
        run.model.img_encoder(torch.randn(1, 3, 32, 32))
    assert seen[-1] == torch.float32
