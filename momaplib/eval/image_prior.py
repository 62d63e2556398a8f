"""Is the image prior a real image model? Its samples against MoMap-Sim frames it never saw.

The prior (``momaplib.diffusion.image_prior``) stands in for Stable Diffusion, so it has to draw
recognisable scenes of both families, not textures. No Inception network can be downloaded here,
so FID is out; two measures that need nothing pretrained, each reported for real held-out frames
too, so that the prior's numbers have a reference:

- **family accuracy**: a small CNN (``FamilyClassifier``) learns tabletop vs egocentric from
  train-split reference frames; its accuracy on the prior's samples (label: the family its caption
  names) says whether the samples carry each family's look (camera height, table, hand). On real
  test frames it is the ceiling.
- **nearest-train distance**: the RMS pixel distance (32x32, [0, 1]) from each image to its nearest
  train frame. For real test frames it measures how far an unseen scene lies from the training
  set; samples much farther than that are off the image manifold (noise, blur), much nearer would
  be copies of training frames. ``distance_ratio`` = median(samples) / median(real test frames).
  Pixel distances forgive blur (a blurred frame lies near many frames), hence:
- **sharpness**: the mean absolute Laplacian of the grey image, the samples' median over the real
  test frames' (``sharpness_ratio``): well below 1, the samples are blurred.

``reference_frames`` simulates the frames (``simulate_split_clips``: train and test splits are
disjoint by construction), ``sample_prior`` samples the prior for their captions,
``evaluate_image_prior`` scores its samples for the test captions, and ``prior_samples_figure``
draws samples beside real frames with their captions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.nn import functional as F

from momaplib.sim.clip import FAMILIES


@dataclass
class Frames:
    """Reference frames of simulated clips: ``images`` (N, H, W, 3) uint8, their ``captions`` (the
    prior's, ``scene_caption``) and ``labels`` (N,) int: the index of the family in ``FAMILIES``."""

    images: np.ndarray
    captions: list[str]
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"images: expected (N, H, W, 3) uint8, got {self.images.shape} {self.images.dtype}"
            )
        if not len(self.images) == len(self.captions) == len(self.labels):
            raise ValueError(
                f"captions / labels: expected one per image ({len(self.images)}), "
                f"got {len(self.captions)} / {len(self.labels)}"
            )


def reference_frames(count: int, split: str, seed: int = 0, configs=None, progress: bool = False) -> Frames:
    """Returns the reference frames of the first ``count`` clips of each family in ``split``
    (``configs``: SimConfigs whose frames to mix, default ``SimConfig()``; ``count`` per config).

    The clips are simulated with 2 frames instead of T (15x faster): under the ideal sensor the
    reference frame of a clip is the same for any T, with a sensor model only its noise draw differs."""
    from dataclasses import replace

    from momaplib.data.splits import simulate_split_clips
    from momaplib.diffusion.image_prior import scene_caption
    from momaplib.sim import SimConfig

    images, captions, labels = [], [], []
    for label, family in enumerate(FAMILIES):
        for config in configs or [SimConfig()]:
            short = replace(config, num_frames=2)
            for _, momap in simulate_split_clips(family, count, seed, short, split, progress=progress):
                images.append(momap.rgb)
                captions.append(scene_caption(momap.prompt, family))
                labels.append(label)
    return Frames(np.stack(images), captions, np.asarray(labels))


def _tensor(images: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) float in [0, 1] (area downsampling)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    return F.interpolate(x, size=(size, size), mode="area")


class FamilyClassifier(nn.Module):
    """Tabletop vs egocentric from a 64x64 frame: three strided convolutions and a linear head.
    Written here because it is 10 lines and nothing pretrained may be downloaded; it only has to
    tell two simulator families apart."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 5, 2, 2), nn.SiLU(), nn.Conv2d(width, 2 * width, 3, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(4 * width, len(FAMILIES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x * 2 - 1))

    @torch.no_grad()
    def correct(self, frames: Frames) -> np.ndarray:
        """(N,) bool: whether each frame's family is predicted right."""
        return self(_tensor(frames.images, 64)).argmax(1).numpy() == frames.labels

    def accuracy(self, frames: Frames) -> float:
        """Fraction of ``frames`` whose family is predicted right."""
        return float(self.correct(frames).mean())


def train_family_classifier(train: Frames, steps: int = 600, seed: int = 0) -> FamilyClassifier:
    """Returns a ``FamilyClassifier`` fitted to ``train`` (Adam, batch 64; flips and, for half the
    items, a 3x3 box blur as augmentation, so that blur alone does not tell a family)."""
    if len(set(train.labels.tolist())) < 2:
        raise ValueError("train: expected frames of both families")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = FamilyClassifier()
    x, y = _tensor(train.images, 64), torch.from_numpy(train.labels).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(steps):
        index = torch.randint(len(x), (min(64, len(x)),), generator=generator)
        batch = x[index]
        flip = torch.rand(len(batch), generator=generator) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        blur = torch.rand(len(batch), generator=generator) < 0.5
        blurred = F.avg_pool2d(batch, 3, 1, 1, count_include_pad=False)
        batch = torch.where(blur[:, None, None, None], blurred, batch)
        loss = F.cross_entropy(model(batch), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def nearest_train_distance(images: np.ndarray, train: np.ndarray, size: int = 32) -> np.ndarray:
    """Returns (N,) RMS distance (pixels in [0, 1], at ``size`` x ``size``) from each image to its
    nearest image of ``train``."""
    a, b = _tensor(images, size).flatten(1), _tensor(train, size).flatten(1)
    return (torch.cdist(a, b).min(1).values / a.shape[1] ** 0.5).numpy()


def sharpness(images: np.ndarray) -> np.ndarray:
    """Returns (N,) mean absolute Laplacian (4-neighbour) of each image's grey levels in [0, 1]."""
    grey = _tensor(images, images.shape[1]).mean(1, keepdim=True)
    kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)
    return F.conv2d(grey, kernel).abs().mean((1, 2, 3)).numpy()


def sample_prior(
    pipe, frames: Frames, num_inference_steps: int = 25, guidance_scale: float = 3.0, seed: int = 0,
    batch_size: int = 16,
) -> Frames:  # fmt: skip
    """Returns the samples of ``pipe`` (an ``ImageDiffusionPipeline``) for the captions of ``frames``,
    one per caption at the frames' size, labelled as the frames are (one generator seeded with
    ``seed`` draws every batch's noise)."""
    height, width = frames.images.shape[1:3]
    generator = torch.Generator().manual_seed(seed)
    images = np.concatenate([
        pipe(frames.captions[i : i + batch_size], height, width, num_inference_steps, guidance_scale,
             generator=generator, progress=False)
        for i in range(0, len(frames.captions), batch_size)
    ])  # fmt: skip
    return Frames(images, list(frames.captions), frames.labels.copy())


@torch.no_grad()
def vae_round_trip(vae, frames: Frames, batch_size: int = 16) -> Frames:
    """Returns ``frames`` encoded (posterior mean) and decoded by ``vae`` (a diffusers
    ``AutoencoderKL``), labelled as they are: the sharpest a prior that decodes through ``vae``
    can be."""
    from momaplib.video.frames import images_to_model, model_to_images

    decoded = []
    for i in range(0, len(frames.images), batch_size):
        x = images_to_model(frames.images[i : i + batch_size]).to(vae.device, vae.dtype).contiguous()
        y = vae.decode(vae.encode(x).latent_dist.mean).sample
        decoded.append((model_to_images(y) * 255).round().astype(np.uint8))
    return Frames(np.concatenate(decoded), list(frames.captions), frames.labels.copy())


def evaluate_image_prior(
    pipe, train: Frames, test: Frames, num_inference_steps: int = 25, guidance_scale: float = 3.0,
    seed: int = 0, batch_size: int = 16, classifier_steps: int = 600,
) -> tuple[dict, Frames]:  # fmt: skip
    """Samples ``pipe`` (an ``ImageDiffusionPipeline``) once per caption of ``test`` and returns
    ``({"real test frames": row, "prior samples": row}, samples)``; each row holds
    ``family_accuracy`` (overall and per family), ``nearest_train_distance`` and ``sharpness``
    (medians) and their ratios to the real frames' (``distance_ratio``, ``sharpness_ratio``). A
    ``pipe`` with a ``vae`` also gets the row ``"image VAE round trip"`` (``vae_round_trip`` of the
    test frames): what its decoder alone keeps, the ceiling of the samples' sharpness."""
    samples = sample_prior(pipe, test, num_inference_steps, guidance_scale, seed, batch_size)
    classifier = train_family_classifier(train, classifier_steps, seed)
    rows = {}
    sets = [("real test frames", test), ("prior samples", samples)]
    if getattr(pipe, "vae", None) is not None:
        sets.append(("image VAE round trip", vae_round_trip(pipe.vae, test, batch_size)))
    for name, frames in sets:
        correct = classifier.correct(frames)
        row = {"images": len(frames.labels), "family_accuracy": float(correct.mean())}
        for label, family in enumerate(FAMILIES):
            keep = frames.labels == label
            row[f"family_accuracy_{family}"] = float(correct[keep].mean()) if keep.any() else float("nan")
        row["nearest_train_distance"] = float(np.median(nearest_train_distance(frames.images, train.images)))
        row["sharpness"] = float(np.median(sharpness(frames.images)))
        rows[name] = row
    real = rows["real test frames"]
    for row in rows.values():
        row["distance_ratio"] = row["nearest_train_distance"] / real["nearest_train_distance"]
        row["sharpness_ratio"] = row["sharpness"] / real["sharpness"]
    return rows, samples


def prior_markdown(rows: dict) -> str:
    """Returns the rows of ``evaluate_image_prior`` as a markdown table."""
    lines = [
        "| images | count | family accuracy | tabletop | egocentric | nearest-train distance | ratio "
        "| sharpness | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['images']} | {r['family_accuracy']:.2f} | {r['family_accuracy_tabletop']:.2f} "
            f"| {r['family_accuracy_egocentric']:.2f} | {r['nearest_train_distance']:.3f} "
            f"| {r['distance_ratio']:.2f} | {r['sharpness']:.4f} | {r['sharpness_ratio']:.2f} |"
        )
    return "\n".join(lines)


def prior_samples_figure(real: Frames, samples: Frames, columns: int = 4, panel: float = 1.6) -> Figure:
    """Returns a figure: per family a row of real test frames over a row of the prior's samples
    for the same captions (the first ``columns`` of each family), captions as titles."""
    import matplotlib.pyplot as plt  # pyplot: a notebook shows the figure the cell returns

    size = (columns * panel, 2 * len(FAMILIES) * panel + 0.4)
    fig, axes = plt.subplots(2 * len(FAMILIES), columns, figsize=size, squeeze=False, layout="constrained")
    for label, family in enumerate(FAMILIES):
        index = np.flatnonzero(real.labels == label)[:columns]
        for c in range(columns):
            for r, (frames, kind) in enumerate(((real, "real"), (samples, "sample"))):
                ax = axes[2 * label + r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c >= len(index):
                    ax.set_axis_off()
                    continue
                ax.imshow(frames.images[index[c]])
                if r == 0:
                    caption = real.captions[index[c]].split(". ", 1)[-1]
                    ax.set_title(caption if len(caption) < 34 else caption[:32] + "…", fontsize=6)
                if c == 0:
                    ax.set_ylabel(f"{family}\n{kind}", fontsize=7)
    fig.suptitle("image prior: real test frames (upper rows) and samples for their captions", fontsize=8)
    return fig


__all__: Sequence[str] = [
    "FAMILIES",
    "FamilyClassifier",
    "Frames",
    "evaluate_image_prior",
    "nearest_train_distance",
    "prior_markdown",
    "prior_samples_figure",
    "reference_frames",
    "sample_prior",
    "sharpness",
    "train_family_classifier",
    "vae_round_trip",
]
