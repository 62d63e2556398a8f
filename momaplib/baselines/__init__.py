"""Baselines: predictors that produce N generated MoMaps per input for the metric tables.

``momaplib.baselines.simple`` holds the reference predictors (``static``, ``gt``, ``gt+noise``,
``gt_wrong_object``, ``gt_time_shift``, ``constant_velocity``, ``vae_reconstruction``);
``momaplib.baselines.momap_vae`` names the paper's MoMap-VAE baseline (a conditional VAE trained
by the diffusion job). Every predictor shares the ``Predictor`` call signature of
``momaplib.metrics``.
"""

from momaplib.baselines.simple import PREDICTORS, get_predictor
from momaplib.metrics.best_of_n import Predictor

__all__ = ["PREDICTORS", "Predictor", "get_predictor"]
