"""Fault table, training: bad settings, datasets, ``--init`` sources, reruns with other settings, and
incomplete or edited checkpoints, for ``momap train-image-vae``, ``train-vae`` and ``train-diffusion``
(the job dataclasses the commands run) and the ``TrainConfig`` they share.

Each check fires before anything is loaded, encoded or written; cases that need a dataset copy one
tiny folder written once per session.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from momaplib.training.config import ResumeError
from tests.faults import Fault


def _config(**fields):
    from momaplib.training import TrainConfig

    return TrainConfig(**fields)


@functools.lru_cache(maxsize=1)
def _template() -> Path:
    """A one-clip smoke dataset (its clip is in the train split), written once."""
    from momaplib.data import write_dataset
    from momaplib.sim import SimConfig

    folder = Path(tempfile.mkdtemp(prefix="momap-faults-training-"))
    atexit.register(shutil.rmtree, folder, True)
    write_dataset(folder / "data", SimConfig().smoke(), num_clips=1, workers=0, progress=False)
    return folder / "data"


def _dataset(tmp_path: Path, split: str = "train") -> Path:
    """Returns a copy of the template dataset whose clip is in ``split``."""
    folder = shutil.copytree(_template(), tmp_path / "data")
    manifest = folder / "manifest.jsonl"
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps({**entry, "split": split}) + "\n" for entry in entries))
    return folder


def _vae_job(tmp_path: Path, datasets=None, **fields):
    from momaplib.vae.train import TrainVAEJob

    datasets = datasets or (tmp_path / "data",)
    return TrainVAEJob(datasets, _config(output_dir=tmp_path / "run", progress=False), **fields)


def _diffusion_job(tmp_path: Path, datasets=None, **fields):
    from momaplib.diffusion.train import TrainDiffusionJob

    datasets = datasets or (tmp_path / "data",)
    return TrainDiffusionJob(datasets, _config(output_dir=tmp_path / "run", progress=False), **fields)


def _started(job, step: int = 5):
    """Saves ``job``'s settings and a stand-in checkpoint of ``step`` in its output_dir, as a run
    that was interrupted after that checkpoint leaves them; returns the job."""
    from momaplib.training import checkpoint_dir, save_job_settings

    save_job_settings(job, job.train)
    folder = checkpoint_dir(job.train.output_dir, step)
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"step": step}))
    return job


def _rerun(job, **train_fields):
    """Reruns ``job`` in its started output_dir with ``train_fields`` changed."""
    replace(job, train=replace(job.train, **train_fields)).run()


def _started_vae_run(tmp_path: Path):
    """A train-vae job (from scratch, on a real dataset) whose run was interrupted after step 5: a
    rerun gets as far as it would in real life."""
    _dataset(tmp_path)
    return _started(_vae_job(tmp_path, init="scratch"))


def _resume(tmp_path: Path, tamper) -> None:
    """Writes a real checkpoint of a tiny model with an EMA, lets ``tamper(folder)`` change it, and
    loads it as every trainer's resume does."""
    import torch
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    from momaplib.training import load_checkpoint, save_checkpoint

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 2)
    model, _ = accelerator.prepare(model, torch.optim.AdamW(model.parameters()))
    ema = EMAModel(model.parameters(), decay=0.9)
    folder = save_checkpoint(accelerator, tmp_path / "run", 5, states={"ema": ema})
    tamper(folder)
    load_checkpoint(accelerator, folder, {"ema": ema})


def _edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _image_vae_job(**fields):
    from momaplib.vae.train import TrainImageVAEJob

    return TrainImageVAEJob(**fields)


def _output_dir_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("not a folder")
    _vae_job(tmp_path).run()


def _empty_folder_as_dataset(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    _vae_job(tmp_path).run()


def _vae_without_train_clips(tmp_path: Path) -> None:
    _dataset(tmp_path, "test")
    _vae_job(tmp_path).run()


def _diffusion_without_train_clips(tmp_path: Path) -> None:
    _dataset(tmp_path, "val")
    _diffusion_job(tmp_path).run()


def _vae_from_an_empty_folder(tmp_path: Path) -> None:
    _dataset(tmp_path)
    (tmp_path / "empty").mkdir()
    _vae_job(tmp_path, init="pretrained", pretrained=str(tmp_path / "empty")).run()


def _diffusion_from_a_dataset(tmp_path: Path) -> None:
    _dataset(tmp_path)
    _diffusion_job(tmp_path, init="pretrained", pretrained=str(tmp_path / "data")).run()


def _diffusion_from_a_unet_without_weights(tmp_path: Path) -> None:
    _dataset(tmp_path)
    (tmp_path / "pipe" / "unet").mkdir(parents=True)
    (tmp_path / "pipe" / "unet" / "config.json").write_text("{}")
    _diffusion_job(tmp_path, init="pretrained", pretrained=str(tmp_path / "pipe")).run()


def _settings_not_json(tmp_path: Path) -> None:
    job = _started_vae_run(tmp_path)
    (job.train.output_dir / "train_config.json").write_text("{")
    job.run()


CASES: list[Fault] = [
    # --------------------------------------------------------------------- TrainConfig ranges
    Fault(
        "TrainConfig",
        "batch_size = 0",
        lambda tmp: _config(batch_size=0),
        ValueError,
        "TrainConfig.batch_size (--batch-size): expected an integer >= 1, got 0",
    ),  # already handled (the message now names the flag)
    Fault(
        "TrainConfig",
        "batch_size = 2.5",
        lambda tmp: _config(batch_size=2.5),
        ValueError,
        "TrainConfig.batch_size (--batch-size): expected an integer >= 1, got 2.5",
    ),
    Fault(
        "TrainConfig",
        "max_steps = -5",
        lambda tmp: _config(max_steps=-5),
        ValueError,
        "TrainConfig.max_steps (--max-steps): expected an integer >= 1",
    ),  # already handled
    Fault(
        "TrainConfig",
        "gradient_accumulation_steps = 0",
        lambda tmp: _config(gradient_accumulation_steps=0),
        ValueError,
        "TrainConfig.gradient_accumulation_steps (--gradient-accumulation-steps): expected an integer >= 1",
    ),  # already handled
    Fault(
        "TrainConfig",
        "checkpoint_every = 0",
        lambda tmp: _config(checkpoint_every=0),
        ValueError,
        "TrainConfig.checkpoint_every (--checkpoint-every): expected an integer >= 1",
    ),  # already handled
    Fault(
        "TrainConfig",
        "learning_rate = -1e-3",
        lambda tmp: _config(learning_rate=-1e-3),
        ValueError,
        "TrainConfig.learning_rate (--learning-rate): expected a finite number > 0, got -0.001",
    ),
    Fault(
        "TrainConfig",
        "learning_rate = nan",
        lambda tmp: _config(learning_rate=float("nan")),
        ValueError,
        "TrainConfig.learning_rate (--learning-rate): expected a finite number > 0, got nan",
    ),
    Fault(
        "TrainConfig",
        "weight_decay = -0.01",
        lambda tmp: _config(weight_decay=-0.01),
        ValueError,
        "TrainConfig.weight_decay (--weight-decay): expected a finite number >= 0",
    ),
    Fault(  # silently turned gradient clipping off
        "TrainConfig",
        "max_grad_norm = -1",
        lambda tmp: _config(max_grad_norm=-1.0),
        ValueError,
        "TrainConfig.max_grad_norm (--max-grad-norm): expected a finite number >= 0",
    ),
    Fault(  # silently stopped every run after its first step
        "TrainConfig",
        "time_limit_minutes = -1",
        lambda tmp: _config(time_limit_minutes=-1.0),
        ValueError,
        "TrainConfig.time_limit_minutes (--time-limit-minutes): expected a finite number >= 0",
    ),
    Fault(  # silently trained with the cosine schedule
        "TrainConfig",
        "lr_schedule = 'step'",
        lambda tmp: _config(lr_schedule="step"),
        ValueError,
        "TrainConfig.lr_schedule (--lr-schedule): expected one of ['constant', 'cosine', 'linear']",
    ),
    Fault(
        "TrainConfig",
        "mixed_precision = 'fp8'",
        lambda tmp: _config(mixed_precision="fp8"),
        ValueError,
        "TrainConfig.mixed_precision (--mixed-precision): expected one of ['no', 'fp16', 'bf16']",
    ),
    Fault(  # numpy's seeding failed with a traceback when the accelerator was built
        "TrainConfig",
        "seed = -1",
        lambda tmp: _config(seed=-1),
        ValueError,
        "TrainConfig.seed (--seed): expected an integer >= 0 and <= 4294967295, got -1",
    ),
    Fault(
        "TrainConfig",
        "in_memory_device = 'gpu'",
        lambda tmp: _config(in_memory_device="gpu"),
        ValueError,
        "TrainConfig.in_memory_device (--in-memory-device): expected 'cpu', 'cuda' or 'cuda:<index>'",
    ),
    Fault(  # Path("") is the working directory: the run was written there
        "TrainConfig",
        "output_dir = ''",
        lambda tmp: _config(output_dir=""),
        ValueError,
        "TrainConfig.output_dir (--output-dir): expected a folder, got ''",
    ),
    # --------------------------------------------------------------------- job fields
    Fault(
        "TrainDiffusionJob",
        "ema_decay = 1.5",
        lambda tmp: _diffusion_job(tmp, ema_decay=1.5),
        ValueError,
        "TrainDiffusionJob.ema_decay (--ema-decay): expected a finite number >= 0 and < 1, got 1.5",
    ),
    Fault(
        "TrainDiffusionJob",
        "text_dropout = 2",
        lambda tmp: _diffusion_job(tmp, text_dropout=2.0),
        ValueError,
        "TrainDiffusionJob.text_dropout (--text-dropout): expected a finite number >= 0 and <= 1",
    ),
    Fault(  # trained the diffusion UNet without a word
        "TrainDiffusionJob",
        "model = 'unet' (not a choice)",
        lambda tmp: _diffusion_job(tmp, model="unet"),
        ValueError,
        "TrainDiffusionJob.model (--model): expected one of ['diffusion', 'momap-vae'], got 'unet'",
    ),
    Fault(
        "TrainDiffusionJob",
        "block_out_channels = ()",
        lambda tmp: _diffusion_job(tmp, block_out_channels=()),
        ValueError,
        "TrainDiffusionJob.block_out_channels (--block-out-channels): expected at least one value",
    ),
    Fault(
        "TrainVAEJob",
        "kl_weight = -1",
        lambda tmp: _vae_job(tmp, kl_weight=-1.0),
        ValueError,
        "TrainVAEJob.kl_weight (--kl-weight): expected a finite number >= 0, got -1.0",
    ),
    Fault(  # silently validated on no clip and logged zeros
        "momap train-image-vae",
        "num_val_clips = -1",
        lambda tmp: _image_vae_job(num_val_clips=-1),
        ValueError,
        "TrainImageVAEJob.num_val_clips (--num-val-clips): expected an integer >= 0, got -1",
    ),
    # --------------------------------------------------------------------- datasets and --init sources
    Fault(
        "momap train-vae",
        "output_dir is a file",
        _output_dir_is_a_file,
        ValueError,
        "run is a file; expected a folder",
    ),
    Fault(
        "momap train-vae",
        "dataset folder does not exist",
        lambda tmp: _vae_job(tmp, datasets=(tmp / "no-such-data",)).run(),
        FileNotFoundError,
        "no-such-data does not exist; write one with `momap sim --out",
    ),  # already handled (as "no dataset.json"); now it says that the folder does not exist
    Fault(
        "momap train-vae",
        "an empty folder as the dataset",
        _empty_folder_as_dataset,
        ValueError,
        "no dataset.json; expected a dataset folder written by `momap sim`",
    ),  # already handled
    Fault(
        "momap train-vae",
        "a dataset without train clips",
        _vae_without_train_clips,
        ValueError,
        "datasets: no 'train' clips in",
    ),  # already handled (now before the model is built)
    Fault(  # loaded the frozen encoders first, then failed inside the encoder's loader
        "momap train-diffusion",
        "a dataset without train clips",
        _diffusion_without_train_clips,
        ValueError,
        "datasets: no 'train' clips in",
    ),
    Fault(
        "momap train-diffusion",
        "dataset folder does not exist",
        lambda tmp: _diffusion_job(tmp, datasets=(tmp / "no-such-data",)).run(),
        FileNotFoundError,
        "no-such-data does not exist; write one with `momap sim --out",
    ),  # already handled, but only after the frozen encoders had loaded
    Fault(  # diffusers raised OSError (a traceback on the command line)
        "momap train-vae",
        "--init pretrained: a folder that is not a checkpoint",
        _vae_from_an_empty_folder,
        ValueError,
        "empty is not a MoMapVAE folder; it has no config.json and no weight files",
    ),
    Fault(  # failed only after every clip was encoded and cached
        "momap train-diffusion",
        "--init pretrained: a dataset folder, not a pipeline",
        _diffusion_from_a_dataset,
        ValueError,
        "has no 'unet' folder; --model diffusion needs a MoMapPipeline folder",
    ),
    Fault(  # diffusers raised OSError after every clip was encoded and cached
        "momap train-diffusion",
        "--init pretrained: a pipeline folder whose unet has no weights",
        _diffusion_from_a_unet_without_weights,
        ValueError,
        "is not the 'unet' of a MoMapPipeline; it has no weight files",
    ),
    # --------------------------------------------------------------------- reruns with other settings
    Fault(  # continued silently and overwrote train_config.json
        "momap train-vae",
        "rerun of a started run with another learning rate",
        lambda tmp: _rerun(_started_vae_run(tmp), learning_rate=1e-3),
        ResumeError,
        "train.learning_rate: 0.0002 -> 0.001",
    ),
    Fault(  # continued silently on latents encoded by the other VAE
        "momap train-diffusion",
        "rerun of a started run with another --vae",
        lambda tmp: replace(_started(_diffusion_job(tmp)), vae=str(tmp / "other-vae")).run(),
        ResumeError,
        'vae: "momap-vae" -> "',
    ),
    Fault(  # refused, but only after train_config.json was overwritten with the new settings
        "momap train-vae",
        "resume=False over a run with checkpoints",
        lambda tmp: _rerun(_started_vae_run(tmp), resume=False),
        ResumeError,
        "holds checkpoints of an earlier run (step_0000005)",
    ),  # already handled
    Fault(
        "momap train-vae",
        "train_config.json of the run is not JSON",
        _settings_not_json,
        ResumeError,
        "train_config.json: not readable as the run's settings",
    ),
    # --------------------------------------------------------------------- incomplete or edited checkpoints
    Fault(  # a json.JSONDecodeError traceback after the weights had been loaded
        "momap train-* (resume)",
        "state.json of the checkpoint is not JSON",
        lambda tmp: _resume(tmp, lambda folder: (folder / "state.json").write_text('{"step": 5')),
        ResumeError,
        "state.json is not valid JSON",
    ),
    Fault(  # resumed at the edited step: the LR schedule and data order of another step
        "momap train-* (resume)",
        "state.json names another step than its folder",
        lambda tmp: _resume(tmp, lambda folder: _edit_json(folder / "state.json", step=7)),
        ResumeError,
        "state.json gives step 7; expected the integer of the folder's name",
    ),
    Fault(
        "momap train-* (resume)",
        "checkpoint without its model weights",
        lambda tmp: _resume(tmp, lambda folder: (folder / "model.safetensors").unlink()),
        ResumeError,
        "could not be loaded",
    ),  # already handled
    Fault(
        "momap train-* (resume)",
        "checkpoint without its EMA",
        lambda tmp: _resume(tmp, lambda folder: (folder / "ema.safetensors").unlink()),
        ResumeError,
        "no saved state 'ema' (ema.safetensors, ema.json)",
    ),  # already handled
    Fault(  # a KeyError traceback
        "momap train-* (resume)",
        "ema.json names a tensor the safetensors file lacks",
        lambda tmp: _resume(
            tmp, lambda folder: _edit_json(folder / "ema.json", shadow_params={"tensors": ["nothing.0"]})
        ),
        ResumeError,
        "saved state 'ema' is malformed (KeyError",
    ),
    Fault(  # diffusers' ValueError named neither the file nor the checkpoint
        "momap train-* (resume)",
        "ema.json with decay 5",
        lambda tmp: _resume(tmp, lambda folder: _edit_json(folder / "ema.json", decay={"value": 5.0})),
        ResumeError,
        "saved state 'ema' was refused (Decay must be between 0 and 1)",
    ),
    Fault(
        "momap train-* (resume)",
        "a planted custom_checkpoint_0.pkl",
        lambda tmp: _resume(tmp, lambda folder: (folder / "custom_checkpoint_0.pkl").write_bytes(b"x")),
        ResumeError,
        "custom_checkpoint_0.pkl is a pickle this kit never writes",
    ),  # already handled
]
