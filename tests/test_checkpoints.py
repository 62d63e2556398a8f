"""Weight manifests (momaplib.checkpoints): saved weights carry their sha256, loads check them."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import AutoencoderKL

from momaplib.checkpoints import (
    SKIP_WEIGHT_CHECK_ENV,
    WEIGHT_MANIFEST,
    CheckpointIntegrityError,
    checkpoints_root,
    resolve_checkpoint,
    verify_weights,
    write_weight_manifest,
)
from momaplib.training import save_model


def _flip_a_bit(path, offset_from_end: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01  # inside the tensor data, past the safetensors header
    path.write_bytes(bytes(data))


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=2, layers_per_block=1)
    return save_model(model, tmp_path / "vae")


def test_saving_writes_a_manifest_of_every_weight_file(saved):
    listed = json.loads((saved / WEIGHT_MANIFEST).read_text())
    assert list(listed) == ["diffusion_pytorch_model.safetensors"]
    assert verify_weights(saved) == 1
    assert resolve_checkpoint(saved) == saved.resolve()
    AutoencoderKL.from_pretrained(resolve_checkpoint(saved))  # still a plain save_pretrained folder


def test_a_flipped_bit_is_an_error_naming_the_file_unless_opted_out(saved, monkeypatch):
    weights = saved / "diffusion_pytorch_model.safetensors"
    _flip_a_bit(weights)
    with pytest.raises(
        CheckpointIntegrityError, match=r"diffusion_pytorch_model\.safetensors: sha256 .* does not"
    ):
        resolve_checkpoint(saved)
    assert resolve_checkpoint(saved, verify=False) == saved.resolve()
    monkeypatch.setenv(SKIP_WEIGHT_CHECK_ENV, "1")
    assert resolve_checkpoint(saved) == saved.resolve()
    monkeypatch.delenv(SKIP_WEIGHT_CHECK_ENV)
    write_weight_manifest(saved)  # edited on purpose: a new manifest makes it loadable again
    assert resolve_checkpoint(saved) == saved.resolve()


def test_missing_and_unlisted_weight_files_are_errors(saved):
    extra = saved / "extra.safetensors"
    shutil.copy(saved / "diffusion_pytorch_model.safetensors", extra)
    with pytest.raises(CheckpointIntegrityError, match=r"extra\.safetensors: a weight file not listed"):
        verify_weights(saved)
    extra.unlink()
    (saved / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointIntegrityError, match=r"listed in .* but missing"):
        verify_weights(saved)
    (saved / WEIGHT_MANIFEST).write_text("{not json")
    with pytest.raises(CheckpointIntegrityError, match="not a readable weight manifest"):
        verify_weights(saved)
    (saved / WEIGHT_MANIFEST).unlink()
    assert verify_weights(saved) == 0  # no manifest: someone else's folder, not checked


def test_bundled_checkpoints_carry_manifests_and_a_corrupted_copy_is_refused(tmp_path, monkeypatch):
    root = checkpoints_root()
    # 4 models, the UNet as 2 shards + their index
    assert verify_weights(resolve_checkpoint("momap-diffusion")) == 6
    assert (
        verify_weights(resolve_checkpoint("momap-vae")) == 1
    )  # a part, checked against the parent's manifest
    assert verify_weights(resolve_checkpoint("momap-vae-baseline")) == 3
    # the bundled momap-vae in a copy of the checkpoints folder, one bit flipped
    copy = tmp_path / "checkpoints" / "momap-diffusion"
    shutil.copytree(root / "momap-diffusion" / "vae", copy / "vae")
    listed = json.loads((root / "momap-diffusion" / WEIGHT_MANIFEST).read_text())
    (copy / WEIGHT_MANIFEST).write_text(json.dumps({k: v for k, v in listed.items() if k.startswith("vae/")}))
    monkeypatch.setenv("MOMAP_CHECKPOINTS", str(tmp_path / "checkpoints"))
    assert resolve_checkpoint("momap-vae") == (copy / "vae").resolve()
    _flip_a_bit(copy / "vae" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointIntegrityError, match=r"vae/diffusion_pytorch_model\.safetensors: sha256"):
        resolve_checkpoint("momap-vae")


def test_a_pipeline_loaded_directly_is_checked_too(tmp_path):
    from momaplib.diffusion.pipeline import MoMapVAEPipeline, load_pipeline

    copy = tmp_path / "baseline"
    shutil.copytree(checkpoints_root() / "momap-vae-baseline", copy)
    assert isinstance(MoMapVAEPipeline.from_pretrained(copy), MoMapVAEPipeline)
    (shard,) = sorted((copy / "cvae").glob("*00002-of-00002.safetensors"))
    _flip_a_bit(shard)
    for load in (MoMapVAEPipeline.from_pretrained, load_pipeline):
        with pytest.raises(CheckpointIntegrityError, match=r"cvae/diffusion_pytorch_model-00002-of-00002"):
            load(copy)
