"""Figures of MoMaps and MoMap-Sim clips (paper §3.1, Fig. 2-A) for the notebooks and the demo.

Matplotlib helpers return a ``matplotlib.figure.Figure``, the 3D view returns a plotly
``go.Figure``; ``save_figure`` writes either kind. Inputs are MoMap records (or anything with a
``.momap``, such as a ``momaplib.sim.Clip``) and numpy arrays with the record layouts of
DESIGN.md: ``xyz (T, H, W, 3)`` metres in the reference camera frame (x right, y down,
z forward), ``valid (H, W)``, ``rgb (H, W, 3) uint8``, ``instance (H, W)`` with 0 = background.

Colour conventions shared by every figure, so that panels can be compared:
- XYZ as colour (``xyz_to_rgb``): R = x (left -> right), G = y (up -> down), B = z (near -> far),
  each axis mapped linearly from one range fixed for the *whole* MoMap (``xyz_color_range``),
  never per frame, so a point that keeps its colour across panels did not move.
- Instances: id ``i`` always gets ``INSTANCE_PALETTE[(i - 1) % len]``; background stays uncoloured.

Modules: ``colors`` (the colour conventions), ``figures`` (matplotlib: trajectory images, clip
strips, instances, a result's samples), ``camera`` (camera disentanglement, paper §3.1),
``plot3d`` (plotly 3D trajectories), ``animation`` (GIF/MP4 and ``save_figure``), ``metrics``
(figures of the metric definitions, paper §4.2), ``recon`` (figures of a reconstruction run,
paper §3.2), ``sensor`` (sensor-model observations against the exact clip), ``diffusion``
(conditioning, latents and training of the diffusion model, paper §3.3.3), ``video`` (rendered
and completed videos, paper §3.4.1), ``distribution`` (GT futures and samples of one scene
overlaid, the guidance and coverage curves) and ``generalisation`` (the generalisation suite's
errors per case, old vs new). Every figure of the kit is drawn here; notebooks
and apps only call these.
"""

from momaplib.viz.animation import save_clip_animation, save_figure
from momaplib.viz.camera import background_mask, camera_disentanglement, plot_camera_disentanglement
from momaplib.viz.colors import (
    ANIMATION_SUFFIXES,
    INSTANCE_PALETTE,
    INVALID_COLOR,
    XYZ_PERCENTILES,
    colorize_depth,
    colorize_instances,
    instance_colors,
    xyz_color_range,
    xyz_to_rgb,
)
from momaplib.viz.diffusion import (
    plot_condition_latents,
    plot_conditioning_stack,
    plot_forward_noising,
    plot_grounding_maps,
    plot_latent_channels,
    plot_loss_curves,
    plot_max_displacement,
)
from momaplib.viz.distribution import plot_coverage_curve, plot_futures_3d, plot_guidance_curve
from momaplib.viz.dsl import plot_dsl
from momaplib.viz.figures import (
    instance_overlay,
    method_comparison_grid,
    overlay_instances,
    plot_clip_strip,
    sample_image_grid,
    trajectory_image_grid,
)
from momaplib.viz.generalisation import load_suite_results, plot_generalisation
from momaplib.viz.metrics import (
    AXIS_WORDS,
    plot_distance_signature,
    plot_dtw_alignment,
    plot_local_distances,
    plot_moving_masks,
    plot_paired_differences,
    plot_quantized_directions,
    plot_steps_tradeoff,
)
from momaplib.viz.plot3d import (
    LEGEND,
    REFERENCE_VIEW,
    figure_3d,
    plot_trajectories_3d,
    subsample_pixels,
    time_controls,
)
from momaplib.viz.recon import plot_camera_trajectory, plot_depth, plot_infill, plot_static_split, plot_tracks
from momaplib.viz.sensor import plot_depth_noise, plot_sensor_frames
from momaplib.viz.vae import (
    plot_inflation_diagram,
    plot_reconstruction,
    plot_reconstruction_errors,
    plot_vae_runs,
)
from momaplib.viz.video import plot_video_rows, video_html, video_panels

__all__ = [
    "ANIMATION_SUFFIXES",
    "AXIS_WORDS",
    "INSTANCE_PALETTE",
    "INVALID_COLOR",
    "LEGEND",
    "REFERENCE_VIEW",
    "XYZ_PERCENTILES",
    "background_mask",
    "camera_disentanglement",
    "colorize_depth",
    "colorize_instances",
    "figure_3d",
    "instance_colors",
    "instance_overlay",
    "load_suite_results",
    "method_comparison_grid",
    "overlay_instances",
    "plot_camera_disentanglement",
    "plot_camera_trajectory",
    "plot_clip_strip",
    "plot_condition_latents",
    "plot_conditioning_stack",
    "plot_coverage_curve",
    "plot_depth",
    "plot_depth_noise",
    "plot_distance_signature",
    "plot_dsl",
    "plot_dtw_alignment",
    "plot_forward_noising",
    "plot_futures_3d",
    "plot_generalisation",
    "plot_grounding_maps",
    "plot_guidance_curve",
    "plot_infill",
    "plot_inflation_diagram",
    "plot_latent_channels",
    "plot_local_distances",
    "plot_loss_curves",
    "plot_max_displacement",
    "plot_moving_masks",
    "plot_paired_differences",
    "plot_quantized_directions",
    "plot_reconstruction",
    "plot_reconstruction_errors",
    "plot_sensor_frames",
    "plot_static_split",
    "plot_steps_tradeoff",
    "plot_tracks",
    "plot_trajectories_3d",
    "plot_vae_runs",
    "plot_video_rows",
    "sample_image_grid",
    "save_clip_animation",
    "save_figure",
    "subsample_pixels",
    "time_controls",
    "trajectory_image_grid",
    "video_html",
    "video_panels",
    "xyz_color_range",
    "xyz_to_rgb",
]
