"""The MoMap-VAE baseline of paper §4.1 (a conditional VAE that outputs the MoMap in one step).

The model is trained and sampled by the same job and pipeline code as the diffusion model, so it
lives in ``momaplib.diffusion.cvae`` (model) and ``momaplib.diffusion.pipeline``
(``MoMapVAEPipeline``); this module is its name among the baselines, and the module that
pipelines saved by earlier versions of the kit name in their ``model_index.json``.
"""

from momaplib.diffusion.cvae import ConditionalMoMapVAE, kl_divergence
from momaplib.diffusion.pipeline import MoMapVAEPipeline

__all__ = ["ConditionalMoMapVAE", "MoMapVAEPipeline", "kl_divergence"]
