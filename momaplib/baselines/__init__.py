"""Baselines: predictors that produce N generated MoMaps per input for the metric tables.

``momaplib.baselines.simple`` holds the reference predictors (``static``, ``gt``, ``gt+noise``,
``gt_wrong_object``, ``gt_time_shift``, ``constant_velocity``); learned baselines of later
issues add their own modules here and share the ``Predictor`` call signature.
"""

from momaplib.baselines.simple import PREDICTORS, Predictor, get_predictor

__all__ = ["PREDICTORS", "Predictor", "get_predictor"]
