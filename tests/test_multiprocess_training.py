"""Multi-process training: 2 CPU processes (gloo, launched as ``accelerate launch`` launches GPU
processes) follow the single-process run with the same global batch, and a run resumes with
another number of processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from momaplib.data import write_dataset
from momaplib.sim import SimConfig
from momaplib.training import ResumeError, TrainConfig, read_metrics
from momaplib.vae.train import TrainImageVAEJob

TINY = {"block_out_channels": (8, 8, 8, 8), "layers_per_block": 1, "norm_num_groups": 4}
LOOP = {
    "max_steps": 4,
    "lr_warmup_steps": 0,
    "lr_schedule": "constant",
    "checkpoint_every": 2,
    "learning_rate": 1e-3,
    "num_workers": 0,
    "progress": False,
}


def _single(data: Path, output_dir: Path, batch_size: int) -> None:
    train = TrainConfig(output_dir=output_dir, batch_size=batch_size, **LOOP)
    TrainImageVAEJob(datasets=(data,), train=train, **TINY).run()


def _launch_two_processes(data: Path, output_dir: Path, batch_size: int) -> None:
    """Runs ``momap train-image-vae`` in 2 processes with torch's launcher (what ``accelerate launch
    --multi_gpu`` runs on GPUs; ACCELERATE_USE_CPU makes accelerate take gloo on the CPU)."""
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in LOOP.items() if key != "progress"]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "momaplib.cli", "train-image-vae", "--datasets", str(data), "--output-dir", str(output_dir),
        "--batch-size", str(batch_size), "--block-out-channels", "8", "8", "8", "8",
        "--layers-per-block", "1", "--norm-num-groups", "4", "--no-progress", *flags,
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "MOMAP_DEBUG": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def _losses(output_dir: Path) -> dict[int, float]:
    return {record["step"]: record["loss"] for record in read_metrics(output_dir)}


@pytest.mark.slow
def test_two_processes_follow_one_process_and_resume_with_another_count(tmp_path):
    data = tmp_path / "data"
    write_dataset(
        data, SimConfig(family="tabletop").smoke(), 8, workers=0, splits=(1.0, 0.0, 0.0), progress=False
    )
    _launch_two_processes(data, tmp_path / "two", batch_size=2)  # global batch 2 x 2
    _single(data, tmp_path / "one", batch_size=4)  # global batch 4 x 1
    two, one = _losses(tmp_path / "two"), _losses(tmp_path / "one")
    assert sorted(two) == sorted(one) == [1, 2, 3, 4]
    assert len(set(one.values())) == 4  # the loss moves: the comparison below is not vacuous
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6), step
    state = json.loads((tmp_path / "two" / "checkpoints" / "step_0000004" / "state.json").read_text())
    assert (state["num_processes"], state["global_batch"]) == (2, 4)
    weights_two = load_file(tmp_path / "two" / "model" / "diffusion_pytorch_model.safetensors")
    weights_one = load_file(tmp_path / "one" / "model" / "diffusion_pytorch_model.safetensors")
    for name, value in weights_one.items():
        assert (weights_two[name] - value).abs().max() <= 1e-4, name

    # Resume the 2-process run at step 2 in one process with the same global batch.
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "two", resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_0000004")
    with pytest.raises(ResumeError, match=r"global batch of 4 items per step .* this run has 2"):
        _single(data, resumed, batch_size=2)  # another global batch would continue another run
    _single(data, resumed, batch_size=4)
    again = _losses(resumed)
    assert sorted(again) == [1, 2, 3, 4]
    for step in (3, 4):
        assert again[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6), step
