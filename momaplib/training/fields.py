"""Ranges of the training jobs' fields, in one place, and the checks that name a bad one.

``TrainConfig.validate`` checks the optimisation loop; ``check_job_fields`` checks a job (the
dataclass behind ``momap train-*``): every ``Literal`` field against its choices, and every field
named in ``FIELD_RANGES`` against its range, so a bad value fails with the field, its flag and
the expected range before anything is loaded or written, not minutes later inside a library.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from typing import Any

#: Job fields (by name, in any job) -> ``check_number`` bounds. None is accepted where the field
#: allows it (e.g. ``max_clips``: all clips); a tuple is checked element by element.
FIELD_RANGES: dict[str, dict[str, Any]] = {
    **{
        name: {"minimum": 0}  # loss weights and guidance: 0 turns a term off
        for name in (
            "kl_weight",
            "visible_weight",
            "velocity_weight",
            "displacement_weight",
            "motion_weight",
            "guidance_scale",
        )
    },
    "ema_decay": {"minimum": 0, "below": 1},  # 0: no EMA; 1 would never move
    "text_dropout": {"minimum": 0, "maximum": 1},  # a probability
    "num_val_clips": {"minimum": 0, "integer": True},  # 0: no validation
    "num_train_timesteps": {"minimum": 2, "integer": True},
    **{
        name: {"minimum": 1, "integer": True}
        for name in (
            "val_samples",
            "val_steps",
            "encode_batch_size",
            "grounder_steps",
            "layers_per_block",
            "norm_num_groups",
            "latent_channels",
            "max_clips",
            "block_out_channels",
        )
    },
}


def field_name(owner: str, name: str) -> str:
    """Returns ``"Owner.name (--name)"``: how errors name a field for Python and shell users alike."""
    return f"{owner}.{name} (--{name.replace('_', '-')})"


def check_number(
    owner: str,
    name: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    integer: bool = False,
) -> None:
    """Raises ``ValueError`` naming ``owner.name`` (and its flag) unless ``value`` is a finite number
    (an integer when ``integer``) with ``minimum <= value <= maximum`` and ``above < value < below``."""
    bounds = [f">= {minimum}" if minimum is not None else "", f"> {above}" if above is not None else ""]
    bounds += [f"<= {maximum}" if maximum is not None else "", f"< {below}" if below is not None else ""]
    expected = ("an integer " if integer else "a finite number ") + " and ".join(b for b in bounds if b)
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = number and math.isfinite(value) and (not integer or isinstance(value, numbers.Integral))
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    ok = ok and (above is None or value > above) and (below is None or value < below)
    if not ok:
        raise ValueError(f"{field_name(owner, name)}: expected {expected.strip()}, got {value!r}")


def check_choice(owner: str, name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raises ``ValueError`` naming ``owner.name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{field_name(owner, name)}: expected one of {list(choices)}, got {value!r}")


def check_job_fields(job: Any) -> None:
    """Checks every field of a job dataclass: ``Literal`` fields against their choices, fields of
    ``FIELD_RANGES`` against their ranges, nested configs through their own ``validate()``."""
    owner = type(job).__name__
    hints = typing.get_type_hints(type(job))
    for field in dataclasses.fields(job):
        value = getattr(job, field.name)
        if hasattr(value, "validate") and dataclasses.is_dataclass(value):
            value.validate()
        choices = _literal_choices(hints.get(field.name))
        if choices and value is not None:
            check_choice(owner, field.name, value, choices)
        bounds = FIELD_RANGES.get(field.name)
        if bounds is None or value is None:
            continue
        if isinstance(value, tuple | list):
            if not value:
                raise ValueError(
                    f"{field_name(owner, field.name)}: expected at least one value, got {value!r}"
                )
            for item in value:
                check_number(owner, field.name, item, **bounds)
        else:
            check_number(owner, field.name, value, **bounds)


def _literal_choices(hint: Any) -> tuple[Any, ...]:
    """Returns the values of a ``Literal[...]`` hint (also inside ``Optional``), else ``()``."""
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(v for arg in typing.get_args(hint) for v in _literal_choices(arg))
    return ()
