"""Apps for people: the interactive sampling panel (ipywidgets) over a ``MoMapPipeline``.

``SamplingPanel`` (``momaplib.ui.panel``) samples one scene at a time, in code (``generate``) or
from widgets (``panel()``); the figures and tables it shows come from ``momaplib.viz`` and
``momaplib.eval`` and are re-exported here with the result type.
"""

from momaplib.eval.samples import BEST_MARK, SamplingResult, best_of_n_table, metrics_table, per_scene_table
from momaplib.ui.panel import EXAMPLE_PREFIX, SIMULATED, SamplingPanel, find_example_scenes
from momaplib.viz.figures import sample_image_grid
from momaplib.viz.plot3d import figure_3d

__all__ = [
    "BEST_MARK",
    "EXAMPLE_PREFIX",
    "SIMULATED",
    "SamplingPanel",
    "SamplingResult",
    "best_of_n_table",
    "figure_3d",
    "find_example_scenes",
    "metrics_table",
    "per_scene_table",
    "sample_image_grid",
]
