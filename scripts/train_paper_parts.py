"""The run-folder parts of ``scripts/train_paper.py``: final codecs put in place (``--frozen``) and
the ``latents`` stage's one simulation pass encoded by every codec."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from momaplib.checkpoints import WEIGHT_MANIFEST, write_weight_manifest

FAMILIES = ("tabletop", "egocentric")


#: --frozen: the folder's parts and where a run keeps each (the stage's output, as if it had trained)
FROZEN_PARTS = {
    "image-vae": "image-vae/model",
    "momap-vae": "momap-vae/model",
    "momap-vae-scratch": "momap-vae-scratch/model",
    "image-diffusion": "image-prior/pipeline",
}
#: The parts a --frozen folder must have: without a prior, its stage trains one over the frozen image VAE
FROZEN_REQUIRED = ("image-vae", "momap-vae", "momap-vae-scratch")


def use_frozen(folder: Path, runs: Path) -> None:
    """Copies the final codecs and prior of ``folder`` to the places in ``runs`` that their stages
    write, so those stages count as done and every later stage reads them. The prior's pipeline
    gets the image VAE as its ``vae/`` when it has none (the kit stores it once)."""
    missing = [name for name in FROZEN_REQUIRED if not (folder / name).is_dir()]
    if missing:
        raise SystemExit(f"--frozen: {folder} has no {', '.join(m + '/' for m in missing)}")
    for name, part in FROZEN_PARTS.items():
        target = runs / part
        if not (folder / name).is_dir():
            continue
        if target.is_dir():  # put there by an earlier --frozen run, or trained: then refuse
            if not same_weights(folder / name, target):
                raise SystemExit(f"--frozen: {target} is not {folder / name}: use a new --runs folder")
            continue
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(folder / name, partial)
        if name == "image-diffusion" and not (partial / "vae").is_dir():
            shutil.copytree(folder / "image-vae", partial / "vae")
            (partial / "vae" / WEIGHT_MANIFEST).unlink(missing_ok=True)  # covered by the pipeline's
            write_weight_manifest(partial)
        partial.rename(target)


def stream_latents(
    args, runs: Path, codecs: dict[str, str], image_vae: str, datasets, device: str, stamp
) -> None:
    """Writes ``<runs>/latents/<codec>.safetensors``: the same streamed clips encoded by each codec
    (the raw codec's statistics from the train clips of the folders ``datasets``)."""
    from diffusers import AutoencoderKL

    from momaplib.checkpoints import resolve_checkpoint
    from momaplib.diffusion.latents import save_latent_set, simulate_latents
    from momaplib.diffusion.prepare import raw_codec
    from momaplib.diffusion.text import load_text_encoder
    from momaplib.sim import SimConfig
    from momaplib.vae import load_momap_codec

    folder = runs / "latents"
    configs = []
    for family in FAMILIES:
        configs += [SimConfig(family=family), SimConfig(family=family).wide()]
    configs = [c.smoke() if args.smoke else replace(c, device=args.sim_device) for c in configs]
    if all((folder / f"{name}.safetensors").is_file() for name in codecs):
        return
    image = AutoencoderKL.from_pretrained(resolve_checkpoint(image_vae)).to(device).eval()
    text = load_text_encoder(args.text_encoder, device)
    loaded = {}
    for name, spec in codecs.items():
        if name == "raw":
            if not (folder / "raw_vae").is_dir():  # kept from an earlier run: the same statistics
                raw_codec(datasets).save_pretrained(folder / "raw_vae")  # of the train clips of every folder
            loaded[name] = load_momap_codec(folder / "raw_vae").to(device)
        else:
            loaded[name] = load_momap_codec(spec).to(device).eval()
    # one simulation pass, encoded by every codec: the rows of Table 2 train on the same clips
    clips = 4 if args.smoke else args.stream_clips
    stamp(f"latents: {list(codecs)} ({clips} scenes per config x {args.motion_variants} futures)")
    sets = simulate_latents(
        configs, clips, loaded, image, text, device=device, workers=0 if args.smoke else args.workers,
        time_limit_minutes=0.0 if args.smoke else args.stream_minutes * args.minutes,
        progress=not args.smoke, motion_variants=args.motion_variants, first_index=args.stream_first_index,
        stall_timeout=120.0,
    )  # fmt: skip
    for name, latents in sets.items():
        stamp(f"latents: {name}: {len(latents)} clips")
        save_latent_set(latents, folder / f"{name}.safetensors")


def same_weights(source: Path, copy: Path) -> bool:
    """Whether every weight file in ``source``'s manifest has the same sha256 in ``copy``'s."""
    manifests = [folder / WEIGHT_MANIFEST for folder in (source, copy)]
    if not all(m.is_file() for m in manifests):
        return False
    want, have = (json.loads(m.read_text()) for m in manifests)
    return all(have.get(name) == digest for name, digest in want.items())
