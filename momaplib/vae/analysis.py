"""What inflation changes, what fine-tuning buys and what a MoMap VAE loses (paper §3.3.2).

The tables behind notebook 02, each usable on any image VAE / MoMap VAE pair or trained model:

- ``INFLATED_LAYERS`` / ``inflation_table``: the tensors ``inflate_from_image_vae`` copies and the
  ones it re-shapes.
- ``inflation_checks``: function preservation on a MoMap in which nothing moves, and the
  time-average an inflated VAE reconstructs from one that moves.
- ``compare_inits``: the ablation of paper §3.3.2 at any size: an image VAE, then MoMap VAEs
  fine-tuned from its inflation and from random weights with the same data, steps and seed;
  ``load_runs`` reads such runs (or the bundled logs) into one frame, ``init_summary`` condenses it.
- ``held_out_clips``: fresh test-split clips of MoMap-Sim, which no bundled model trained on.
- ``round_trip`` / ``motion_errors`` / ``reconstruction_table``: reconstructions in metres and the
  errors of still and of moving points, which the headline median EPE does not tell apart.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from momaplib.data import clip_id, split_indices
from momaplib.momap import TAU_MOVE, MoMap
from momaplib.sim import FAMILIES, Clip, SimConfig, clip_seed, generate_clip
from momaplib.training import TrainConfig, load_training_data, read_metrics
from momaplib.vae.model import BLOCK_OUT_CHANNELS, LATENT_CHANNELS, LAYERS_PER_BLOCK, MoMapVAE
from momaplib.vae.train import MODEL_DIR, TrainImageVAEJob, TrainVAEJob

#: The layers whose channel counts inflation changes (paper §3.3.2: 3 -> 3T in and out, l -> L
#: latent channels), in the order data flows through them; every other tensor is copied.
INFLATED_LAYERS = (
    "encoder.conv_in",
    "encoder.conv_out",
    "quant_conv",
    "post_quant_conv",
    "decoder.conv_in",
    "decoder.conv_out",
)

#: ``compare_inits``' inits: ``"inflate"`` (the paper) and ``"scratch"`` (random weights, the ablation).
INITS = ("inflate", "scratch")


# ----------------------------------------------------------------------------- inflation
def inflation_table(image_vae: AutoencoderKL, momap_vae: AutoencoderKL) -> pd.DataFrame:
    """Returns one row per tensor of ``momap_vae`` (index: its state-dict name) against ``image_vae``.

    Columns: ``layer`` (the name without ``.weight`` / ``.bias``), ``image VAE`` and ``MoMap VAE``
    (shapes), ``status``: ``"copied"`` (same shape, bit-identical), ``"re-shaped"`` (another
    shape) or ``"re-initialised"`` (same shape, other values).
    """
    image, momap = image_vae.state_dict(), momap_vae.state_dict()
    missing = [name for name in momap if name not in image]
    if missing:
        raise ValueError(
            f"image_vae: has no tensors {missing[:3]}...; not the VAE momap_vae was inflated from"
        )
    rows = {}
    for name, weight in momap.items():
        source = image[name]
        if weight.shape != source.shape:
            status = "re-shaped"
        else:
            status = "copied" if torch.equal(weight, source.to(weight.dtype)) else "re-initialised"
        rows[name] = {
            "layer": name.rsplit(".", 1)[0],
            "image VAE": tuple(source.shape),
            "MoMap VAE": tuple(weight.shape),
            "status": status,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


@torch.no_grad()
def inflation_checks(image_vae: AutoencoderKL, momap_vae: MoMapVAE, momap: torch.Tensor) -> pd.DataFrame:
    """Returns how exactly an inflated ``momap_vae`` acts as ``image_vae`` (posterior means, eval mode).

    ``momap`` (1, 3T, H, W) in model range (``momaplib.data.model_inputs(...)["momap"][None]``).
    Its frame 0 repeated T times is a MoMap in which nothing moves; ``momap`` itself moves. Rows
    (index ``check``): ``value`` (max abs error, relative to the image VAE's largest output where the
    name says so), ``tolerance`` and ``ok`` (``value <= tolerance``; the extra latent channels must
    be exactly the prior, the rest equal up to float rounding), ``expected`` in words.
    """
    T, L, l = momap_vae.num_frames, momap_vae.config.latent_channels, image_vae.config.latent_channels
    if momap.ndim != 4 or momap.shape[:2] != (1, 3 * T):
        raise ValueError(f"momap: expected (1, 3T, H, W) = (1, {3 * T}, H, W), got {tuple(momap.shape)}")
    was_training = image_vae.training, momap_vae.training
    image_vae.eval()
    momap_vae.eval()
    momap = momap.to(momap_vae.device, momap_vae.dtype)
    H, W = momap.shape[-2:]

    def image_round_trip(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = image_vae.encode(x.to(image_vae.device, image_vae.dtype)).latent_dist
        return posterior.mean, image_vae.decode(posterior.mean).sample.to(momap.device)

    xyz0 = momap[:, :3]  # (1, 3, H, W) frame 0
    image_mean, image_out = image_round_trip(xyz0)
    still = momap_vae.encode(xyz0.repeat(1, T, 1, 1)).latent_dist
    still_out = momap_vae.decode(still.mean).sample.view(1, T, 3, H, W)
    moving_out = momap_vae.decode(momap_vae.encode(momap).latent_dist.mean).sample.view(1, T, 3, H, W)
    _, average_out = image_round_trip(momap.view(1, T, 3, H, W).mean(1))
    image_vae.train(was_training[0])
    momap_vae.train(was_training[1])
    extra = torch.cat([still.mean[:, l:], still.logvar[:, l:]], 1)
    rows = [
        (f"still: latent channels 0..{l - 1} - image VAE latent",
         (still.mean[:, :l] - image_mean.to(still.mean.device)).abs().max(), 1e-4,
         "0 up to float rounding: the image VAE's posterior"),
        (f"still: latent channels {l}..{L - 1}, |mean| and |log-variance|",
         extra.abs().max() if L > l else torch.zeros(()), 0.0, "exactly 0: the prior N(0, 1)"),
        ("still: decoded frames - image VAE output (relative)",
         (still_out - image_out[:, None]).abs().max() / image_out.abs().max(), 1e-4,
         "0 up to float rounding: every frame is the image VAE's output"),
        ("moving: decoded frame t - decoded frame 0 (relative)",
         (moving_out - moving_out[:, :1]).abs().max() / moving_out.abs().max(), 1e-6,
         "0: every frame is the same image, no motion"),
        ("moving: decoded frame 0 - image VAE of the time-average (relative)",
         (moving_out[:, 0] - average_out).abs().max() / average_out.abs().max(), 1e-4,
         "0 up to float rounding: the encoder sees the time-average"),
    ]  # fmt: skip
    frame = pd.DataFrame(
        [(name, float(value), tolerance, expected) for name, value, tolerance, expected in rows],
        columns=["check", "value", "tolerance", "expected"],
    ).set_index("check")
    frame.insert(2, "ok", frame["value"] <= frame["tolerance"])
    return frame


# ----------------------------------------------------------------------------- inflated vs scratch
def load_runs(runs: Mapping[str, str | os.PathLike]) -> pd.DataFrame:
    """Returns the ``metrics.jsonl`` records of several runs as one frame with a column ``init``.

    ``runs`` maps a label to a run folder or a ``.jsonl`` file (e.g. ``checkpoints/logs/``). A step
    logged twice keeps its last record (a resumed run, or the bundled logs' repeated last step).
    Columns: ``init``, ``step``, ``loss``, the loss terms, ``lr`` and the validation metrics
    (NaN on steps without validation).
    """
    frames = []
    for label, path in runs.items():
        records = pd.DataFrame(read_metrics(path))
        if records.empty:
            raise ValueError(f"runs[{label!r}]: no records in {path}")
        records = records.drop_duplicates("step", keep="last").sort_values("step")
        frames.append(records.assign(init=label))
    frame = pd.concat(frames, ignore_index=True)
    return frame[["init", *[c for c in frame.columns if c != "init"]]]


def compare_inits(
    datasets: Sequence[str | os.PathLike],
    run_dir: str | os.PathLike,
    steps: int,
    image_vae_steps: int | None = None,
    inits: Sequence[str] = INITS,
    batch_size: int = 16,
    learning_rate: float = 4e-4,
    latent_channels: int = LATENT_CHANNELS,
    block_out_channels: tuple[int, ...] = BLOCK_OUT_CHANNELS,
    layers_per_block: int = LAYERS_PER_BLOCK,
    norm_num_groups: int = 32,
    seed: int = 0,
    vae_options: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Returns the training records (``load_runs``) of MoMap VAEs fine-tuned from each of ``inits``.

    Trains the image VAE that ``"inflate"`` starts from (``TrainImageVAEJob``, ``image_vae_steps``,
    default ``steps``; skipped without ``"inflate"``), then one ``TrainVAEJob`` per init with the
    same training clips of ``datasets``, steps, batch, learning rate (warm-up over the first 5 %,
    then cosine), widths and ``seed``: the comparison of paper §3.3.2. Validation (the median
    EPE ``val/epe_median`` over the val clips, relative to the scene scale) runs every quarter of
    the steps (rounded up) and at the end. Runs are written to ``run_dir/image-vae`` and
    ``run_dir/momap-vae-<init>`` and resume from their checkpoints when called again.
    ``vae_options``: more ``TrainVAEJob`` fields for every MoMap VAE run (e.g. the loss weights
    ``displacement_weight=1.0``). ``progress``: a bar over the runs and one per run.
    """
    unknown = [init for init in inits if init not in INITS]
    if unknown or not inits:
        raise ValueError(f"inits: expected some of {INITS}, got {tuple(inits)}")
    run_dir, datasets = Path(run_dir), tuple(Path(d) for d in datasets)
    architecture = {
        "block_out_channels": tuple(block_out_channels),
        "layers_per_block": layers_per_block,
        "norm_num_groups": norm_num_groups,
    }

    def config(name: str, max_steps: int) -> TrainConfig:
        return TrainConfig(
            run_dir / name, max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate,
            lr_warmup_steps=max_steps // 20, validate_every=-(-max_steps // 4),
            checkpoint_every=max_steps, num_workers=0, in_memory=True, seed=seed, progress=progress,
        )  # fmt: skip

    names = (["image-vae"] if "inflate" in inits else []) + [f"momap-vae-{init}" for init in inits]
    bar = tqdm(total=len(names), desc="runs", unit="run", disable=not progress)
    image_vae = None
    if "inflate" in inits:
        bar.set_postfix_str("image-vae")
        image_config = config("image-vae", image_vae_steps or steps)
        image_vae = TrainImageVAEJob(datasets, image_config, **architecture).run()
        bar.update()
    momaps = load_training_data(datasets, config("momap-vae", steps), keys=("momap", "valid", "visible"))
    for init in inits:
        bar.set_postfix_str(f"momap-vae-{init}")
        job = TrainVAEJob(
            datasets, config(f"momap-vae-{init}", steps), init=init,
            image_vae=str(image_vae or run_dir / "image-vae" / MODEL_DIR), latent_channels=latent_channels,
            **architecture, **(vae_options or {}),
        )  # fmt: skip
        job.run(dataset=momaps)
        bar.update()
    bar.close()
    return load_runs({init: run_dir / f"momap-vae-{init}" for init in inits})


def init_summary(runs: pd.DataFrame, first_records: int = 10) -> pd.DataFrame:
    """Returns one row per ``init`` of ``load_runs``' frame (in order of appearance).

    Columns: ``start loss`` (the mean training loss of the first ``first_records`` logged steps),
    ``end loss`` (the last logged one) and ``final val EPE`` (the last validation median EPE,
    relative to the scene scale; NaN for a run that never validated).
    """
    rows = {}
    for init, frame in runs.groupby("init", sort=False):
        frame = frame.sort_values("step")
        epe = frame["val/epe_median"].dropna() if "val/epe_median" in frame else pd.Series(dtype=float)
        rows[init] = {
            "start loss": frame["loss"].iloc[:first_records].mean(),
            "end loss": frame["loss"].iloc[-1],
            "final val EPE": epe.iloc[-1] if len(epe) else np.nan,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def held_out_clips(
    num_clips: int,
    families: Sequence[str] = FAMILIES,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Clip]:
    """Returns the first ``num_clips`` test-split clips of each family at the default ``SimConfig``
    (128x128, T = 32), keyed by clip id: the clips ``momap sim --seed seed`` puts in "test", so no
    model trained on such a dataset saw them. ``device`` renders them (``SimConfig.device``)."""
    ids = [(family, index) for family in families for index in split_indices(family, num_clips, "test")]
    return {
        clip_id(family, index): generate_clip(clip_seed(seed, index), SimConfig(family=family, device=device))
        for family, index in tqdm(ids, desc="simulate test clips", unit="clip", disable=not progress)
    }


# ----------------------------------------------------------------------------- reconstructions
@torch.no_grad()
def round_trip(vae: MoMapVAE, momap: MoMap) -> MoMap:
    """Returns ``momap`` encoded and decoded by ``vae`` (posterior mean) as a MoMap record.

    Its ``xyz`` (T, H, W, 3) float32 are the decoded trajectories in metres (``encode_momap`` /
    ``decode_momap``) at valid pixels and ``momap``'s elsewhere; every other field is ``momap``'s.
    """
    xyz = torch.from_numpy(momap.xyz)[None].to(vae.device)
    valid = torch.from_numpy(momap.valid)[None].to(vae.device)
    encoded = vae.encode_momap(xyz, valid)
    decoded = vae.decode_momap(encoded.latents, encoded.center, encoded.scale)[0].cpu().numpy()
    xyz = np.where(momap.valid[None, ..., None], decoded, momap.xyz).astype(np.float32)
    return dataclasses.replace(momap, xyz=xyz)


def motion_errors(gt: MoMap, decoded: MoMap, tau_move: float = TAU_MOVE) -> dict[str, float]:
    """Returns the reconstruction errors of one clip, all relative to the GT scene scale ``s``.

    The end-point error of a point at frame t is ``|x_hat_t - x_t| / s``; ``moving pixels`` is the
    fraction of valid pixels in the GT moving mask (``tau_move``). ``EPE all`` / ``EPE still`` /
    ``EPE moving``: medians over all valid, still and moving points and frames (``EPE all`` is the
    per-clip number of ``evaluate_reconstruction``). ``GT travel`` / ``decoded travel``: the median
    over moving pixels of how far each gets from its start, ``max_t |x_t - x_0| / s``. NaN where
    a set is empty.
    """
    if gt.xyz.shape != decoded.xyz.shape:
        raise ValueError(f"decoded: expected xyz of shape {gt.xyz.shape}, got {decoded.xyz.shape}")
    s = gt.scene_scale
    error = np.linalg.norm(decoded.xyz - gt.xyz, axis=-1) / s  # (T, H, W)
    moving = gt.moving_mask(tau_move)
    still = gt.valid & ~moving

    def median(values: np.ndarray) -> float:
        return float(np.median(values)) if values.size else float("nan")

    def travel(xyz: np.ndarray) -> float:
        return median(np.linalg.norm(xyz - xyz[:1], axis=-1).max(0)[moving] / s)

    return {
        "moving pixels": float(moving.sum() / max(gt.valid.sum(), 1)),
        "EPE all": median(error[:, gt.valid]),
        "EPE still": median(error[:, still]),
        "EPE moving": median(error[:, moving]),
        "GT travel": travel(gt.xyz),
        "decoded travel": travel(decoded.xyz),
    }


def reconstruction_table(
    vae: MoMapVAE, momaps: Mapping[str, MoMap], tau_move: float = TAU_MOVE, progress: bool = True
) -> pd.DataFrame:
    """Returns one row of ``motion_errors`` per MoMap of ``momaps`` (index: its key) after ``round_trip``."""
    rows = {
        name: motion_errors(momap, round_trip(vae, momap), tau_move)
        for name, momap in tqdm(momaps.items(), desc="reconstruct", unit="clip", disable=not progress)
    }
    return pd.DataFrame.from_dict(rows, orient="index")


__all__ = [
    "INFLATED_LAYERS",
    "INITS",
    "compare_inits",
    "held_out_clips",
    "inflation_checks",
    "inflation_table",
    "init_summary",
    "load_runs",
    "motion_errors",
    "reconstruction_table",
    "round_trip",
]
