"""Where trained weights come from: one resolver for local folders, bundled checkpoints and the hub.

``resolve_checkpoint(name_or_path)`` returns a local folder (DESIGN.md, "Conventions"), trying in
order:

1. a local folder: ``name_or_path`` is an existing directory;
2. a bundled checkpoint: ``<checkpoints root>/<name>`` (or the entry's ``folder``: the
   bundled ``momap-vae`` and ``image-vae`` are parts of ``momap-diffusion``), where the root is
   ``$MOMAP_CHECKPOINTS`` when set, else the ``checkpoints/`` folder of this repository;
3. a Hugging Face hub repository, downloaded with ``huggingface_hub.snapshot_download`` into its
   normal cache (``$HF_HOME``); a registered name whose folder is missing falls back to its
   ``hub_id``. Only ``*.json``, ``*.safetensors`` and ``*.md`` files are fetched (weights are
   safetensors only; pickled ``.bin``/``.ckpt`` files are never downloaded).

With no network, 1 and 2 work and 3 raises ``CheckpointNotFoundError``, naming every place tried
(``HF_HUB_OFFLINE=1`` makes the hub step use the cache only, without waiting for time-outs).

Integrity: every folder the kit saves weights into gets a ``weights.sha256.json`` manifest
(``write_weight_manifest``: the sha256 of every ``*.safetensors`` file and shard index below it).
``resolve_checkpoint`` checks the resolved folder against the manifest found in it or in one of
its two parent folders (a pipeline's manifest covers its ``vae/``, ``unet/``, ...) before anything
loads: a changed, missing or unlisted weight file is a ``CheckpointIntegrityError`` naming the
file. Folders without a manifest (someone else's hub checkpoint) are not checked. Opt out with
``verify=False`` or ``MOMAP_SKIP_WEIGHT_CHECK=1`` when you edit weights on purpose, or write a new
manifest with ``write_weight_manifest(folder)``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import momaplib
from momaplib.storage import sha256_file

try:  # imported at module level so tests can replace it; huggingface_hub is a core dependency
    from huggingface_hub import snapshot_download
except ImportError:  # pragma: no cover - a broken install; step 3 then explains itself
    snapshot_download = None

#: Environment variable that points the resolver at another folder of bundled checkpoints.
CHECKPOINTS_ENV = "MOMAP_CHECKPOINTS"
#: Files fetched from the hub: configs, safetensors weights and model cards, nothing pickled.
HUB_PATTERNS = ("*.json", "*.safetensors", "*.md")
#: The manifest of weight-file hashes written next to saved weights.
WEIGHT_MANIFEST = "weights.sha256.json"
#: Environment variable that turns the manifest check off (``1``) for edited weights.
SKIP_WEIGHT_CHECK_ENV = "MOMAP_SKIP_WEIGHT_CHECK"
#: Hub ids: "owner/name" (or a bare legacy name), letters, digits, "-", "_" and ".".
HUB_ID = re.compile(r"^(?:[\w.-]+/)?[\w.-]+$")


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint of that name: the message lists every place the resolver tried."""


class CheckpointIntegrityError(ValueError):
    """A weight file does not match its sha256 in ``weights.sha256.json``."""


@dataclass(frozen=True)
class CheckpointEntry:
    """A named checkpoint the kit knows (d2l's ``DATA_HUB`` idea); its files' hashes are in the
    folder's ``weights.sha256.json``."""

    description: str  # what the weights are, one line
    hub_id: str | None = None  # hub repository to fetch when the bundled folder is missing
    folder: str | None = None  # folder under the checkpoints root when not the name (a shared part)


#: Bundled checkpoints by name.
CHECKPOINTS: dict[str, CheckpointEntry] = {
    "momap-diffusion": CheckpointEntry(
        "MoMapPipeline: conditioned UNet (MiniLM text) + MoMap VAE + image VAE + DDIM scheduler, "
        "trained on MoMap-Sim, 128x128, T = 32 (`momap train-diffusion`)"
    ),
    "image-vae": CheckpointEntry(
        "RGB/XYZ AutoencoderKL (4 latent channels, /8) trained on MoMap-Sim; the offline stand-in "
        "for Stable Diffusion's VAE (`momap train-image-vae`); stored inside momap-diffusion",
        folder="momap-diffusion/image_vae",
    ),
    "momap-vae": CheckpointEntry(
        "MoMapVAE (3T = 96 -> 32 latent channels, /8) inflated from image-vae and fine-tuned on "
        "MoMap-Sim, 128x128, T = 32 (`momap train-vae`); stored inside momap-diffusion",
        folder="momap-diffusion/vae",
    ),
    "momap-video": CheckpointEntry(
        "MoMapVideoPipeline: completion UNet with self-attention flattened across frames, over the "
        "image-vae latents, trained on GT-MoMap renders of MoMap-Sim clips (`momap train-video`)"
    ),
    "momap-vae-baseline": CheckpointEntry(
        "MoMapVAEPipeline: the conditional MoMap-VAE baseline of paper §4.1 (shares the VAEs of "
        "momap-diffusion), trained on MoMap-Sim (`momap train-diffusion --model momap-vae`)"
    ),
}


def checkpoints_root() -> Path:
    """Returns the folder of bundled checkpoints: ``$MOMAP_CHECKPOINTS`` or ``<repo>/checkpoints``."""
    override = os.environ.get(CHECKPOINTS_ENV)
    if override:
        return Path(override).expanduser()
    return Path(momaplib.__file__).resolve().parents[1] / "checkpoints"


def _weight_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name.endswith((".safetensors", ".safetensors.index.json"))
    )


def write_weight_manifest(folder: str | os.PathLike) -> Path:
    """Writes ``folder/weights.sha256.json``: ``{relative path: sha256}`` of every weight file below
    ``folder``; returns its path. Savers call it; call it yourself after editing weights on purpose."""
    from momaplib.storage import atomic_write_text

    folder = Path(folder)
    hashes = {p.relative_to(folder).as_posix(): sha256_file(p) for p in _weight_files(folder)}
    path = folder / WEIGHT_MANIFEST
    atomic_write_text(path, json.dumps(hashes, indent=2, sort_keys=True) + "\n")
    return path


def verify_weights(folder: str | os.PathLike) -> int:
    """Checks the weight files below ``folder`` against the nearest ``weights.sha256.json`` (in
    ``folder`` or one of its two parents); returns the number of files checked (0: no manifest).

    Raises ``CheckpointIntegrityError`` naming the first file that differs, is missing or is not
    listed (a weight file added after the save).
    """
    folder = Path(folder).resolve()
    for base in (folder, folder.parent, folder.parent.parent):
        manifest = base / WEIGHT_MANIFEST
        if manifest.is_file():
            break
    else:
        return 0
    try:
        listed = json.loads(manifest.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointIntegrityError(f"{manifest}: not a readable weight manifest ({error})") from error
    prefix = "" if base == folder else folder.relative_to(base).as_posix() + "/"
    expected = {name: sha for name, sha in listed.items() if name.startswith(prefix)}
    present = {p.relative_to(base).as_posix() for p in _weight_files(folder)}
    hint = (
        f"; if you changed the weights on purpose, rewrite the manifest with "
        f"momaplib.checkpoints.write_weight_manifest({str(base)!r}) or set {SKIP_WEIGHT_CHECK_ENV}=1"
    )
    for name in sorted(present - set(expected)):
        raise CheckpointIntegrityError(f"{base / name}: a weight file not listed in {manifest}{hint}")
    for name, sha256 in sorted(expected.items()):
        path = base / name
        if not path.is_file():
            raise CheckpointIntegrityError(f"{path}: listed in {manifest} but missing{hint}")
        actual = sha256_file(path)
        if actual != sha256:
            raise CheckpointIntegrityError(
                f"{path}: sha256 {actual} does not match {sha256} in {manifest} (the file is corrupted "
                f"or was changed after it was saved){hint}"
            )
    return len(expected)


def resolve_checkpoint(
    name_or_path: str | os.PathLike,
    subfolder: str | None = None,
    revision: str | None = None,
    verify: bool | None = None,
) -> Path:
    """Returns the local folder of a checkpoint: a local folder, a bundled name or a hub id.

    ``subfolder`` (e.g. ``"vae"`` of a Stable Diffusion repository) limits a hub download to that
    folder; the returned path is still the repository root, so pass the same ``subfolder`` to
    ``from_pretrained``. ``revision`` is a hub branch, tag or commit. Raises
    ``CheckpointNotFoundError`` naming what was tried, ``CheckpointIntegrityError`` when a weight
    file does not match its manifest (``verify_weights``; ``verify=False`` or
    ``$MOMAP_SKIP_WEIGHT_CHECK=1`` skips that).
    """
    if verify is None:
        verify = os.environ.get(SKIP_WEIGHT_CHECK_ENV, "") in ("", "0")
    folder = _resolve(name_or_path, subfolder, revision)
    if verify:
        verify_weights(folder / subfolder if subfolder and (folder / subfolder).is_dir() else folder)
    return folder


def _resolve(name_or_path: str | os.PathLike, subfolder: str | None, revision: str | None) -> Path:
    name = os.fspath(name_or_path)
    if not name:
        raise CheckpointNotFoundError("checkpoint: expected a folder, a bundled name or a hub id, got ''")
    tried = []
    local = Path(name).expanduser()
    if local.is_dir():
        return local.resolve()
    if local.exists():
        raise CheckpointNotFoundError(
            f"checkpoint {name!r}: {local} is a file; expected a save_pretrained folder (config.json + "
            "*.safetensors)"
        )
    tried.append(f"local folder {local.resolve()} (does not exist)")

    entry = CHECKPOINTS.get(name)
    root = checkpoints_root()
    bundled = root / (entry.folder if entry is not None and entry.folder else name)
    if HUB_ID.match(name) and not name.startswith((".", "~")):
        if bundled.is_dir():
            return bundled.resolve()
        known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        tried.append(f"bundled checkpoint {bundled} (does not exist; bundled here: {known or 'none'})")
    else:  # a path that does not exist: no point asking the hub
        raise CheckpointNotFoundError(f"checkpoint {name!r} not found; tried: {tried[0]}")

    repo_id = entry.hub_id if entry is not None and entry.hub_id else name
    if entry is not None and not entry.hub_id:
        raise CheckpointNotFoundError(
            f"checkpoint {name!r} not found; tried: " + "; ".join(tried) + ". It is a bundled checkpoint "
            "with no hub copy: train it (see checkpoints/README.md) or point $MOMAP_CHECKPOINTS at a "
            "folder that holds it"
        )
    if snapshot_download is None:
        raise CheckpointNotFoundError(
            f"checkpoint {name!r} not found; tried: "
            + "; ".join(tried)
            + "; huggingface_hub is not installed"
        )
    patterns = [f"{subfolder.strip('/')}/{p}" for p in HUB_PATTERNS] if subfolder else list(HUB_PATTERNS)
    try:
        return Path(snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=patterns))
    except Exception as error:  # offline, unknown repository, gated, ...: one message with everything
        tried.append(f"Hugging Face hub repository {repo_id!r} ({type(error).__name__}: {error})")
        raise CheckpointNotFoundError(
            f"checkpoint {name!r} not found; tried: "
            + "; ".join(tried)
            + ". Without network only local folders and bundled checkpoints resolve (set HF_HUB_OFFLINE=1 "
            "to use the hub cache without waiting for the network)"
        ) from error


__all__ = [
    "CHECKPOINTS",
    "CHECKPOINTS_ENV",
    "SKIP_WEIGHT_CHECK_ENV",
    "WEIGHT_MANIFEST",
    "CheckpointEntry",
    "CheckpointIntegrityError",
    "CheckpointNotFoundError",
    "checkpoints_root",
    "resolve_checkpoint",
    "verify_weights",
    "write_weight_manifest",
]
