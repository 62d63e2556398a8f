"""The ``momap`` command: one subcommand per job, each a dataclass config with a ``run()`` method.

Every job's fields (and their docstrings) become flags, so the same dataclass drives a
notebook (``SimJob(...).run()``) and the shell (``momap sim --num-clips 10``).
Only the chosen job's module is imported, so ``momap sim`` does not pay for diffusers.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

import tyro

#: subcommand -> "module:JobClass"; a job class is a dataclass with a ``run()`` method.
COMMANDS = {
    "sim": "momaplib.data:SimJob",
    "merge": "momaplib.data:MergeJob",
    "eval": "momaplib.eval:EvalJob",
    "recon": "momaplib.recon.runner:ReconJob",
    "train-image-vae": "momaplib.vae.train:TrainImageVAEJob",
    "train-vae": "momaplib.vae.train:TrainVAEJob",
    "train-diffusion": "momaplib.diffusion.train:TrainDiffusionJob",
    "distill": "momaplib.diffusion.distill:DistillJob",
    "train-image-diffusion": "momaplib.diffusion.image_prior:TrainImageDiffusionJob",
    "train-video": "momaplib.video.train:TrainVideoJob",
    "train-gflow": "momaplib.baselines.gflow_train:TrainGFlowJob",
    "video": "momaplib.videos:VideoJob",
}


def _load(target: str) -> type:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def main(argv: Sequence[str] | None = None) -> None:
    """Parses ``argv`` (default: the process arguments) and runs the chosen job.

    Errors in what the user asked for (missing files, bad settings, malformed data: the kit
    raises ``ValueError`` subclasses for these) are printed as one line and exit with status 2;
    set ``MOMAP_DEBUG=1`` to see the traceback. Anything else keeps its traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        name = args[0]
        job = tyro.cli(
            _load(COMMANDS[name]), prog=f"momap {name}", args=args[1:], config=(tyro.conf.OmitArgPrefixes,)
        )
    else:  # no or unknown subcommand: build the full parser for help and the error message
        jobs = {name: _load(target) for name, target in COMMANDS.items()}
        job = tyro.extras.subcommand_cli_from_dict(
            jobs, prog="momap", args=args, config=(tyro.conf.OmitArgPrefixes,)
        )
    try:
        job.run()
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get("MOMAP_DEBUG"):
            raise
        print(f"momap {args[0] if args else ''}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
