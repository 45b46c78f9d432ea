"""Screenshots of the "SMLM" dock at 1920 x 1080, one per step, for the documentation.

Run from the repository root (on a headless machine it re-runs itself under ``xvfb-run`` with a
1920 x 1080 screen)::

    python docs/screenshots.py [--weights FILE.safetensors] [--denoiser FILE.safetensors]
                               [--frames 1-100] [--posterior-frames 1-4] [--out docs]

It opens napari at 1920 x 1080, loads the plugin's sample data and opens the "SMLM" dock, then
saves: ``widget_camera.png`` (Camera & PSF tab, filled from the file metadata);
``widget_progress.png`` (KDE CNN tab while it runs: bar, seconds per frame, time left);
``widget_kde.png`` (its result: super-resolution image and localizations, zoomed in);
``widget_posterior.png`` (Posterior tab: posterior mean and localizations coloured by their
uncertainty); ``widget_filters.png`` (Filter & export tab: histograms, the localizations with
an uncertainty above the median filtered out); ``widget_annotation.png`` (Annotation tab on the
posterior std: thresholded and drawn regions, statistics). Without the shipped KDE CNN weights
and without ``--weights`` it uses an untrained model and says so in the file name
(``widget_kde_UNTRAINED-MODEL.png``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLUGIN = "napari-smlm-diffusion"
SCREEN = "-screen 0 1920x1080x24"
WINDOW = (1920, 1080)


def _rerun_under_xvfb() -> None:
    """Without a display, run this script again under xvfb-run with a large enough screen."""
    if os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM") or not shutil.which(
            "xvfb-run"):
        return
    command = ["xvfb-run", "-a", "-s", SCREEN, sys.executable, *sys.argv]
    raise SystemExit(subprocess.call(command))


def _untrained_weights(folder: Path) -> Path:
    """A freshly initialised KDE CNN of the shipped architecture, with a model card."""
    import torch

    from napari_smlm_diffusion.models.kde_cnn import KdeCnn
    from napari_smlm_diffusion.pretrained import save_weights

    torch.manual_seed(0)
    model = KdeCnn()
    path = folder / "untrained.safetensors"
    save_weights(model, path, {"name": "untrained", "architecture": model.config,
                               "detection_threshold": 0.3, "upsampling": 4})
    return path


def _wait(app, widget, timeout: float = 600.0, during=None) -> None:
    """Process Qt events until the widget's job is over; call ``during()`` once, at the first
    status line with a time left in it."""
    deadline = time.monotonic() + timeout
    while widget.worker is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the {widget.TITLE} job did not finish in time")
        app.processEvents()
        if during is not None and widget.status.value.endswith("left"):
            during()
            during = None
        time.sleep(0.01)


def _save(viewer, app, path: Path, seconds: float = 1.0) -> None:
    """Let napari draw, then save a screenshot of the whole window."""
    _settle(app, seconds)
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path}")


def _zoom(viewer, raw) -> None:
    """Centre on a patch of filaments, about 30 x 30 camera pixels."""
    pixel = float(raw.scale[-1])
    camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: viewer.scene.camera
    camera.center = (20 * pixel, 20 * pixel)
    camera.zoom = 30.0 / pixel


def _settle(app, seconds: float = 0.5) -> None:
    """Let napari draw (canvas, docks, notifications)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    """Make the screenshots; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="KDE CNN weights (.safetensors with its model card); "
                        "default: the shipped ones, else an untrained model")
    parser.add_argument("--denoiser", help="denoiser weights (.safetensors with its model card); "
                        "default: the shipped ones")
    parser.add_argument("--frames", default="1-100", help="frames to run, 1-based (default all)")
    parser.add_argument("--posterior-frames", default="1-4",
                        help="frames of the posterior run, 1-based (default 1-4)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent),
                        help="output folder (default: docs/)")
    args = parser.parse_args(argv)
    _rerun_under_xvfb()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_smlm_diffusion.pretrained import weights_dir
    from napari_smlm_diffusion.weights import KDE_CNN_NAME

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="smlm-screenshots-"))
    os.environ.setdefault("NAPARI_SMLM_DIFFUSION_CONFIG_DIR", str(scratch))  # user's untouched
    shipped = weights_dir() / f"{KDE_CNN_NAME}.safetensors"
    weights, note = args.weights, ""
    if weights is None and not shipped.is_file():
        weights, note = str(_untrained_weights(scratch)), "_UNTRAINED-MODEL"
        print("shipped weights not found: using an UNTRAINED model (see the file name)")

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.showMaximized()
    viewer.window.resize(*WINDOW)
    app = QApplication.instance()
    viewer.open_sample(PLUGIN, "simulated_stack")
    raw = viewer.layers["Simulated SMLM stack"]
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "SMLM")
    dock.show_tab("Camera & PSF")
    _save(viewer, app, out / "widget_camera.png", 0.5)

    kde = dock.show_tab("KDE CNN")
    kde.frames.value, kde.device.value, kde.batch_size.value = args.frames, "auto", 16
    if weights:
        kde.weights.value = weights
    kde.start()
    _wait(app, kde, during=lambda: _save(viewer, app, out / "widget_progress.png", 0.2))
    print(kde.status.value)
    if not kde.status.value.startswith("Done"):
        viewer.close()
        return 1
    _zoom(viewer, raw)
    _save(viewer, app, out / f"widget_kde{note}.png")
    for name in ("Super-resolution (CNN)", "Localizations (CNN)"):
        viewer.layers[name].visible = False

    ok = _posterior_screenshots(viewer, app, dock, raw, out, args)
    viewer.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return 0 if ok else 1


def _posterior_screenshots(viewer, app, dock, raw, out: Path, args) -> bool:
    """Run the posterior, filter its localizations, annotate its std map; one screenshot each."""
    import numpy as np

    posterior = dock.show_tab("Posterior")
    posterior.frames.value, posterior.device.value = args.posterior_frames, "auto"
    posterior.keep.value = 4  # default samples and steps
    if args.denoiser:
        posterior.weights.value = args.denoiser
    posterior.start()
    _wait(app, posterior)
    print(posterior.status.value)
    if not posterior.status.value.startswith("Done"):
        return False
    _zoom(viewer, raw)  # new layers (a new slider) reset the view
    raw.visible = False
    _save(viewer, app, out / "widget_posterior.png")

    filters = dock.show_tab("Filter & export")
    points = viewer.layers["Localizations"]
    filters.layer.value = points
    uncertainty = points.features["uncertainty_nm"].to_numpy(dtype=float)
    filters.set_range("uncertainty_nm", float(np.nanmin(uncertainty)),
                      float(np.nanmedian(uncertainty)))
    viewer.layers.selection.active = points
    _save(viewer, app, out / "widget_filters.png")
    filters.show_all()

    annotation = dock.show_tab("Annotation")
    viewer.layers["Posterior mean"].visible = False
    viewer.layers["Posterior std"].visible = True
    viewer.layers["Ground truth"].visible = False
    camera = getattr(viewer, "scene", viewer).camera
    pixel = float(raw.scale[-1])
    shapes = annotation.start_drawing()
    # a drawn region (polygon, in the std map's data coordinates = fine pixels) on this frame
    centre = np.array(camera.center[-2:]) / (pixel / 4)
    offsets = np.array([[-14, -10], [-16, 8], [-2, 16], [12, 10], [10, -12]], dtype=float)
    shapes.add_polygons([np.column_stack([np.zeros(5), centre + offsets])])
    shapes.mode = "pan_zoom"
    annotation.update_regions()  # at the widget's default threshold
    annotation.table.selectRow(0)
    _zoom(viewer, raw)
    viewer.layers.selection.active = viewer.layers["Uncertain regions"]
    _save(viewer, app, out / "widget_annotation.png")
    print(annotation.status.value)
    return True


if __name__ == "__main__":
    raise SystemExit(main())
