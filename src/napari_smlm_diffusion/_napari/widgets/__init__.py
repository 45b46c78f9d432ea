"""Dock widgets: camera & PSF settings and the KDE CNN runner (npe2 widget contributions).

Modules
-------
settings
    The one shared, persisted camera/PSF settings object (psygnal-evented).
metadata
    Camera values found in a layer's metadata.
estimate
    Baseline estimate from dark pixels of a stack.
layer_choice
    Combo box of input image layers.
texts
    Read-only text rows (status, messages).
camera_widget
    "Camera & PSF" dock widget.
kde_job
    The KDE CNN job run in a worker thread (typed messages, no Qt).
kde_layers
    Result layers aligned over the raw layer, replaced in place on re-runs.
kde_widget
    "KDE CNN" dock widget.
"""
