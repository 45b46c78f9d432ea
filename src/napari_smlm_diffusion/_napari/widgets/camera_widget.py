"""The "Camera & PSF" dock widget: the camera of the chosen image layer (see :mod:`.layer_camera`).

Choosing a layer shows its camera and never changes it; typing, a preset, "From file metadata"
and the baseline estimate change the chosen layer's camera only. "Save as default" stores the
values for stacks without camera metadata (this and later sessions); nothing else is saved.
Without an image layer the fields edit the defaults of this session.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton

from ...camera import PRESETS, CameraError
from .estimate import estimate_baseline
from .layer_camera import CAMERA_CHANGED, camera_of, layer_camera, reset_from_file, set_layer_camera
from .layer_choice import input_layer_combo, same_layer
from .settings import CUSTOM, PRESET_FIELDS, VALUE_FIELDS, config_path, get_settings, preset_of
from .texts import show_text, text_label

if TYPE_CHECKING:
    import napari

# field: (label, minimum, maximum, step, tooltip)
FIELDS: dict[str, tuple[str, float, float, float, str]] = {
    "baseline": ("Baseline (ADU)", -1e6, 1e7, 0.1,
                 "Camera offset in ADU (camera counts): the reading of a pixel that receives "
                 "no light. From the camera's test sheet or dark frames"),
    "sensitivity": ("Sensitivity (e-/ADU)", 0.0, 1e4, 0.001,
                    "Conversion factor in electrons per ADU at the read-out (e-/ADU), from the "
                    "camera's test sheet"),
    "em_gain": ("EM gain", 0.0, 1e5, 0.1,
                "Electron-multiplying gain (dimensionless, x): 1 for sCMOS and CCD; the "
                "calibrated gain for EMCCD"),
    "quantum_efficiency": ("Quantum efficiency", 0.0, 1.0, 0.01,
                           "Fraction (0-1, dimensionless) of the arriving photons that are "
                           "detected at the emission wavelength"),
    "read_noise": ("Read noise (e- rms)", 0.0, 1e5, 0.01,
                   "Read noise in electrons rms (e-) at the read-out, before the EM gain"),
    "pixel_size": ("Pixel size (nm)", 0.0, 1e6, 0.1,
                   "Camera pixel size in the sample plane in nm (camera pixel / "
                   "magnification); not changed by a preset"),
    "psf_sigma_nm": ("PSF sigma (nm)", 0.0, 1e6, 0.1,
                     "Standard deviation of the Gaussian PSF in the sample plane in nm "
                     "(about 0.21 x wavelength / NA)"),
}


class CameraWidget(Container):
    """Camera and PSF of the chosen image layer (see the module docstring).

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (injected by napari).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._defaults = get_settings()
        self.layer, self._watcher = input_layer_combo(napari_viewer, "Image layer")
        self.preset = ComboBox(label="Preset", choices=[*PRESETS, CUSTOM],
                               tooltip="Fill the camera values of a typical camera (baseline "
                               "ADU, e-/ADU, EM gain, QE, read noise e-); pixel size and PSF "
                               "are kept")
        self.fields = {key: _spin_box(key) for key in VALUE_FIELDS}
        self.from_layer = PushButton(text="From file metadata",
                                     tooltip="Set the camera stored in the layer's file "
                                     "metadata again (replaces the values typed for this layer)")
        self.estimate = PushButton(text="Estimate baseline",
                                   tooltip="Baseline (ADU) from the dark pixels of up to 16 "
                                   "frames (needs dark frames or an unlit part of the sensor)")
        self.save_default = PushButton(text="Save as default",
                                       tooltip="Use these values for stacks without camera "
                                       "metadata, now and in later sessions (saved in "
                                       f"{config_path()})")
        self.source = text_label("Source", "Where the chosen layer's camera came from")
        self.message = text_label("")
        buttons = Container(layout="horizontal", labels=False,
                            widgets=[self.from_layer, self.estimate])
        buttons.margins = (0, 0, 0, 0)
        self.extend([self.layer, self.preset, *self.fields.values(), buttons, self.save_default,
                     self.source, self.message])

        for key, widget in self.fields.items():
            widget.changed.connect(partial(self._on_edit, key))
        self.preset.changed.connect(self._on_preset)
        self.layer.changed.connect(self._on_layer)
        self.from_layer.changed.connect(self.fill_from_layer)
        self.estimate.changed.connect(self.estimate_baseline)
        self.save_default.changed.connect(self.save_as_default)
        CAMERA_CHANGED.connect(self._on_camera_changed)
        self._defaults.events.all.connect(self._on_defaults_changed)
        self.native.destroyed.connect(self._disconnect)
        self._show()

    # -- the chosen layer's camera -> widgets ---------------------------------------------------
    def current(self) -> tuple[dict[str, float], str]:
        """Values and source of the chosen layer's camera (the defaults without a layer)."""
        layer = self.layer.value
        if layer is None:
            return self._defaults.values(), self._defaults.source
        return layer_camera(layer, self._defaults)

    def _show(self, _info: Any = None) -> None:
        values, source = self.current()
        layer = self.layer.value
        try:
            for key, widget in self.fields.items():
                with widget.changed.blocked():
                    widget.value = values[key]
            with self.preset.changed.blocked():
                self.preset.value = preset_of(values)
            self.source.value = (f"Layer '{layer.name}': {source}" if layer is not None
                                 else f"No image layer: session defaults ({source})")
        except RuntimeError:  # the Qt widgets are gone (widget closed)
            self._disconnect()

    def _on_layer(self, _layer: Any = None) -> None:
        self._say("")
        self._show()

    def _on_camera_changed(self, layer: Any) -> None:
        if same_layer(layer, self.layer.value):
            self._show()

    def _on_defaults_changed(self, _info: Any = None) -> None:
        if self.layer.value is None:
            self._show()

    def _disconnect(self, *_args: Any) -> None:
        CAMERA_CHANGED.disconnect(self._on_camera_changed, missing_ok=True)
        self._defaults.events.all.disconnect(self._on_defaults_changed, missing_ok=True)
        self._watcher.close()

    def _say(self, text: str, error: bool = False) -> None:
        show_text(self.message, text, error)

    # -- widgets -> the chosen layer's camera ---------------------------------------------------
    def _apply(self, values: dict[str, float], source: str, done: str = "") -> bool:
        layer = self.layer.value
        try:
            if layer is None:
                self._defaults.apply(values, source)
            else:
                set_layer_camera(layer, values, source, self._defaults)
        except CameraError as exc:
            # The fields go back to the values in force, which the other widgets use: what the
            # user sees is what runs, and the message says what was refused.
            self._show()
            self._say(f"{exc}; kept the previous value", error=True)
            return False
        self._show()
        self._say(done)
        return True

    def _on_edit(self, key: str, value: float) -> None:
        self._apply({key: value}, "typed")

    def _on_preset(self, name: str) -> None:
        if name in PRESETS:
            camera = PRESETS[name]
            self._apply({k: getattr(camera, k) for k in PRESET_FIELDS}, f"{name} preset")

    def fill_from_layer(self, _value: Any = None) -> None:
        """Set the chosen layer's camera from its file metadata again (or the defaults)."""
        layer = self.layer.value
        if layer is None:
            self._say("Open an image stack first.", error=True)
            return
        _, source = reset_from_file(layer, self._defaults)
        self._show()
        self._say(f"'{layer.name}': {source}.")

    def save_as_default(self, _value: Any = None) -> None:
        """Save the shown values as the default camera (for stacks without camera metadata)."""
        values, _ = self.current()
        self._defaults.apply(values, "saved defaults", save=True)
        self._show()
        self._say(f"Saved as the default for stacks without camera metadata ({config_path()}).")

    def estimate_baseline(self, _value: Any = None) -> None:
        """Estimate the baseline from the chosen layer's dark pixels (see :mod:`.estimate`)."""
        layer = self.layer.value
        if layer is None:
            self._say("Open an image stack first.", error=True)
            return
        try:
            result = estimate_baseline(layer.data, camera_of(self.current()[0]))
        except (ValueError, OSError) as exc:
            self._say(f"Cannot estimate the baseline: {exc}", error=True)
            return
        if result.baseline is None:
            self._say(result.message, error=True)
            return
        self._apply({"baseline": round(result.baseline, 1)},
                    f"baseline estimated from '{layer.name}'", result.message)


def _spin_box(key: str) -> FloatSpinBox:
    """A spin box for one camera/PSF field; it reports a value when editing is finished."""
    label, low, high, step, tooltip = FIELDS[key]
    widget = FloatSpinBox(label=label, min=low, max=high, step=step, tooltip=tooltip)
    widget.native.setKeyboardTracking(False)
    return widget
