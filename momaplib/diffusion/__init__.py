"""MoMap diffusion (paper §3.3.3): conditioning, the UNet, ``MoMapPipeline`` and training.

Import the parts from their modules (``momaplib.diffusion.pipeline`` etc.); this package
imports nothing heavy on its own.
"""
