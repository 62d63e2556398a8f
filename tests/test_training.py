"""Run state on disk (momaplib.training.state): extra state without pickles, refusal of planted pickles."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel

from momaplib.training import (
    ResumeError,
    TrainConfig,
    fit,
    load_checkpoint,
    load_states,
    save_checkpoint,
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
