"""Standard SMLM post-processing of localization tables: drift correction (RCC), merging of
blinks, rendering, FRC resolution and the Picasso HDF5 format.

One module per step; all work on the in-memory table of :mod:`napari_smlm_diffusion.io` (nm,
0-based frames) and never import napari or Qt.
"""
