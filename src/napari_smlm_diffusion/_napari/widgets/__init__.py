"""Dock widgets (npe2 widget contributions): camera & PSF settings, the KDE CNN and diffusion
posterior runners, and the uncertainty annotation.

Modules
-------
settings
    The one shared, persisted camera/PSF settings object (psygnal-evented).
metadata
    Camera values found in a layer's metadata.
estimate
    Baseline estimate from dark pixels of a stack.
layer_choice
    Combo boxes of input image layers and of layers of a kind (preferred ones first).
texts
    Read-only text rows (status, messages).
camera_widget
    "Camera & PSF" dock widget.
jobs
    Typed messages of the worker-thread jobs and the guard turning errors into one line.
job_widget
    Base of the widgets that run a job over frames in a worker thread (Run/Cancel, progress).
outputs
    Result layers aligned over the raw layer, replaced in place on re-runs.
kde_job, kde_layers, kde_widget
    "KDE CNN": job, result layers, dock widget.
posterior_job, posterior_layers, posterior_widget
    "Diffusion posterior": job, result layers, dock widget.
region_table
    Qt table of per-region statistics.
annotation_widget
    "Uncertainty annotation" dock widget (computations in ``napari_smlm_diffusion.annotate``).
"""
