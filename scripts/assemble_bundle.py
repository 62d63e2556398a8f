"""Assembles ``checkpoints/`` from the combined retrain's outputs (``scripts/train_paper.py`` bundles).

    python scripts/assemble_bundle.py --bundles outputs/final/bundles \\
        --image-vae outputs/final/bundles/image-vae-gan-0.5 --video outputs/final/video/flattened \\
        --out checkpoints

Writes each of these (fp16 shards as the training runs wrote them, a fresh weight manifest, no
training machine's paths in the configs), each folder replaced atomically:

- ``momap-diffusion``: the bundle's pipeline with its ``image_vae`` replaced by ``--image-vae`` (a
  decoder fine-tune of the same image VAE: encoder and ``quant_conv`` must be identical, or the
  conditions the UNet learnt would change) and ``init_source`` naming the bundled prior;
- ``image-diffusion``: the image prior without ``vae/`` (it loads the bundled ``image-vae``,
  ``momap-diffusion``'s);
- ``momap-vae-baseline``, ``momap-diffusion-dsl``: without ``vae/`` and ``image_vae/``
  (``momap-diffusion``'s, as ``MoMapPipeline.from_pretrained`` fills them in);
- ``momap-video``: the completion UNet ``--video`` (a ``CompletionUNet`` folder), in the latent space
  of that image VAE.

Then it prints each folder's size on disk (4 KiB blocks, as a checkout stores them) and fails if
the whole of ``--out`` is over 60 MiB. The model card is edited by hand and by
``benchmarks/eval_tables.py --card``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

from safetensors.torch import load_file

BUDGET_BYTES = 60 * 2**20
BLOCK = 4096
#: Parts of the image VAE that define its latent space (must match between the VAEs swapped).
LATENT_PARTS = ("encoder.", "quant_conv.")


def disk_bytes(folder: Path) -> int:
    """Bytes ``folder`` takes on a file system of 4 KiB blocks (``du -s --block-size=1``)."""
    paths = [folder, *folder.rglob("*")]
    return sum(BLOCK if p.is_dir() else math.ceil(p.stat().st_size / BLOCK) * BLOCK for p in paths)


def _weights(folder: Path) -> dict:
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def check_same_latent_space(first: Path, second: Path) -> None:
    """Raises ``ValueError`` unless the image VAEs in ``first`` and ``second`` encode alike."""
    a, b = _weights(first), _weights(second)
    keys = sorted(k for k in a if k.startswith(LATENT_PARTS))
    different = [k for k in keys if k not in b or not (a[k].float() == b[k].float()).all()]
    if not keys or different:
        raise ValueError(
            f"--image-vae: {second} does not share the latent space of {first} "
            f"({len(different)} of {len(keys)} encoder tensors differ): only its decoder may change"
        )


def place(source: Path, out: Path, name: str, drop: tuple[str, ...] = (), edit=None) -> Path:
    """Copies the pipeline folder ``source`` to ``out/name`` without the subfolders ``drop``,
    applies ``edit(partial_folder)``, writes the weight manifest and renames it into place."""
    from momaplib.checkpoints import write_weight_manifest
    from momaplib.training.bundle import strip_machine_paths

    if not (source / "model_index.json").is_file():
        raise ValueError(f"{name}: {source} is not a pipeline folder (no model_index.json)")
    partial = out / f"{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    for sub in drop:
        shutil.rmtree(partial / sub, ignore_errors=True)
    (partial / "weights.sha256.json").unlink(missing_ok=True)
    if edit is not None:
        edit(partial)
    strip_machine_paths(partial)
    write_weight_manifest(partial)
    final = out / name
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", type=Path, required=True, help="train_paper.py's <runs>/bundles")
    parser.add_argument("--image-vae", type=Path, help="the image VAE to bundle (default: the bundle's own)")
    parser.add_argument("--video", type=Path, help="a trained CompletionUNet folder (eval_video.py train)")
    parser.add_argument("--out", type=Path, default=Path("checkpoints"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = args.bundles / "momap-diffusion"

    def swap_image_vae(folder: Path) -> None:
        index = json.loads((folder / "model_index.json").read_text())
        index["init_source"] = "inflate:image-diffusion"  # the bundled prior, whatever folder it trained from
        (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        if args.image_vae is not None:
            check_same_latent_space(bundle / "image_vae", args.image_vae)
            shutil.rmtree(folder / "image_vae")
            shutil.copytree(args.image_vae, folder / "image_vae", ignore=shutil.ignore_patterns("weights.*"))

    def no_vae(folder: Path) -> None:
        index = json.loads((folder / "model_index.json").read_text())
        index["vae"] = [None, None]
        (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    written = [place(bundle, args.out, "momap-diffusion", edit=swap_image_vae)]
    written.append(place(args.bundles / "image-diffusion", args.out, "image-diffusion", ("vae",), no_vae))
    for name in ("momap-vae-baseline", "momap-diffusion-dsl"):
        if (args.bundles / name).is_dir():
            written.append(place(args.bundles / name, args.out, name, ("vae", "image_vae")))
    if args.video is not None:
        from diffusers import AutoencoderKL

        from momaplib.training import save_pipeline
        from momaplib.video import CompletionUNet, MoMapVideoPipeline, build_scheduler

        image_vae = AutoencoderKL.from_pretrained(args.out / "momap-diffusion" / "image_vae")
        pipe = MoMapVideoPipeline(CompletionUNet.from_pretrained(args.video), image_vae, build_scheduler())
        save_pipeline(pipe, args.out / "momap-video", bundle=True)
        written.append(args.out / "momap-video")
    sizes = {folder.name: disk_bytes(folder) for folder in written}
    total = disk_bytes(args.out)
    for name, size in sizes.items():
        print(f"{name:22s} {size / 2**20:6.1f} MiB")
    print(f"{'all of ' + str(args.out):22s} {total / 2**20:6.1f} MiB (budget {BUDGET_BYTES / 2**20:.0f} MiB)")
    if total > BUDGET_BYTES:
        raise SystemExit(f"{args.out}: {total} bytes on disk, over the {BUDGET_BYTES}-byte budget")
    return {**sizes, "total": total}


if __name__ == "__main__":
    main()
