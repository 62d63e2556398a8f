"""The ``momap`` command: one subcommand per job, each a dataclass config with a ``run()`` method.

Every job's fields (and their docstrings) become flags, so the same dataclass drives a
notebook (``SimJob(...).run()``) and the shell (``momap sim --num-clips 10``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import tyro

#: subcommand -> "module:JobClass"; a job class is a dataclass with a ``run()`` method.
COMMANDS = {
    "sim": "momaplib.data:SimJob",
    "eval": "momaplib.evaluation:EvalJob",
}


def _load(target: str) -> type:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def main(argv: Sequence[str] | None = None) -> None:
    """Parses ``argv`` (default: the process arguments) and runs the chosen job."""
    jobs = {name: _load(target) for name, target in COMMANDS.items()}
    job = tyro.extras.subcommand_cli_from_dict(
        jobs, prog="momap", args=argv, config=(tyro.conf.OmitArgPrefixes,)
    )
    job.run()


if __name__ == "__main__":
    main()
