"""What ``momap train-diffusion`` does before its first step: check the job's inputs, load the frozen
encoders, read or write the latent cache, train or read the prompt grounder.

``check_inputs`` runs first and only reads: the dataset folders, ``--pretrained`` and
``--image-unet`` are checked before minutes go into loading encoders and encoding clips.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from diffusers import AutoencoderKL

from momaplib.checkpoints import resolve_checkpoint
from momaplib.data import MoMapDataset, collate
from momaplib.diffusion.grounding import PromptGrounder, train_grounder
from momaplib.diffusion.latents import LatentSet, encode_datasets, load_latent_set, save_latent_set
from momaplib.diffusion.text import load_text_encoder
from momaplib.training import check_model_folder, dataset_shape

if TYPE_CHECKING:
    from momaplib.diffusion.train import TrainDiffusionJob

#: ``--vae`` value of the "no VAE" ablation (paper §4.4): the UNet works on the MoMap itself.
RAW_VAE = "raw"
#: Train clips the raw codec's per-channel statistics are estimated from.
RAW_FIT_CLIPS = 256


def latent_cache_path(job: TrainDiffusionJob, split: str = "train") -> Path:
    """Returns ``output_dir/latents_<split>.safetensors``, where the encoded split is cached."""
    return job.train.output_dir / f"latents_{split}.safetensors"


def link_latent_cache(cache: str | os.PathLike, output_dir: str | os.PathLike) -> None:
    """Makes ``cache`` (a ``save_latent_set`` file, with its ``.json`` beside it) the train-split
    latent cache of a job writing to ``output_dir`` (``latent_cache_path``): hard links, so several
    runs share one copy; a cache already there is kept."""
    cache, output_dir = Path(cache), Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):
        target = output_dir / f"latents_train{suffix}"
        if not target.exists():
            os.link(cache.with_suffix(suffix), target)


def pretrained_folder(job: TrainDiffusionJob) -> Path:
    """Returns the generator folder (``unet`` or ``cvae``) of ``--pretrained``, checked to be one."""
    if job.pretrained is None:
        raise ValueError("pretrained: --init pretrained needs --pretrained (a pipeline folder or name)")
    folder = resolve_checkpoint(job.pretrained)
    part, kind = ("cvae", "MoMapVAEPipeline") if job.model == "momap-vae" else ("unet", "MoMapPipeline")
    if not (folder / part).is_dir():
        raise ValueError(
            f"pretrained: {folder} has no '{part}' folder; --model {job.model} needs a {kind} folder"
        )
    return check_model_folder(folder / part, "pretrained", f"the '{part}' of a {kind}")


def image_unet_folder(job: TrainDiffusionJob) -> Path:
    """Returns the folder of ``--image-unet`` (its ``unet`` subfolder if it has one), checked."""
    if job.image_unet is None:
        raise ValueError("image_unet: --init inflate needs --image-unet (folder or hub id)")
    folder = resolve_checkpoint(job.image_unet)
    folder = folder / "unet" if (folder / "unet").is_dir() else folder
    return check_model_folder(folder, "image_unet", "a UNet2DConditionModel folder")


def check_inputs(job: TrainDiffusionJob, dataset: torch.utils.data.Dataset | None = None) -> None:
    """Raises a clear error, reading only, for dataset folders that are missing, are not datasets
    or have no train clips to encode (when neither ``dataset`` nor a latent cache replaces them),
    and for an ``--init`` source that is not a checkpoint of the right kind."""
    encodes = dataset is None and not latent_cache_path(job).is_file()
    dataset_shape(job.datasets, require_split="train" if encodes else None)
    if job.init == "pretrained":
        pretrained_folder(job)
    elif job.init == "inflate" and job.model == "diffusion":
        image_unet_folder(job)


def raw_codec(datasets, dataset=None, max_clips: int = RAW_FIT_CLIPS):
    """Returns the ``RawMoMapCodec`` of ``--vae raw`` (the "no VAE" ablation), its per-channel
    statistics fitted on up to ``max_clips`` train clips spread evenly over ``dataset`` (default:
    the train splits of the dataset folders ``datasets``)."""
    from momaplib.vae import RawMoMapCodec

    if dataset is None:
        dataset = torch.utils.data.ConcatDataset([MoMapDataset(root, "train") for root in datasets])
    if len(dataset) == 0:
        raise ValueError(f"datasets: no train clips in {[str(r) for r in datasets]} to fit --vae raw on")
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(max_clips, len(dataset))).round().astype(int))
    momap = collate([dataset[int(i)] for i in picks])["momap"].float()
    return RawMoMapCodec(in_channels=momap.shape[1]).fit(momap.cpu())


def load_frozen(job: TrainDiffusionJob, device: torch.device, dataset=None):
    """Returns the frozen MoMap VAE (``--vae raw``: a ``RawMoMapCodec``), image VAE and text encoder
    of ``job`` on ``device``; ``dataset`` replaces the train split that ``--vae raw`` is fitted on."""
    from momaplib.vae import load_momap_codec

    if job.vae == RAW_VAE:
        # fitted once and kept next to the latent cache, so a resumed run encodes nothing anew
        folder = job.train.output_dir / "raw_vae"
        if not (folder / "config.json").is_file():
            partial = folder.with_name(folder.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            raw_codec(job.datasets, dataset).save_pretrained(partial)
            partial.replace(folder)
        vae = load_momap_codec(folder)
    else:
        vae = load_momap_codec(job.vae)
    vae = vae.to(device).eval().requires_grad_(False)
    image_vae = AutoencoderKL.from_pretrained(resolve_checkpoint(job.image_vae))
    image_vae = image_vae.to(device).eval().requires_grad_(False)
    text_encoder = load_text_encoder(job.text_encoder, str(device))
    return vae, image_vae, text_encoder


def latent_cache(
    job: TrainDiffusionJob, split: str, vae, image_vae, text_encoder, device, dataset=None
) -> LatentSet:
    """Returns the encoded split, cached in ``output_dir/latents_<split>.safetensors``."""
    path = latent_cache_path(job, split)
    if path.is_file():
        return load_latent_set(path)
    latents = encode_datasets(
        job.datasets,
        split,
        vae,
        image_vae,
        text_encoder,
        device=device,
        batch_size=job.encode_batch_size,
        max_clips=job.max_clips,
        seed=job.train.seed,
        num_workers=job.train.num_workers,
        progress=job.train.progress,
        dataset=dataset,
    )
    save_latent_set(latents, path)
    return latents


def job_grounder(job: TrainDiffusionJob, train_set: LatentSet, device, is_main: bool) -> PromptGrounder:
    """Returns the job's trained grounder: read from ``output_dir/grounder`` when a run (or the
    main process) already trained it, else trained on ``train_set`` and saved there with
    ``grounder_metrics.json``."""
    folder = job.train.output_dir / "grounder"
    if (folder / "config.json").is_file():
        return PromptGrounder.from_pretrained(folder).to(device).eval()
    if not train_set.has_grounding:
        raise ValueError(
            f"grounding: the latent cache {latent_cache_path(job)} has no instance features or targets "
            "(written by an older version); delete it to re-encode"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job.train.seed)
        grounder = PromptGrounder(text_dim=train_set.text.shape[-1]).to(device)
    metrics = train_grounder(
        grounder,
        train_set.instance_features,
        train_set.instance_ids,
        train_set.target_slot,
        train_set.text,
        train_set.prompt_index,
        steps=job.grounder_steps,
        seed=job.train.seed,
        progress=job.train.progress,
    )
    if is_main:
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        grounder.save_pretrained(partial)
        (partial / "grounder_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        partial.replace(folder)
    return grounder.eval()
