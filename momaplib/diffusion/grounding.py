"""Prompt grounding: which instance does the prompt talk about? One more UNet condition channel.

The UNet reads the prompt through cross-attention, one latent cell at a time. For a prompt such
as "push the red cup to the left" it learns *how* things move, but on MoMap-Sim it does not learn
*which* instance the colour or category word names: the right, empty and a wrong prompt choose
the moving object equally often (``benchmarks/eval_text_use.py``). The same information is easy
to read per instance: ``benchmarks/probe_text_grounding.py`` finds the target on 99.8-100 % of
held-out clips with one attention step from each instance to the prompt tokens.

So the kit grounds the prompt before the UNet, the way referring-segmentation models feed a
text-conditioned mask to a generator:

1. ``instance_features`` describes every instance of the instance map by 12 numbers from the
   reference frame (colour mean and spread, area, mean normalised XYZ, box size);
2. ``PromptGrounder`` (a tiny ``ModelMixin``: an MLP per instance, one attention read of the
   prompt tokens, an MLP score) gives a softmax over the instances;
3. ``paint_scores`` paints each instance's probability over its pixels and averages it to the
   latent grid: a (B, 1, h, w) map appended after the 12 condition latents.

Training uses the true target instead (``target_map``: the fraction of each latent cell covered
by the target), zeroed with the prompt when the prompt is dropped for classifier-free guidance; at
sampling the grounder's map goes with the prompt and zeros with the unconditional branch. No
library offers a referring-instance scorer over an arbitrary instance map and sentence-embedding
tokens, hence this small module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn
from tqdm.auto import tqdm

#: numbers per instance in ``instance_features``
NUM_INSTANCE_FEATURES = 12


def instance_features(
    rgb: Tensor, instance: Tensor, xyz0: Tensor, valid: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Returns ``features`` (B, K, 12) and ``ids`` (B, K) of the instances (ids > 0) of each map.

    ``rgb`` (B, 3, H, W) in [-1, 1], ``instance`` (B, H, W) integer ids (0 = background),
    ``xyz0`` (B, 3, H, W) the normalised reference XYZ map, ``valid`` (B, H, W) the pixels with
    a point (default: all). Per instance: mean RGB in [0, 1] (3), area as a fraction of the image
    x 10 (1), mean XYZ over its valid pixels (3), box height and width as fractions (2), RGB
    standard deviation (3). K is the largest instance count of the batch; missing slots have
    id 0 and all-zero features.
    """
    if instance.ndim != 3 or instance.dtype.is_floating_point or instance.dtype == torch.bool:
        raise TypeError(
            f"instance: expected (B, H, W) integer ids, got {tuple(instance.shape)} {instance.dtype}"
        )
    B, H, W = instance.shape
    for name, value in (("rgb", rgb), ("xyz0", xyz0)):
        if value.shape != (B, 3, H, W):
            raise ValueError(f"{name}: expected ({B}, 3, {H}, {W}) like instance, got {tuple(value.shape)}")
    if valid is None:
        valid = torch.ones_like(instance, dtype=torch.bool)
    colour = (rgb.float() + 1) / 2
    rows = torch.arange(H, device=instance.device, dtype=torch.float32)[:, None].expand(H, W).flatten()
    cols = torch.arange(W, device=instance.device, dtype=torch.float32)[None, :].expand(H, W).flatten()
    per_sample = []
    for b in range(B):
        ids = torch.unique(instance[b])
        ids = ids[ids > 0]
        masks = (instance[b].flatten()[None] == ids[:, None]).float()  # (K, HW)
        area = masks.sum(1)
        pixels = colour[b].flatten(1).T  # (HW, 3)
        mean = masks @ pixels / area[:, None]
        spread = (masks @ pixels.square() / area[:, None] - mean.square()).clamp_min(0).sqrt()
        with_point = masks * valid[b].flatten().float()
        position = with_point @ xyz0[b].float().flatten(1).T / with_point.sum(1).clamp_min(1)[:, None]
        inside = masks.bool()
        box = torch.stack([_extent(rows, inside) / H, _extent(cols, inside) / W], 1)
        features = torch.cat([mean, area[:, None] / (H * W) * 10, position, box, spread], 1)
        per_sample.append((features, ids))
    K = max(1, *(len(ids) for _, ids in per_sample))
    features = torch.zeros(B, K, NUM_INSTANCE_FEATURES, device=instance.device)
    ids = torch.zeros(B, K, dtype=torch.long, device=instance.device)
    for b, (f, i) in enumerate(per_sample):
        features[b, : len(i)], ids[b, : len(i)] = f, i
    return features, ids


def _extent(coords: Tensor, inside: Tensor) -> Tensor:
    """Returns (K,) how many rows (or columns) each instance spans: ``coords`` (HW,) the pixels'
    row (or column) index, ``inside`` (K, HW) the instance masks."""
    coords = coords.expand_as(inside)
    return coords.masked_fill(~inside, -1).amax(1) - coords.masked_fill(~inside, coords.numel()).amin(1) + 1


def pad_instances(features: Tensor, ids: Tensor, K: int) -> tuple[Tensor, Tensor]:
    """Returns ``features``/``ids`` padded with empty slots to K instances."""
    extra = K - ids.shape[1]
    if extra < 0:
        raise ValueError(f"pad_instances: {ids.shape[1]} instances do not fit in K = {K}")
    return F.pad(features, (0, 0, 0, extra)), F.pad(ids, (0, extra))


class PromptGrounder(ModelMixin, ConfigMixin):
    """Scores the instances of a scene against a prompt: ``forward`` -> (B, K) logits.

    Each instance's features pass an MLP; the result queries the prompt tokens (one attention
    head; all-zero tokens are padding and are not read); an MLP scores what the instance read
    together with the instance itself. A softmax over the instances (``probabilities``) says
    which one the prompt names.
    """

    @register_to_config
    def __init__(self, num_features: int = NUM_INSTANCE_FEATURES, text_dim: int = 384, width: int = 128):
        super().__init__()
        self.instance = nn.Sequential(nn.Linear(num_features, width), nn.GELU(), nn.Linear(width, width))
        self.key = nn.Linear(text_dim, width)
        self.score = nn.Sequential(nn.Linear(text_dim + width, width), nn.GELU(), nn.Linear(width, 1))

    def forward(self, features: Tensor, ids: Tensor, tokens: Tensor) -> Tensor:
        """``features`` (B, K, F), ``ids`` (B, K) (0 = empty slot), ``tokens`` (B, L, D) -> (B, K)
        logits, -inf on empty slots."""
        if features.ndim != 3 or features.shape[-1] != self.config.num_features:
            raise ValueError(
                f"features: expected (B, K, {self.config.num_features}), got {tuple(features.shape)}"
            )
        if tokens.ndim != 3 or tokens.shape[-1] != self.config.text_dim or len(tokens) != len(features):
            raise ValueError(
                f"tokens: expected ({len(features)}, L, {self.config.text_dim}), got {tuple(tokens.shape)}"
            )
        dtype = self.key.weight.dtype
        h = self.instance(features.to(dtype))
        tokens = tokens.to(dtype)
        attention = h @ self.key(tokens).transpose(1, 2) / math.sqrt(h.shape[-1])  # (B, K, L)
        readable = tokens.abs().sum(-1) > 0
        attention = attention.masked_fill(~readable[:, None, :], float("-inf"))
        weights = torch.softmax(attention.float(), dim=-1).nan_to_num(0.0).to(dtype)  # no token: read 0
        logits = self.score(torch.cat([weights @ tokens, h], dim=-1)).squeeze(-1).float()
        return logits.masked_fill(ids == 0, float("-inf"))

    def probabilities(self, features: Tensor, ids: Tensor, tokens: Tensor) -> Tensor:
        """Returns (B, K) probabilities that each instance is the one the prompt names (0 on empty slots)."""
        return torch.softmax(self(features, ids, tokens), dim=-1).nan_to_num(0.0)


def paint_scores(scores: Tensor, ids: Tensor, instance: Tensor, size: tuple[int, int]) -> Tensor:
    """Returns (B, 1, h, w): each instance's score painted over its pixels, averaged to ``size``.

    ``scores``/``ids`` (B, K) as from ``PromptGrounder.probabilities``; ``instance`` (B, H, W).
    Background and instances without a slot get 0.
    """
    hits = (instance[..., None] == ids[:, None, None, :]) & (ids[:, None, None, :] > 0)  # (B, H, W, K)
    painted = (hits.float() * scores[:, None, None, :].float()).sum(-1)
    return F.adaptive_avg_pool2d(painted[:, None], size)


def target_map(instance: Tensor, target_id: Tensor, size: tuple[int, int]) -> Tensor:
    """Returns (B, 1, h, w): the fraction of each latent cell covered by the target instance.

    ``target_id`` (B,) ids in ``instance`` (B, H, W); an id of 0 or below (no known target) or
    one missing from the map gives zeros.
    """
    hits = (instance == target_id[:, None, None]) & (target_id[:, None, None] > 0)
    return F.adaptive_avg_pool2d(hits[:, None].float(), size)


def target_slots(ids: Tensor, target_id: Tensor) -> Tensor:
    """Returns (B,) the slot of ``target_id`` in ``ids`` (B, K), or -1 where it has none."""
    match = (ids == target_id[:, None]) & (ids > 0)
    return torch.where(match.any(1), match.float().argmax(1), -1)


def train_grounder(
    grounder: PromptGrounder,
    features: Tensor,
    ids: Tensor,
    targets: Tensor,
    text_table: Tensor,
    prompt_index: Tensor,
    steps: int = 3000,
    batch_size: int = 256,
    learning_rate: float = 2e-3,
    holdout: float = 0.05,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Trains ``grounder`` in place with cross-entropy over the instances; returns its metrics.

    Examples are clips with a known target slot (``targets`` (N,) >= 0, from ``target_slots``)
    and a non-empty prompt (``prompt_index`` (N,) > 0 into ``text_table`` (P, L, D), row 0 = "").
    A fixed ``holdout`` fraction is kept out and scored. AdamW with a cosine schedule; the batches
    come from a generator seeded with ``seed``, so the result is reproducible.
    """
    device = grounder.device
    usable = ((targets >= 0) & (prompt_index > 0)).nonzero().squeeze(1)
    if len(usable) < 2:
        raise ValueError(f"train_grounder: {len(usable)} clips have a target in view and a prompt; need >= 2")
    generator = torch.Generator().manual_seed(seed)
    order = usable[torch.randperm(len(usable), generator=generator)]
    cut = max(1, round(len(order) * holdout)) if holdout > 0 else 0
    test, train = order[:cut], order[cut:]
    data = [t.to(device) for t in (features, ids, targets, prompt_index)]
    table = text_table.to(device)
    optimizer = torch.optim.AdamW(grounder.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    grounder.train()
    loss = torch.zeros(())
    for _ in tqdm(range(steps), desc="train grounder", disable=not progress, leave=False):
        batch = train[torch.randint(len(train), (batch_size,), generator=generator)].to(device)
        f, i, t, p = (d[batch] for d in data)
        loss = F.cross_entropy(grounder(f, i, table[p]), t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    grounder.eval()

    @torch.no_grad()
    def accuracy(index: Tensor) -> float:
        hits = 0
        for chunk in index.to(device).split(1024):
            f, i, t, p = (d[chunk] for d in data)
            hits += int((grounder(f, i, table[p]).argmax(1) == t).sum())
        return hits / len(index)

    return {
        "loss": float(loss.detach()),
        "train_accuracy": accuracy(train),
        "heldout_accuracy": accuracy(test) if len(test) else float("nan"),
        "train_clips": len(train),
        "heldout_clips": len(test),
    }


__all__ = [
    "NUM_INSTANCE_FEATURES",
    "PromptGrounder",
    "instance_features",
    "pad_instances",
    "paint_scores",
    "target_map",
    "target_slots",
    "train_grounder",
]
