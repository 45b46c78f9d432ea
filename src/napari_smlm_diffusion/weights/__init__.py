"""Shipped weights (package data): names of the models."""

KDE_CNN_NAME = "kde_cnn"
KDE_CNN_V1_NAME = "kde_cnn_v1"  # the first release's (narrow training ranges)
KDE_CNN_FAST_NAME = "kde_cnn_fast"  # width 16: about half the arithmetic, a little less accurate
DENOISER_NAME = "denoiser"
