"""MoMap compression (paper §3.3.2): the MoMap VAE (``model``), its training jobs (``train``) and
the analyses of notebook 02 (``analysis``: what inflation changes, inflated vs scratch, the errors
of still and moving points).

``momaplib.vae.MoMapVAE`` is the documented name of the model (saved pipelines refer to it there);
the trainers (``momap train-image-vae``, ``momap train-vae``) are in ``momaplib.vae.train``.
"""

# diffusers' pipeline loader looks up the loadable base classes (``ModelMixin``) in the module a
# saved pipeline names (``momaplib.vae`` in the bundled model_index.json), so it is imported here.
from diffusers import ModelMixin  # noqa: F401

from momaplib.vae.model import (
    BLOCK_OUT_CHANNELS,
    DOWNSAMPLE,
    LATENT_CHANNELS,
    LAYERS_PER_BLOCK,
    MoMapLatents,
    MoMapVAE,
    build_image_vae,
    inflate_from_image_vae,
    load_image_vae,
)
from momaplib.vae.raw import RawMoMapCodec, load_momap_codec

__all__ = [
    "BLOCK_OUT_CHANNELS",
    "DOWNSAMPLE",
    "LATENT_CHANNELS",
    "LAYERS_PER_BLOCK",
    "MoMapLatents",
    "MoMapVAE",
    "RawMoMapCodec",
    "build_image_vae",
    "inflate_from_image_vae",
    "load_image_vae",
    "load_momap_codec",
]
