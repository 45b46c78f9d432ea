"""Network definitions only: no I/O, no napari."""
