"""Screenshots of the dock widgets with their output, for the documentation.

Run from the repository root (on a headless machine it re-runs itself under ``xvfb-run``)::

    python docs/screenshots.py [--weights FILE.safetensors] [--frames 1-100] [--out docs]

It opens napari, loads the plugin's sample data, opens the "Camera & PSF" widget (filled from the
sample's metadata) and saves ``widget_camera.png``; then runs the "KDE CNN" widget and saves
``widget_kde.png`` zoomed in on the raw frame, the super-resolution image, the CNN localizations
and the ground truth. Without the shipped weights (``weights/kde_cnn.safetensors``) and without
``--weights`` it uses an untrained model and says so in the file name
(``widget_kde_UNTRAINED-MODEL.png``). Then it runs the "Diffusion posterior" widget with the
shipped denoiser on ``--posterior-frames`` and saves ``widget_posterior.png`` (posterior mean and
localizations coloured by their uncertainty), and opens the "Uncertainty annotation" widget on the
posterior std, draws one region and saves ``widget_annotation.png`` (std map, thresholded and
drawn regions, statistics table).
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
SCREEN = "-screen 0 1600x1000x24"
WINDOW = (1600, 900)


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


def _wait(app, widget, timeout: float = 600.0) -> None:
    """Process Qt events until the widget's job is over."""
    deadline = time.monotonic() + timeout
    while widget.worker is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the {widget.TITLE} job did not finish in time")
        app.processEvents()
        time.sleep(0.01)


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
    viewer.window.resize(*WINDOW)
    app = QApplication.instance()
    viewer.open_sample(PLUGIN, "simulated_stack")
    raw = viewer.layers["Simulated SMLM stack"]

    dock, _camera = viewer.window.add_plugin_dock_widget(PLUGIN, "Camera & PSF")
    _settle(app)
    path = out / "widget_camera.png"
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path}")
    viewer.window.remove_dock_widget(dock)

    kde_dock, kde = viewer.window.add_plugin_dock_widget(PLUGIN, "KDE CNN")
    kde.frames.value, kde.device.value, kde.batch_size.value = args.frames, "auto", 16
    if weights:
        kde.weights.value = weights
    kde.start()
    _wait(app, kde)
    print(kde.status.value)
    if not kde.status.value.startswith("Done"):
        viewer.close()
        return 1
    viewer.dims.set_current_step(0, 0)
    pixel = float(raw.scale[-1])
    camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: viewer.scene.camera
    camera.center = (20 * pixel, 20 * pixel)  # a patch of filaments, ~30 x 30 camera pixels
    camera.zoom = 30.0 / pixel
    viewer.layers.selection.active = viewer.layers["Localizations (CNN)"]
    _settle(app, 1.0)
    path = out / f"widget_kde{note}.png"
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path}")
    viewer.window.remove_dock_widget(kde_dock)
    for name in ("Super-resolution (CNN)", "Localizations (CNN)"):
        viewer.layers[name].visible = False

    ok = _posterior_screenshots(viewer, app, raw, out, args.posterior_frames, camera)
    viewer.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return 0 if ok else 1


def _posterior_screenshots(viewer, app, raw, out: Path, frames: str, camera) -> bool:
    """Run the posterior widget, then annotate its std map; save one screenshot of each."""
    import numpy as np

    dock, posterior = viewer.window.add_plugin_dock_widget(PLUGIN, "Diffusion posterior")
    posterior.frames.value, posterior.device.value = frames, "auto"
    posterior.keep.value = 4  # default samples and steps
    posterior.start()
    _wait(app, posterior)
    print(posterior.status.value)
    if not posterior.status.value.startswith("Done"):
        return False
    first = int(frames.split("-")[0]) - 1
    viewer.dims.set_current_step(viewer.dims.ndim - 3, first)
    pixel = float(raw.scale[-1])
    camera.center = (20 * pixel, 20 * pixel)  # new layers (a new slider) reset the view
    camera.zoom = 30.0 / pixel
    raw.visible = False
    viewer.layers["Posterior std"].visible = False
    viewer.layers.selection.active = viewer.layers["Localizations"]
    _settle(app, 1.0)
    path = out / "widget_posterior.png"
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path}")
    viewer.window.remove_dock_widget(dock)

    _, annotation = viewer.window.add_plugin_dock_widget(PLUGIN, "Uncertainty annotation")
    viewer.layers["Posterior mean"].visible = False
    viewer.layers["Posterior std"].visible = True
    viewer.layers["Ground truth"].visible = False
    shapes = annotation.start_drawing()
    # a drawn region (polygon, in the std map's data coordinates = fine pixels) on this frame
    centre = np.array(camera.center[-2:]) / (pixel / 4)
    offsets = np.array([[-14, -10], [-16, 8], [-2, 16], [12, 10], [10, -12]], dtype=float)
    shapes.add_polygons([np.column_stack([np.zeros(5), centre + offsets])])
    shapes.mode = "pan_zoom"
    annotation.update_regions()  # at the widget's default threshold
    annotation.table.selectRow(0)
    camera.center = (20 * pixel, 20 * pixel)
    camera.zoom = 30.0 / pixel
    viewer.layers.selection.active = viewer.layers["Uncertain regions"]
    _settle(app, 1.0)
    path = out / "widget_annotation.png"
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path}")
    print(annotation.status.value)
    return True


if __name__ == "__main__":
    raise SystemExit(main())
