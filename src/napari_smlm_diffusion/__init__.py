"""napari-smlm-diffusion: SMLM with a KDE CNN and a conditional diffusion posterior."""

__version__ = "0.1.0"
