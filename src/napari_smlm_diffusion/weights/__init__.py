"""Shipped weights (package data): names of the models."""

KDE_CNN_NAME = "kde_cnn"
DENOISER_NAME = "denoiser"
