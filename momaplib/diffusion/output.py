"""What a MoMap pipeline call returns: the samples as metric arrays and, on demand, as ``MoMap`` records."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
from diffusers.utils import BaseOutput

from momaplib.momap import MoMap


class LazyMoMaps(Sequence[MoMap]):
    """The N samples of one call as ``MoMap`` records, each built the first time it is read.

    The trajectories are ``MoMapPipelineOutput.xyz`` already (metres, checked finite on the
    device); a record adds the scene's fields and validates all of them, about 8 ms at 128x128,
    T = 32 on one CPU core: a caller that needs only the array (a benchmark, an evaluation) does
    not pay for N records it never reads. Records are cached; the object pickles (no closures).
    """

    def __init__(self, xyz: np.ndarray, scene: dict[str, Any], prompts: Sequence[str], meta: dict[str, Any]):
        self._xyz, self._prompts, self._meta = xyz, list(prompts), meta
        self._scene = {key: scene[key] for key in ("valid", "rgb", "instance", "K")}
        self._cache: dict[int, MoMap] = {}

    def __len__(self) -> int:
        return len(self._prompts)

    @overload
    def __getitem__(self, index: int) -> MoMap: ...
    @overload
    def __getitem__(self, index: slice) -> list[MoMap]: ...
    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = range(len(self))[index]  # negative indices; IndexError beyond the end
        if i not in self._cache:
            valid = self._scene["valid"]
            T = self._xyz.shape[1]
            self._cache[i] = MoMap(
                xyz=self._xyz[i],
                valid=valid,
                visible=np.broadcast_to(valid, (T, *valid.shape)).copy(),  # no trajectory, never seen
                rgb=self._scene["rgb"],
                instance=self._scene["instance"],
                K=self._scene["K"],
                ref_from_cam=np.tile(np.eye(4, dtype=np.float32), (T, 1, 1)),
                prompt=self._prompts[i],
                meta=dict(self._meta),
            )
        return self._cache[i]

    def __iter__(self) -> Iterator[MoMap]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"LazyMoMaps({len(self)} samples of shape {self._xyz.shape[1:]})"


@dataclass
class MoMapPipelineOutput(BaseOutput):
    """Samples of one call: ``momaps`` (N MoMap records, metres; built when read, ``LazyMoMaps``)
    and ``xyz`` (N, T, H, W, 3).

    ``grounding`` (pipelines with a ``grounder``): ``ids`` (K,) the scene's instance ids and
    ``probabilities`` (N, K), per sample, that its prompt names each instance (zeros without a
    prompt).

    ``num_invalid``: input pixels without geometry (depth/XYZ 0, NaN, inf or behind the camera);
    they have ``valid`` False (no trajectory, xyz 0) in every MoMap, whose ``meta["num_invalid"]``
    repeats the count.
    """

    momaps: Sequence[MoMap]
    xyz: np.ndarray
    grounding: dict | None = None
    num_invalid: int = 0
    dsl: object | None = None  # the MotionDSL the samples were conditioned on (DSL pipelines)


__all__ = ["LazyMoMaps", "MoMapPipelineOutput"]
