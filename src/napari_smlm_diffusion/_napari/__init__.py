"""napari contributions (reader, writers, sample data, widgets): the only place importing napari."""
