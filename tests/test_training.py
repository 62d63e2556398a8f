"""Run state on disk: extra state without pickles, refusal of planted pickles, one batch layout for exact
resume, the settings check on resume, the ranges of TrainConfig."""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel

from momaplib.training import (
    MAY_CHANGE_ON_RESUME,
    SETTINGS_FILE,
    ResumeError,
    TrainConfig,
    check_job_settings,
    checkpoint_dir,
    fit,
    load_checkpoint,
    load_states,
    save_checkpoint,
    save_job_settings,
    save_states,
)
from momaplib.training.batches import InMemoryDataset

ROOT = Path(__file__).resolve().parents[1]


class _Planted:
    """Unpickling this writes a marker file: the stand-in for code planted in a checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def _tiny(tmp_path: Path, ema_decay: float = 0.9):
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    ema = EMAModel(model.parameters(), decay=ema_decay)
    return accelerator, model, optimizer, ema


def test_extra_state_round_trips_through_safetensors_and_json(tmp_path):
    _, model, _, ema = _tiny(tmp_path)
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)
        ema.step(model.parameters())
    save_states(tmp_path, {"ema": ema})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ema.json", "ema.safetensors"]
    restored = EMAModel(torch.nn.Linear(3, 2).parameters(), decay=0.5)
    load_states(tmp_path, {"ema": restored})
    assert restored.optimization_step == ema.optimization_step == 3 and restored.decay == ema.decay
    for a, b in zip(restored.shadow_params, ema.shadow_params, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ResumeError, match="no saved state 'other'"):
        load_states(tmp_path, {"other": restored})

    class Opaque:
        def state_dict(self):
            return {"fn": print}

    with pytest.raises(TypeError, match=r"states\['bad'\]: state_dict key 'fn' is not a tensor or JSON"):
        save_states(tmp_path, {"bad": Opaque()})


def _checkpoint(tmp_path: Path) -> tuple[Accelerator, Path, EMAModel]:
    accelerator, _, _, ema = _tiny(tmp_path)
    folder = save_checkpoint(accelerator, tmp_path / "run", 5, states={"ema": ema})
    assert not list(folder.glob("custom_checkpoint_*")), "extra state must not be pickled by accelerate"
    assert load_checkpoint(accelerator, folder, {"ema": ema})["step"] == 5
    return accelerator, folder, ema


def test_a_planted_custom_checkpoint_pickle_is_refused_and_never_runs(tmp_path):
    accelerator, folder, ema = _checkpoint(tmp_path)
    marker = tmp_path / "planted-code-ran"
    torch.save({"shadow_params": _Planted(marker)}, folder / "custom_checkpoint_0.pkl")
    with pytest.raises(ResumeError, match=r"custom_checkpoint_0\.pkl is a pickle this kit never writes"):
        load_checkpoint(accelerator, folder, {"ema": ema})
    assert not marker.exists()


def test_a_tampered_rng_state_pickle_is_refused_and_never_runs(tmp_path):
    accelerator, folder, ema = _checkpoint(tmp_path)
    marker = tmp_path / "planted-code-ran"
    (rng,) = folder.glob("random_states_*.pkl")
    rng.write_bytes(pickle.dumps(_Planted(marker)))
    with pytest.raises(ResumeError, match=r"random_states_0\.pkl is not a plain RNG state"):
        load_checkpoint(accelerator, folder, {"ema": ema})
    assert not marker.exists()


def test_a_resumed_run_with_an_ema_continues_exactly(tmp_path):
    """fit with ``states``: the EMA resumes from its checkpoint, bit for bit, without pickles."""
    data = InMemoryDataset({"x": torch.randn(32, 3), "y": torch.randn(32, 2)})

    def run(output_dir: Path, stop_after: int | None):
        accelerator, model, optimizer, ema = _tiny(output_dir)
        config = TrainConfig(
            output_dir=output_dir, max_steps=6, batch_size=4, checkpoint_every=3, progress=False
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

        def loss_fn(model, batch, step):
            return torch.nn.functional.mse_loss(model(batch["x"]), batch["y"]), {}

        fit(
            accelerator, config, model, optimizer, scheduler, data, loss_fn, stop_after=stop_after,
            after_step=lambda model, step: ema.step(model.parameters()), states={"ema": ema},
        )  # fmt: skip
        return ema

    straight = run(tmp_path / "straight", None)
    run(tmp_path / "interrupted", 3)
    resumed = run(tmp_path / "interrupted", None)
    assert resumed.optimization_step == straight.optimization_step == 6
    for a, b in zip(resumed.shadow_params, straight.shadow_params, strict=True):
        assert torch.equal(a, b)


def test_the_library_never_unpickles_data():
    """No ``weights_only=False``, ``pickle.load(s)``, ``allow_pickle=True`` or builtin ``eval``/``exec``."""
    pattern = re.compile(
        r"weights_only\s*=\s*False|pickle\.loads?\(|allow_pickle\s*=\s*True|(?<![.\w])(eval|exec)\("
    )
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "momaplib").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line) and not line.lstrip().startswith("#")
    ]
    assert not found, "\n".join(found)


# ----------------------------------------------------------------------------- exact resume
def test_in_memory_batches_have_one_memory_layout_whatever_the_source():
    """Latents fresh from an encoder are channels-last, read back from a cache contiguous: the same
    values must give the same batches and so the same bits through a convolution (train-diffusion's
    uninterrupted and resumed runs drifted apart by 1e-7 per step before)."""
    values = torch.randn(6, 20, 4, 4, generator=torch.Generator().manual_seed(0))
    fresh = InMemoryDataset({"x": values.contiguous(memory_format=torch.channels_last)})
    cached = InMemoryDataset({"x": values.clone()})
    a, b = fresh.get_batch([3, 1, 4])["x"], cached.get_batch([3, 1, 4])["x"]
    assert a.stride() == b.stride()
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(20, 32, 3, padding=1)
    with torch.no_grad():
        assert torch.equal(conv(a), conv(b))


def test_restored_states_go_where_the_objects_tensors_are(tmp_path):
    """An EMA on the GPU got CPU shadow weights back on resume, and its next step failed on mixed
    devices; the meta device stands in for the GPU here."""
    *_, ema = _tiny(tmp_path)
    save_states(tmp_path, {"ema": ema})
    restored = EMAModel(torch.nn.Linear(3, 2).parameters(), decay=0.5)
    restored.to("meta")
    load_states(tmp_path, {"ema": restored})
    assert all(p.device.type == "meta" for p in restored.shadow_params)
    with pytest.raises(
        ResumeError, match=r"saved state 'ema': shadow_params.0 has shape \(2, 3\), this run's"
    ):
        load_states(tmp_path, {"ema": EMAModel(torch.nn.Linear(4, 2).parameters())})


# ----------------------------------------------------------------------------- settings on resume
@dataclass
class _Job:
    """A stand-in training job: a TrainConfig and one setting of its own."""

    train: TrainConfig
    kl_weight: float = 1e-6


def _started_run(tmp_path: Path, step: int = 5) -> _Job:
    """Returns a job whose output_dir holds its settings and a (stand-in) checkpoint of ``step``."""
    job = _Job(TrainConfig(tmp_path / "run", max_steps=10, progress=False))
    save_job_settings(job, job.train)
    folder = checkpoint_dir(job.train.output_dir, step)
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"step": step}))
    return job


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_a_rerun_with_other_settings_is_refused_with_the_changed_fields_and_nothing_changes(tmp_path):
    job = _started_run(tmp_path)
    before = _snapshot(job.train.output_dir)
    changed = replace(job, train=replace(job.train, learning_rate=1e-3), kl_weight=0.0)
    with pytest.raises(ResumeError) as refused:
        save_job_settings(changed, changed.train)
    message = str(refused.value)
    assert "train.learning_rate: 0.0002 -> 0.001" in message and "kl_weight: 1e-06 -> 0.0" in message
    assert "step_0000005" in message and "--allow-config-change" in message
    assert _snapshot(job.train.output_dir) == before
    # fields that may change on resume: a longer run, another time limit, no progress bars
    longer = replace(job.train, max_steps=20, time_limit_minutes=5.0, num_workers=0, progress=True)
    check_job_settings(replace(job, train=longer), longer)
    assert set(MAY_CHANGE_ON_RESUME) >= {"max_steps", "time_limit_minutes", "progress", "output_dir"}


def test_allow_config_change_continues_and_keeps_the_old_settings(tmp_path):
    job = _started_run(tmp_path)
    old = (job.train.output_dir / SETTINGS_FILE).read_text()
    allowed = replace(job.train, learning_rate=1e-3, allow_config_change=True)
    save_job_settings(replace(job, train=allowed), allowed)
    folder = job.train.output_dir
    assert (folder / "train_config.0000005.json").read_text() == old
    assert json.loads((folder / SETTINGS_FILE).read_text())["train"]["learning_rate"] == 1e-3
    # a second change at the same step keeps both earlier files
    again = replace(allowed, learning_rate=3e-3)
    save_job_settings(replace(job, train=again), again)
    assert json.loads((folder / "train_config.0000005.1.json").read_text())["train"]["learning_rate"] == 1e-3
    assert (folder / "train_config.0000005.json").read_text() == old


def test_resume_false_is_refused_before_the_settings_are_touched(tmp_path):
    job = _started_run(tmp_path)
    before = _snapshot(job.train.output_dir)
    fresh = replace(job.train, resume=False, learning_rate=1e-3)
    with pytest.raises(ResumeError, match="holds checkpoints of an earlier run"):
        save_job_settings(replace(job, train=fresh), fresh)
    assert _snapshot(job.train.output_dir) == before


@pytest.mark.parametrize("command", ["train-vae", "train-image-vae", "train-diffusion"])
def test_allow_config_change_is_a_flag_of_every_trainer(command):
    import tyro

    from momaplib.cli import COMMANDS, _load

    job = tyro.cli(
        _load(COMMANDS[command]), args=["--allow-config-change"], config=(tyro.conf.OmitArgPrefixes,)
    )
    assert job.train.allow_config_change


# ----------------------------------------------------------------------------- ranges
@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("lr_schedule", "step", "TrainConfig.lr_schedule (--lr-schedule): expected one of"),
        ("max_grad_norm", -1.0, "TrainConfig.max_grad_norm (--max-grad-norm): expected a finite number >= 0"),
        ("time_limit_minutes", -1.0, "TrainConfig.time_limit_minutes (--time-limit-minutes): expected"),
        ("batch_size", 2.5, "TrainConfig.batch_size (--batch-size): expected an integer >= 1, got 2.5"),
    ],
)
def test_train_config_fields_outside_their_range_are_named(field, value, expected):
    """Each of these ran before: an unknown schedule silently became cosine, a negative clipping
    norm silently turned clipping off, a negative time limit stopped after the first step."""
    with pytest.raises(ValueError) as raised:
        TrainConfig(**{field: value})
    assert expected in str(raised.value)
