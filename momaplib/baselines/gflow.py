"""GeneralFlow-style baselines (paper §4.3, Table 1): a point-cloud encoder and a trajectory CVAE.

GeneralFlow predicts the future 3D trajectories of queried points from the t = 0 point cloud: a
PointNet++/PointNeXt-family backbone reads the cloud (xyz + colour features), each query point
gets a feature interpolated from it, and a conditional VAE maps (feature, z ~ N(0, I)) to the
query's displacements. The paper's three variants:

- ``gflow-original``: the whole horizon (T - 1 steps) at once;
- ``gflow-rollout``: 4 steps at a time, rolled out from its own last prediction (the scene cloud
  and the queries move with it);
- ``gflow-extend``: a larger query chunk and scene sample, semantic colours (instance ids in random
  colours) as point features, latent 32, a deeper backbone.

Points are in model range (``momaplib.momap.normalize_xyz``: centred, divided by the scene scale),
so one set of radii serves every scene. The point-cloud operations (farthest-point sampling, ball
query, three-nearest interpolation) are written in torch: the kept CUDA libraries for them
(``pointnet2_ops``, ``torch_cluster``, ``pytorch3d``) need compiling against the local CUDA and
have no CPU path, and the kit must train and test its baselines on a CPU; at these sizes (2k-4k
points) dense distance matrices are fast enough on either device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import pairwise

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn


@dataclass(frozen=True)
class GFlowConfig:
    """Sizes of one variant (``VARIANTS``)."""

    horizon: int | None = None  # steps predicted per call (None: T - 1, the whole clip)
    scene_points: int = 1024  # points of the t = 0 cloud the backbone reads
    query_chunk: int = 256  # query points per training item
    latent_dim: int = 16
    width: int = 128
    levels: int = 2  # set-abstraction levels
    semantic_colours: bool = False  # point features: instance ids in random colours, not RGB


VARIANTS = {
    "gflow-original": GFlowConfig(),
    "gflow-rollout": GFlowConfig(horizon=4),
    "gflow-extend": GFlowConfig(scene_points=2048, query_chunk=1024, latent_dim=32, width=192, levels=3,
                                semantic_colours=True),
}  # fmt: skip


# ----------------------------------------------------------------------------- point-cloud operations
def farthest_point_sample(points: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """Returns (B, count) indices of ``points`` (B, N, 3) picked by farthest-point sampling from a
    random first point (``generator``; index 0 without one)."""
    B, N, _ = points.shape
    count = min(count, N)
    index = torch.zeros(B, count, dtype=torch.long, device=points.device)
    if generator is not None:
        index[:, 0] = torch.randint(0, N, (B,), generator=generator).to(points.device)
    distance = torch.full((B, N), float("inf"), device=points.device)
    rows = torch.arange(B, device=points.device)
    for i in range(1, count):
        last = points[rows, index[:, i - 1]]  # (B, 3)
        distance = torch.minimum(distance, ((points - last[:, None]) ** 2).sum(-1))
        index[:, i] = distance.argmax(-1)
    return index


def ball_query(centres: Tensor, points: Tensor, radius: float, k: int) -> Tensor:
    """Returns (B, M, k) indices of up to ``k`` points within ``radius`` of each centre, nearest
    first; slots with no point in the ball repeat the nearest point (PointNet++'s padding)."""
    distance = torch.cdist(centres, points)  # (B, M, N)
    nearest, index = distance.topk(min(k, points.shape[1]), dim=-1, largest=False)
    return torch.where(nearest <= radius, index, index[..., :1])


def gather(values: Tensor, index: Tensor) -> Tensor:
    """Returns ``values`` (B, N, C) at ``index`` (B, ...) -> (B, ..., C)."""
    B = values.shape[0]
    flat = index.reshape(B, -1)
    picked = torch.gather(values, 1, flat[..., None].expand(-1, -1, values.shape[-1]))
    return picked.reshape(*index.shape, values.shape[-1])


def interpolate(queries: Tensor, centres: Tensor, features: Tensor) -> Tensor:
    """Returns (B, Q, C): inverse-distance weighted features of the 3 nearest centres (PointNet++)."""
    distance, index = torch.cdist(queries, centres).topk(min(3, centres.shape[1]), dim=-1, largest=False)
    weight = 1.0 / (distance + 1e-8)
    weight = weight / weight.sum(-1, keepdim=True)
    return (gather(features, index) * weight[..., None]).sum(-2)


def mlp(*sizes: int) -> nn.Sequential:
    layers = []
    for a, b in pairwise(sizes):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.GELU()]
    return nn.Sequential(*layers)


class SetAbstraction(nn.Module):
    """PointNet++ set abstraction: FPS centres, ball groups, a shared MLP on (offset, feature), max-pool."""

    def __init__(self, in_features: int, out_features: int, ratio: int, radius: float, k: int = 16):
        super().__init__()
        self.ratio, self.radius, self.k = ratio, radius, k
        self.mlp = mlp(in_features + 3, out_features, out_features)

    def forward(self, xyz: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        centres = gather(xyz, farthest_point_sample(xyz, max(1, xyz.shape[1] // self.ratio)))
        group = ball_query(centres, xyz, self.radius, self.k)  # (B, M, k)
        offsets = gather(xyz, group) - centres[:, :, None]
        return centres, self.mlp(torch.cat([offsets / self.radius, gather(features, group)], -1)).amax(2)


# ----------------------------------------------------------------------------- the model
class GFlowModel(ModelMixin, ConfigMixin):
    """Backbone over the t = 0 cloud + per-query CVAE over ``horizon`` future displacements."""

    @register_to_config
    def __init__(
        self,
        horizon: int = 31,
        latent_dim: int = 16,
        width: int = 128,
        levels: int = 2,
        scene_points: int = 1024,
        query_chunk: int = 256,
        semantic_colours: bool = False,
        variant: str = "gflow-original",
        num_frames: int = 32,
    ):
        super().__init__()
        self.stages = nn.ModuleList(
            SetAbstraction(3 if i == 0 else width, width, ratio=4, radius=0.1 * 2**i) for i in range(levels)
        )
        self.query = mlp(3 + 3 + 2 * width, width, width)  # xyz, colour, local + global feature
        self.encoder = mlp(width + 3 * horizon, width, width)
        self.to_latent = nn.Linear(width, 2 * latent_dim)
        self.decoder = nn.Sequential(mlp(width + latent_dim, width, width), nn.Linear(width, 3 * horizon))

    def scene_context(self, scene: Tensor, scene_colour: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns what the backbone makes of the scene cloud (B, N, 3) + colours: the first level's
        centres and features (for the queries' local feature) and the global feature (B, 1, width)."""
        xyz, feats = scene, scene_colour
        first = None
        for stage in self.stages:
            xyz, feats = stage(xyz, feats)
            first = (xyz, feats) if first is None else first
        return *first, feats.amax(1, keepdim=True)

    def query_features(self, context: tuple[Tensor, Tensor, Tensor], queries: Tensor, query_colour: Tensor):
        """Returns (B, Q, width) features of the queries (B, Q, 3) + colours in a ``scene_context``."""
        centres, centre_features, glob = context
        local = interpolate(queries, centres, centre_features)
        return self.query(
            torch.cat([queries, query_colour, local, glob.expand(-1, queries.shape[1], -1)], -1)
        )

    def features(self, scene: Tensor, scene_colour: Tensor, queries: Tensor, query_colour: Tensor) -> Tensor:
        """Returns (B, Q, width) features of the queries from the scene cloud (B, N, 3) + colours."""
        return self.query_features(self.scene_context(scene, scene_colour), queries, query_colour)

    def forward(self, scene, scene_colour, queries, query_colour, target: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (reconstructed displacements (B, Q, horizon, 3), KL per query (B, Q)) of ``target``."""
        feature = self.features(scene, scene_colour, queries, query_colour)
        mean, log_var = self.to_latent(self.encoder(torch.cat([feature, target.flatten(2)], -1))).chunk(2, -1)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        kl = 0.5 * (mean**2 + log_var.exp() - 1 - log_var).sum(-1)
        return self.decode(feature, z), kl

    def decode(self, feature: Tensor, z: Tensor) -> Tensor:
        return self.decoder(torch.cat([feature, z], -1)).unflatten(-1, (self.config.horizon, 3))

    @torch.no_grad()
    def sample(
        self, scene, scene_colour, queries, query_colour, generator: torch.Generator | None = None,
        context: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> Tensor:  # fmt: skip
        """Returns (B, Q, horizon, 3) displacements for z ~ N(0, I); ``context`` (``scene_context``
        of the scene, which is then not read) saves encoding one scene again for every chunk of queries."""
        context = self.scene_context(scene, scene_colour) if context is None else context
        feature = self.query_features(context, queries, query_colour)
        z = torch.randn(*feature.shape[:-1], self.config.latent_dim, generator=generator).to(feature)
        return self.decode(feature, z)


def build_gflow(variant: str, num_frames: int) -> GFlowModel:
    """Returns a randomly initialised model of ``variant`` (a key of ``VARIANTS``) for T frames."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {sorted(VARIANTS)}, got {variant!r}")
    sizes = asdict(VARIANTS[variant])
    sizes["horizon"] = min(sizes["horizon"] or num_frames - 1, num_frames - 1)
    return GFlowModel(**sizes, variant=variant, num_frames=num_frames)


def gflow_loss(model: GFlowModel, batch: dict[str, Tensor], kl_weight: float = 1e-3) -> tuple[Tensor, dict]:
    """Returns the CVAE loss (L1 on displacements + ``kl_weight`` x KL) of a ``gflow_batch``."""
    recon, kl = model(
        batch["scene"], batch["scene_colour"], batch["queries"], batch["query_colour"], batch["target"]
    )
    l1 = F.l1_loss(recon, batch["target"])
    return l1 + kl_weight * kl.mean(), {"l1": l1.detach(), "kl": kl.mean().detach()}
