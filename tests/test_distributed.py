"""Distributed training on CPU (gloo): equal to one process over the concatenated batch, resumable after a
killed rank, clear failures. The multi-process runs launch the real ``torchrun … -m ovseg train``."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ovseg.config import load_config
from ovseg.engine import distributed as D
from ovseg.engine.trainer import TrainingRun, train
from ovseg.factory import preset_path

SMALL = ["data.scenes.train_size=64", "data.scenes.val_size=4", "data.image_size=32", "model.img_encoder.img_size=32",
         "model.img_encoder.embed_dim=32", "model.img_encoder.num_heads=[2,2]", "model.img_encoder.depths=[1,0]",
         "model.proj_inner_dim=64", "model.output_dim=32", "evaluate.val_every_steps=0",
         "evaluate.val_bg_thresholds=[0.5]", "train.log_every=1", "train.text_cache_bf16=false",
         "model.img_encoder.stem_extra_convs=0"]  # the preset's conv stem: BatchNorm in the online and EMA encoders
# deterministic and gradient-sensitive: soft grouping (no Gumbel noise), BatchNorm heads (global statistics),
# and AdamW with a large eps, whose step is then proportional to the gradient (a plain first Adam step is
# ±lr whatever the gradient's scale, so it would hide a wrongly scaled gradient)
EXACT = ["model.proj_num_layers=2", "train.soft_assignment_fraction=1", "train.warmup_epochs=0",
         "train.base_lr=0.02", "train.min_lr=0.02", "train.eps=1.0", "checkpoint.every_steps=0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(output: Path, opts: list[str], stage: int = 1, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
            "-m", "ovseg", "train", "--cfg", str(preset_path(f"quickstart/stage{stage}")), "--output", str(output),
            "--opts", *opts]


def torchrun(output: Path, opts: list[str], stage: int = 1) -> subprocess.CompletedProcess:
    done = subprocess.run(torchrun_command(output, opts, stage), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def losses(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss_total" in r]


def assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        if k.endswith("running_var"):  # prompts are normalised on every rank: their copies shift n/(n-1)
            assert torch.allclose(wa[k], wb[k], rtol=2e-3), k
        else:
            assert torch.allclose(wa[k], wb[k], atol=atol, rtol=0), (k, (wa[k] - wb[k]).abs().max())


def assert_same_losses(one: list[dict], two: list[dict], parts: tuple[str, ...]) -> None:
    assert len(one) == len(two) > 0
    for a, b in zip(one, two, strict=True):
        for part in parts:
            assert a[part] == pytest.approx(b[part], rel=1e-5), part


def test_two_processes_equal_one_process_over_the_concatenated_batch(tmp_path):
    one = train(load_config(preset_path("quickstart/stage1"), SMALL + EXACT + ["data.batch_size=16",
                                                                             "train.max_steps=2"]), tmp_path / "one")
    torchrun(tmp_path / "two", SMALL + EXACT + ["data.batch_size=8", "train.max_steps=2"])
    parts = ("loss_contrast", "loss_entity", "loss_multi_label", "loss_total")
    assert_same_losses(losses(tmp_path / "one"), losses(tmp_path / "two"), parts)
    assert_same_weights(one.final, tmp_path / "two" / "final.safetensors", atol=2e-5)
    # the comparison can fail: two steps moved the weights far beyond the tolerance
    start = load_config(preset_path("quickstart/stage1"), SMALL + EXACT)
    initial = TrainingRun(start, tmp_path / "x").model.state_dict()
    moved = max((v - load_file(one.final)[k]).abs().max() for k, v in initial.items()
                if k.startswith("img_projector") and v.is_floating_point())
    assert moved > 1e-3

    # stage 2 from that checkpoint: the mask loss keeps the original's per-process sum, so two processes
    # equal one process with half its weight (see the trainer's docstring)
    stage2 = SMALL + EXACT + [f"checkpoint.stage1_checkpoint={one.final}", "train.max_steps=1"]
    single = train(load_config(preset_path("quickstart/stage2"), stage2 + ["data.batch_size=16",
                                                                       "model.maskloss_weight=0.05"]), tmp_path / "s1")
    torchrun(tmp_path / "s2", stage2 + ["data.batch_size=8"], stage=2)
    a, b = losses(tmp_path / "s1"), losses(tmp_path / "s2")
    assert_same_losses(a, b, ("loss_contrast", "loss_entity", "loss_total"))
    assert b[0]["loss_mask"] == pytest.approx(a[0]["loss_mask"] / 2, rel=1e-5)
    assert_same_weights(single.final, tmp_path / "s2" / "final.safetensors", atol=2e-5)


def test_a_killed_rank_is_restarted_from_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    opts = SMALL + ["data.batch_size=8", "train.max_steps=400", "checkpoint.every_steps=4", "checkpoint.keep_last=0",
                    "evaluate.val_every_steps=0"]
    job = subprocess.Popen(torchrun_command(out, opts), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    latest = out / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while not (latest.is_file() and json.loads(latest.read_text())["step"] >= 8) and job.poll() is None:
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.2)
    ranks = subprocess.run(["pgrep", "-f", "-P", str(job.pid), "ovseg"], capture_output=True, text=True).stdout.split()
    assert ranks, "rank processes not found"
    os.kill(int(ranks[-1]), signal.SIGKILL)
    _, err = job.communicate(timeout=120)
    assert job.returncode != 0, err[-2000:]
    killed_at = json.loads(latest.read_text())["step"]
    assert 8 <= killed_at < 400
    for weights in (out / "checkpoints").glob("*.safetensors"):  # every written checkpoint is complete
        load_file(weights)
        torch.load(weights.with_suffix(".state.pt"), weights_only=True)

    done = torchrun(out, opts[:-4] + ["train.max_steps=" + str(killed_at + 4), "checkpoint.every_steps=4",
                                      "checkpoint.keep_last=0", "evaluate.val_every_steps=0"])
    assert f"at step {killed_at}" in done.stderr  # "resumed from … at step N"
    steps = [r["step"] for r in losses(out)]
    assert steps[-4:] == [killed_at + 1, killed_at + 2, killed_at + 3, killed_at + 4]
    assert json.loads(latest.read_text())["step"] == killed_at + 4


def test_an_unreachable_rendezvous_fails_with_a_clear_message_within_the_timeout(tmp_path):
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}  # nobody listens there
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "ovseg", "train", "--cfg", str(preset_path("quickstart/stage1")),
                           "--output", str(tmp_path), "--opts", *SMALL, "train.dist_timeout_s=3"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert "could not join the process group at 127.0.0.1:" in last and "within 3 s" in last
    assert "Traceback" not in done.stderr
    assert time.time() - start < 60


def test_a_checkpoint_of_another_global_batch_resumes_with_a_rescaled_schedule(tmp_path, caplog):
    base = SMALL + ["checkpoint.every_steps=4", "train.max_steps=4"]
    train(load_config(preset_path("quickstart/stage1"), base + ["data.batch_size=16"]), tmp_path)
    # e.g. the same run continued on twice the processes: half the per-process batch here, one process
    cfg = load_config(preset_path("quickstart/stage1"), base + ["data.batch_size=8"])
    run = TrainingRun(cfg, tmp_path)
    with caplog.at_level(logging.WARNING):
        run.resume()
    assert run.state["step"] == 8  # 64 samples seen = 8 steps of 8
    assert "global batch of 16" in caplog.text and "step 4 becomes step 8" in caplog.text


def test_launch_environments_are_read_from_torchrun_and_slurm():
    torchrun_env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "node7", "MASTER_PORT": "1234"}
    assert D.read_launch(torchrun_env) == D.Launch(3, 8, 1, "node7", 1234, "torchrun")
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "4242",
             "SLURM_JOB_NODELIST": "gpu[03-05,07]"}
    launch = D.read_launch(slurm)
    assert (launch.rank, launch.world_size, launch.local_rank, launch.launcher) == (5, 16, 1, "slurm")
    assert launch.master_addr == "gpu03" and launch.master_port == 24242
    assert D.read_launch({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).world_size == 1  # a plain sbatch job
    assert D.read_launch({}) == D.Launch()
    assert D.first_slurm_host("node1,node2") == "node1"
    with pytest.raises(D.DistributedError, match="needs CUDA"):
        D.pick_backend("nccl", "cpu")
    assert D.pick_backend("auto", "cpu") == "gloo" and D.pick_backend("auto", "cuda") == "nccl"


def test_srun_style_launch_trains_without_torchrun(tmp_path):
    """What `srun ovseg train …` gives each task: only Slurm's variables; the rendezvous is derived."""
    port = free_port()
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
        env.update(SLURM_PROCID=str(rank), SLURM_NTASKS="2", SLURM_LOCALID=str(rank), SLURM_JOB_ID=str(port - 20000),
                   SLURM_JOB_NODELIST="localhost")
        procs.append(subprocess.Popen([sys.executable, "-m", "ovseg", "train", "--cfg",
                                       str(preset_path("quickstart/stage1")), "--output", str(tmp_path),
                                       "--max-steps", "2", "--opts", *SMALL, "data.batch_size=8"],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert "joined the gloo process group (slurm)" in outs[0][1]
    assert [r["step"] for r in losses(tmp_path)] == [1, 2]  # rank 0 alone writes the metrics


def test_the_launch_script_runs_torchrun_with_the_given_config(tmp_path):
    env = {**os.environ, "NPROC": "2", "MASTER_PORT": str(free_port()), "OUTPUT": str(tmp_path),
           "CONFIG": str(preset_path("quickstart/stage1"))}
    done = subprocess.run(["bash", "scripts/run.sh", "--max-steps", "1", "--opts", *SMALL, "data.batch_size=8"],
                          env=env, capture_output=True, text=True, timeout=180, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "final.safetensors").is_file() and len(losses(tmp_path)) == 1


def test_streaming_shards_keep_ranks_in_lock_step_over_epochs(tmp_path):
    """Prepared shards, 2 ranks x 2 loader workers with uneven parts: every rank takes the same steps."""
    from test_prepare import write_corpus

    from ovseg.data.prepare import prepare

    prepare(str(write_corpus(tmp_path / "corpus")), tmp_path / "shards", shard_size=6, workers=1, progress=False)
    opts = ["data.type=webdataset", f"data.shards={tmp_path / 'shards'}", "data.image_size=32", "data.batch_size=3",
            "data.num_workers=2", "model.img_encoder.img_size=32", "model.use_entityloss=true", "train.max_steps=5",
            "train.warmup_epochs=0", "checkpoint.every_steps=0", "evaluate.val_every_steps=0", "train.log_every=1"]
    command = torchrun_command(tmp_path / "run", opts)
    command[command.index("--cfg") + 1] = str(preset_path("tiny"))
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss_total" in r] == [1, 2, 3, 4, 5]
    assert [r["epoch"] for r in records if "skipped" in r] == [0, 1]  # 2 steps per epoch: epochs 0, 1 done
