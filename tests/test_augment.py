"""Batch augmentation and procedural mixing (momaplib.training.augment) and their VAE-training hooks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion

from momaplib.data import collate, model_inputs
from momaplib.data.procedural import procedural_momap
from momaplib.data.views import mirror, roll_quarter_turns, rotate_camera
from momaplib.geometry import pixel_grid, project
from momaplib.momap import channels_to_xyz, denormalize_xyz
from momaplib.training import ITEM_POSITION, InMemoryDataset, TrainConfig
from momaplib.training.augment import augment_batch, procedural_count, with_procedural

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H = W = 32
T = 8


def momaps(size: int = H, num_frames: int = T):
    return [
        procedural_momap("primitives", 2, size, size, num_frames, moving=True),
        procedural_momap("room", 3, size, size, num_frames, moving=True),
    ]


def batch_of(records) -> dict:
    batch = collate([model_inputs(m) for m in records])
    batch[ITEM_POSITION] = torch.arange(len(records))
    return batch


def metres(batch: dict) -> torch.Tensor:
    """(B, T, H, W, 3) trajectories in metres of a batch in model range."""
    xyz = channels_to_xyz(batch["momap"].double())
    return denormalize_xyz(xyz, batch["center"].double(), batch["scale"].double())


def reprojection_errors(batch: dict) -> list[float]:
    xyz = metres(batch)
    errors = []
    for b in range(len(xyz)):
        uv, z = project(xyz[b, 0], batch["K"][b].double())
        valid = batch["valid"][b]
        assert (z[valid] > 0).all()
        errors.append(float((uv - pixel_grid(*valid.shape).double())[valid].abs().max()))
    return errors


def test_rotations_and_flips_equal_the_exact_views_of_the_momap():
    records = momaps()
    batch = batch_of(records)
    # every symmetry of the square, computed independently by momaplib.data.views
    views = {
        (k, flipped): model_inputs(mirror(roll_quarter_turns(m, k)) if flipped else roll_quarter_turns(m, k))
        for m in records[:1]
        for k in range(4)
        for flipped in (False, True)
    }
    seen = set()
    for seed in range(12):
        out = augment_batch(batch, torch.Generator().manual_seed(seed), crop_probability=0.0)
        assert max(reprojection_errors(out)) < 1e-3
        matches = [
            key for key, expected in views.items()
            if torch.equal(out["valid"][0], expected["valid"])
            and torch.equal(out["instance"][0], expected["instance"])
            and torch.allclose(out["momap"][0], expected["momap"], atol=1e-5)
            and torch.allclose(out["K"][0], expected["K"], atol=1e-5)
            and torch.equal(out["visible"][0], expected["visible"])
            and torch.allclose(out["rgb"][0], expected["rgb"], atol=1e-6)
            and torch.allclose(out["ref_from_cam"][0], expected["ref_from_cam"], atol=1e-6)
        ]  # fmt: skip
        assert len(matches) == 1, seed
        seen.add(matches[0])
        torch.testing.assert_close(out["xyz0"], out["momap"][:, :3])
    assert len(seen) >= 5  # rotations and flips are drawn, not one fixed view
    torch.testing.assert_close(batch["momap"], batch_of(records)["momap"])  # the input batch is not changed


def test_crops_keep_reprojection_exact_update_K_and_keep_a_rigid_part_rigid():
    records = momaps(64, 4)  # moving parts large enough to have an inside
    batch = batch_of(records)
    zooms, interior = [], []
    for seed in range(4):
        out = augment_batch(
            batch, torch.Generator().manual_seed(seed), rotate=False, flip=False, crop_probability=1.0
        )
        assert max(reprojection_errors(out)) < 1e-3
        zoom = (batch["K"][:, 0, 0] / out["K"][:, 0, 0]).tolist()
        assert all(0.6 - 1e-6 <= z <= 1.0 + 1e-6 for z in zoom)
        zooms += zoom
        assert (out["visible"] <= out["valid"][:, None]).all()
        xyz = metres(out)
        for b, record in enumerate(records):
            # the moving part still follows its recorded rigid motion from its (new) reference
            # points: to round-off inside it; at its edge a pixel takes its nearest original
            # pixel's motion, off by that motion over a fraction of a pixel
            motions = torch.tensor(record.meta["motion"]["ref_from_part"], dtype=torch.float64)
            on_part = (out["instance"][b] == 1).numpy()
            inside = binary_erosion(on_part, np.ones((5, 5)))[on_part]
            part = xyz[b][:, on_part]
            expected = part[0] @ motions[:, :3, :3].transpose(1, 2) + motions[:, None, :3, 3]
            error = (part - expected).norm(dim=-1) / float(part[0, :, 2].median())
            interior.append(error[:, inside])
            assert float(error.max()) < 0.02
    assert float(torch.cat(interior, 1).max()) < 1e-4 and torch.cat(interior, 1).shape[1] > 5
    assert min(zooms) < 0.9  # real crops happened


def test_camera_turns_equal_the_rotated_views_and_keep_reprojection_exact():
    records = momaps(48, 4)
    batch = batch_of(records)
    for seed in range(3):
        out = augment_batch(
            batch, torch.Generator().manual_seed(seed), rotate=False, flip=False, crop_probability=0.0,
            turn_probability=1.0, turn_degrees=(45.0, 20.0),
        )  # fmt: skip
        assert max(reprojection_errors(out)) < 1e-3
        # the same draws as augment_batch (6 for crops, turns and flips, then 4 for the camera turn)
        generator = torch.Generator().manual_seed(seed)
        torch.rand(len(records), 6, generator=generator, dtype=torch.float64)
        draws = torch.rand(len(records), 4, generator=generator, dtype=torch.float64)
        for b, record in enumerate(records):
            roll, pitch, yaw = ((draws[b, 1:] * 2 - 1) * torch.tensor([45.0, 20.0, 20.0])).tolist()
            expected = model_inputs(rotate_camera(record, roll_deg=roll, pitch_deg=pitch, yaw_deg=yaw))
            assert torch.equal(out["valid"][b], expected["valid"])
            assert 0.3 < float(expected["valid"].float().mean()) < 1.0  # some pixels now see outside
            assert torch.equal(out["instance"][b], expected["instance"])
            assert torch.equal(out["visible"][b], expected["visible"])
            torch.testing.assert_close(out["momap"][b], expected["momap"], atol=1e-5, rtol=0)
            torch.testing.assert_close(out["ref_from_cam"][b], expected["ref_from_cam"], atol=1e-6, rtol=0)
            torch.testing.assert_close(out["K"][b], batch["K"][b])
            # the colours (cv2.remap of 8-bit frames there) agree to about one grey level inside
            inside = expected["valid"] & torch.from_numpy(
                binary_erosion(expected["valid"].numpy(), np.ones((3, 3)))
            )
            colours = (out["rgb"][b] - expected["rgb"]).abs()[:, inside]
            assert float(colours.median()) < 0.02


def test_augmentation_is_seeded_per_item():
    batch = batch_of(momaps())
    first, again = augment_batch(batch, seed=5), augment_batch(batch, seed=5)
    for key in ("momap", "K", "valid", "rgb"):
        torch.testing.assert_close(first[key], again[key])
    # an item is augmented by its stream position alone, not by its batch neighbours
    alone = augment_batch({key: value[1:] for key, value in batch.items()}, seed=5)
    torch.testing.assert_close(alone["momap"][0], first["momap"][1])
    others = [augment_batch(batch, seed=s)["momap"] for s in range(6, 10)]
    assert any(not torch.allclose(o, first["momap"]) for o in others)


def test_holes_take_pixels_away_and_move_no_point_that_stays():
    records = momaps()
    batch = batch_of(records)
    plain = augment_batch(batch, seed=3)
    holed = augment_batch(batch, seed=3, holes_probability=1.0)
    # the holes' draws are a stream of their own: the crops, turns and flips are the same
    torch.testing.assert_close(holed["K"], plain["K"])
    lost = plain["valid"] & ~holed["valid"]
    assert not (holed["valid"] & ~plain["valid"]).any()  # only ever fewer valid pixels
    fractions = lost.flatten(1).float().mean(1)
    assert ((fractions > 0.01) & (fractions < 0.45)).all()  # a band or a disc in every item
    # what remains is the same geometry in metres, normalised again over the remaining pixels
    kept = holed["valid"][:, None, ..., None].expand(-1, T, -1, -1, 3)
    torch.testing.assert_close(metres(holed)[kept], metres(plain)[kept], atol=1e-5, rtol=0)
    assert (holed["momap"].view(len(records), T, 3, H, W).permute(0, 1, 3, 4, 2)[~kept] == 0).all()
    assert (holed["visible"] <= holed["valid"][:, None]).all()
    assert max(reprojection_errors(holed)) < 1e-3
    torch.testing.assert_close(augment_batch(batch, seed=3, holes_probability=1.0)["valid"], holed["valid"])
    shapes = {tuple(augment_batch(batch, seed=s, holes_probability=1.0)["valid"].sum((1, 2)).tolist())
              for s in range(8)}  # fmt: skip
    assert len(shapes) > 4  # drawn per seed, not one fixed hole
    with pytest.raises(ValueError, match="holes_probability"):
        augment_batch(batch, seed=0, holes_probability=1.5)


def test_bad_batches_and_settings_are_named():
    batch = batch_of(momaps())
    with pytest.raises(ValueError, match=r"needs the keys \['K'\]"):
        augment_batch({k: v for k, v in batch.items() if k != "K"}, seed=0)
    with pytest.raises(ValueError, match="per-pixel keys \\['depth'\\]"):
        augment_batch({**batch, "depth": torch.zeros(2, H, W)}, seed=0)
    with pytest.raises(ValueError, match="crop_scale"):
        augment_batch(batch, seed=0, crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="turn_probability"):
        augment_batch(batch, seed=0, turn_probability=-0.1)
    with pytest.raises(ValueError, match="turn_degrees"):
        augment_batch(batch, seed=0, turn_probability=0.5, turn_degrees=(120.0, 20.0))
    with pytest.raises(ValueError, match="item_position"):
        augment_batch({k: v for k, v in batch.items() if k != ITEM_POSITION})
    with pytest.raises(ValueError, match="procedural_fraction"):
        procedural_count(10, 1.0)


def test_procedural_mixing_reaches_its_fraction_and_is_off_at_zero(tmp_path):
    memory = InMemoryDataset.load(_ItemList(momaps() * 3), progress=False)
    config = TrainConfig(tmp_path, num_workers=0, progress=False)
    assert with_procedural(memory, 0.0, (T, H, W), config) is memory
    assert procedural_count(6, 0.25) == 2 and procedural_count(6, 0.5) == 6
    mixed = with_procedural(memory, 0.5, (T, H, W), config)
    assert isinstance(mixed, InMemoryDataset) and len(mixed) == 12
    assert sum(i.startswith("procedural_") for i in mixed.lists["id"]) == 6
    assert mixed.tensors["momap"].dtype == memory.tensors["momap"].dtype
    lazy = with_procedural(_ItemList(momaps()), 0.5, (T, H, W), config)
    assert (
        len(lazy) == 4 and lazy[3]["id"].startswith("procedural_") and lazy[3]["momap"].shape == (3 * T, H, W)
    )


class _ItemList(torch.utils.data.Dataset):
    """``model_inputs`` items of a list of MoMaps, with ids."""

    def __init__(self, records):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        return {**model_inputs(self.records[index]), "id": f"clip_{index}"}


def test_vae_training_mixes_procedural_momaps_and_augments(tmp_path, monkeypatch):
    from momaplib.data import write_dataset
    from momaplib.sim import SimConfig
    from momaplib.training import augment
    from momaplib.vae.train import TrainVAEJob

    seen: list[dict] = []
    original = augment.augment_batch

    def spy(batch, *args, **kwargs):
        out = original(batch, *args, **kwargs)
        seen.append({"ids": list(batch["id"]), "changed": not torch.equal(out["momap"], batch["momap"]),
                     "holes": kwargs.get("holes_probability"),
                     "turns": kwargs.get("turn_probability")})  # fmt: skip
        return out

    monkeypatch.setattr(augment, "augment_batch", spy)
    write_dataset(tmp_path / "data", SimConfig().smoke(), num_clips=4, workers=0, progress=False)
    config = TrainConfig(tmp_path / "vae", max_steps=6, batch_size=2, progress=False)
    job = TrainVAEJob(
        (tmp_path / "data",), config, init="scratch", smoke=True, procedural_fraction=0.5, augment=True,
        holes=0.5, camera_turns=0.25,
    )  # fmt: skip
    job.run()
    ids = [i for step in seen for i in step["ids"]]
    assert (
        len(seen) == 6
        and any(i.startswith("procedural_") for i in ids)
        and any(i.startswith("tabletop") for i in ids)
    )
    assert any(step["changed"] for step in seen) and all(step["holes"] == 0.5 for step in seen)
    assert all(step["turns"] == 0.25 for step in seen)
    records = [json.loads(line) for line in open(tmp_path / "vae" / "metrics.jsonl")]
    assert len(records) == 6 and all(np.isfinite(r["loss"]) for r in records)
    saved = json.loads((tmp_path / "vae" / "train_config.json").read_text())
    assert saved["procedural_fraction"] == 0.5 and saved["augment"] is True
    with pytest.raises(ValueError, match="procedural_fraction"):
        TrainVAEJob(procedural_fraction=1.5)
    with pytest.raises(ValueError, match="holes"):
        TrainVAEJob(holes=1.5)
    with pytest.raises(ValueError, match="camera_turns"):
        TrainVAEJob(camera_turns=2.0)


def test_an_augmented_batch_shares_no_memory_with_its_input():
    batch = batch_of(momaps())
    # no crop, no turn, no flip: every item passes through unchanged, and still nothing is shared
    out = augment_batch(batch, seed=0, rotate=False, flip=False, crop_probability=0.0)
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(out[key], value)
            assert not np.shares_memory(out[key].numpy(), value.numpy()), key
