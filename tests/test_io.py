"""Tests for napari_smlm_diffusion.io: lazy TIFF stacks, atomic writers, ThunderSTORM CSV."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_smlm_diffusion import io
from napari_smlm_diffusion.io import (
    StackError,
    TableError,
    atomic_write,
    open_stack,
    read_localizations,
    write_localizations,
    write_tiff,
    write_truth,
)
from napari_smlm_diffusion.io import tiff as tiff_io

HEADER = (
    '"id","frame","x [nm]","y [nm]","sigma [nm]","intensity [photon]","offset [photon]",'
    '"bkgstd [photon]","uncertainty [nm]"'
)

KEYS = [
    3,
    -1,
    np.int64(2),
    slice(2, 7),
    slice(None, None, 3),
    slice(-4, None),
    (4, slice(2, 9), 5),
    (slice(1, 4), 3),
    (Ellipsis, 2),
    (np.int64(2), slice(None), slice(1, None, 2)),
    [0, 5, 2],
    np.array([1, 1, -2]),
    np.arange(12) % 2 == 0,
    slice(5, 5),
]


@pytest.fixture
def movie() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(90, 4000, size=(12, 16, 20), dtype=np.uint16)


def assert_same_indexing(lazy: io.LazyStack, reference: np.ndarray) -> None:
    assert lazy.shape == reference.shape
    assert lazy.dtype == reference.dtype
    assert lazy.ndim == 3 and len(lazy) == reference.shape[0] and lazy.size == reference.size
    for key in KEYS:
        np.testing.assert_array_equal(lazy[key], reference[key], err_msg=repr(key))
    np.testing.assert_array_equal(np.asarray(lazy), reference)
    with pytest.raises(IndexError):
        lazy[len(reference)]
    with pytest.raises(IndexError):
        lazy[0, 0, 0, 0]


class PageSpy:
    """Records the index of every TIFF page whose data tifffile decodes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pages: set[int] = set()
        for cls in (tifffile.TiffPage, tifffile.TiffFrame):
            original = cls.asarray

            def spy(page, *args, _original=original, **kwargs):
                self.pages.add(page.index)
                return _original(page, *args, **kwargs)

            monkeypatch.setattr(cls, "asarray", spy)


def assert_one_line_error(error: pytest.ExceptionInfo, path) -> None:
    message = str(error.value)
    assert str(path) in message
    assert "\n" not in message
    assert isinstance(error.value, ValueError)


# ----------------------------------------------------------------------------- lazy reading


def test_memmap_backend_returns_the_right_frames(tmp_path, movie):
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, movie, imagej=True, metadata={"axes": "TYX"})
    with open_stack(path) as stack:
        assert stack.data.backend == "memmap"
        assert stack.path == path and stack.pixel_size_nm is None and stack.metadata == {}
        assert_same_indexing(stack.data, movie)


def test_page_backend_returns_the_right_frames_and_reads_only_touched_pages(
    tmp_path, movie, monkeypatch
):
    path = tmp_path / "compressed.tif"
    reference = movie.astype(np.float32) / 7
    tifffile.imwrite(path, reference, compression="zlib")
    with open_stack(path) as stack:
        assert stack.data.backend == "pages"
        assert_same_indexing(stack.data, reference)
        spy = PageSpy(monkeypatch)
        np.testing.assert_array_equal(stack.data[5], reference[5])
        assert spy.pages == {5}
        spy.pages.clear()
        np.testing.assert_array_equal(stack.data[2:4, 3:5], reference[2:4, 3:5])
        assert spy.pages == {2, 3}
        spy.pages.clear()
        stack.data[[9, 0]]
        assert spy.pages == {0, 9}


def test_generic_multipage_and_appended_tiffs(tmp_path, movie):
    generic = tmp_path / "generic.tif"
    with tifffile.TiffWriter(generic) as writer:
        for frame in movie:
            writer.write(frame, metadata=None)
    appended = tmp_path / "appended.tif"
    for frame in movie:
        tifffile.imwrite(appended, frame, append=True)
    for path in (generic, appended):
        with open_stack(path) as stack:
            np.testing.assert_array_equal(np.asarray(stack.data), movie)
            np.testing.assert_array_equal(stack.data[7], movie[7])


def test_single_image_is_a_one_frame_stack(tmp_path, movie):
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, movie[0])
    with open_stack(path) as stack:
        assert stack.data.shape == (1, 16, 20)
        np.testing.assert_array_equal(stack.data[0], movie[0])


@pytest.mark.parametrize(
    ("shape", "axes"),
    [((12, 16, 20), "ZYX"), ((1, 12, 16, 20), "TZYX"), ((4, 3, 16, 20), "TZYX")],
)
def test_imagej_hyperstack_t_and_z_collapse_to_frames(tmp_path, movie, shape, axes):
    path = tmp_path / "hyperstack.tif"
    tifffile.imwrite(path, movie.reshape(shape), imagej=True, metadata={"axes": axes})
    with open_stack(path) as stack:
        assert stack.data.shape == movie.shape
        np.testing.assert_array_equal(np.asarray(stack.data), movie)
        np.testing.assert_array_equal(stack.data[4], movie[4])


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_channels_must_be_chosen(tmp_path, movie, compression):
    path = tmp_path / "channels.tif"
    data = movie.reshape(3, 2, 2, 16, 20)  # T, Z, C
    tifffile.imwrite(path, data, imagej=True, compression=compression, metadata={"axes": "TZCYX"})
    with pytest.raises(StackError, match="2 channels") as error:
        open_stack(path)
    assert_one_line_error(error, path)
    assert "channel=" in str(error.value)
    with open_stack(path, channel=1) as stack:
        assert stack.data.shape == (6, 16, 20)
        np.testing.assert_array_equal(np.asarray(stack.data), data[:, :, 1].reshape(6, 16, 20))
        np.testing.assert_array_equal(stack.data[3], data[1, 1, 1])
    with pytest.raises(StackError, match="out of range") as error:
        open_stack(path, channel=2)
    assert_one_line_error(error, path)


def test_bigtiff_is_readable(tmp_path, movie):
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, movie, bigtiff=True)
    with open_stack(path) as stack:
        assert stack.data.backend == "memmap"
        np.testing.assert_array_equal(np.asarray(stack.data), movie)


def _bytes_read_by_this_process() -> int:
    with open("/proc/self/io") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("rchar"))


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc")
def test_bigtiff_over_4_gib_opens_lazily(tmp_path):
    """A 4.1 GiB BigTIFF (sparse: only the header and one frame take disk space) opens at once,
    memory-mapped, without reading the image data, and returns the frame written into it."""
    path = tmp_path / "huge.tif"
    shape = (530, 2048, 2048)  # 530 * 8 MiB = 4.14 GiB
    tifffile.imwrite(path, shape=shape, dtype=np.uint16, bigtiff=True,
                     photometric="minisblack", metadata={"axes": "TYX"})
    assert path.stat().st_size > 4 * 2**30
    frame = np.arange(2048 * 2048, dtype=np.uint32).reshape(2048, 2048) % 65521
    mapped = tifffile.memmap(path, mode="r+")
    mapped[417] = frame
    mapped.flush()
    del mapped

    before, started = _bytes_read_by_this_process(), time.perf_counter()
    with open_stack(path) as stack:
        opened = time.perf_counter() - started
        assert stack.data.shape == shape and stack.data.backend == "memmap"
        np.testing.assert_array_equal(stack.data[417], frame)
        np.testing.assert_array_equal(stack.data[416, :3, :3], 0)
        np.testing.assert_array_equal(stack.data[-1, -2:], 0)
    assert opened < 2.0
    assert _bytes_read_by_this_process() - before < 16 * 2**20  # no read() of the image data


def test_closed_stack_cannot_be_read(tmp_path, movie):
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, movie, compression="zlib")
    with open_stack(path) as stack:
        pass
    with pytest.raises(StackError, match="closed") as error:
        stack.data[0]
    assert_one_line_error(error, path)


# ----------------------------------------------------------------------------- pixel size


def test_write_tiff_round_trips_pixel_size_and_metadata(tmp_path, movie):
    path = tmp_path / "sim.tif"
    camera = {"baseline": 100.0, "sensitivity": 0.46, "em_gain": 1.0, "read_noise": 1.6}
    assert write_tiff(path, movie, pixel_size_nm=107.3, metadata=camera) == path
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "um"
        assert tif.pages[0].resolution[0] == pytest.approx(1000 / 107.3)
    with open_stack(path) as stack:
        assert stack.pixel_size_nm == 107.3
        assert stack.metadata == {**camera, "pixel_size": 107.3}
        np.testing.assert_array_equal(np.asarray(stack.data), movie)


def test_nested_camera_metadata_is_offered_at_top_level(tmp_path, movie):
    path = tmp_path / "sim.tif"
    camera = {"baseline": 100.0, "em_gain": 100.0, "pixel_size": 160.0}
    write_tiff(path, movie, pixel_size_nm=150.0, metadata={"camera": camera, "seed": 3})
    with open_stack(path) as stack:
        assert stack.pixel_size_nm == 150.0
        assert stack.metadata == {
            "baseline": 100.0,
            "em_gain": 100.0,
            "pixel_size": 150.0,
            "camera": camera,
            "seed": 3,
        }


def test_write_tiff_image_and_dtypes(tmp_path, movie):
    path = tmp_path / "image.tif"
    write_tiff(path, movie[0].astype(np.float64), metadata={"pixel_size": 160.0})
    with open_stack(path) as stack:
        assert stack.data.shape == (1, 16, 20) and stack.data.dtype == np.float32
        assert stack.pixel_size_nm == 160.0
    write_tiff(path, movie.astype(np.int64))
    with open_stack(path) as stack:
        assert stack.data.dtype == np.uint16 and stack.pixel_size_nm is None
    with pytest.raises(ValueError, match="int64"):
        write_tiff(path, -movie.astype(np.int64))
    with pytest.raises(ValueError, match="axes"):
        write_tiff(path, movie, axes="YX")
    with pytest.raises(ValueError, match="pixel_size_nm"):
        write_tiff(path, movie, pixel_size_nm=-1)


@pytest.mark.parametrize(("unit", "expected"), [("micron", 160.0), ("um", 160.0), ("nm", 0.16)])
def test_imagej_resolution_units(tmp_path, movie, unit, expected):
    path = tmp_path / "imagej.tif"
    tifffile.imwrite(
        path,
        movie,
        imagej=True,
        resolution=(1 / 0.16, 1 / 0.16),
        metadata={"axes": "TYX", "unit": unit},
    )
    with open_stack(path) as stack:
        assert stack.pixel_size_nm == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("size", "unit", "expected"), [(0.1, "µm", 100.0), (65.0, "nm", 65.0)])
def test_ome_physical_size(tmp_path, movie, size, unit, expected):
    path = tmp_path / "movie.ome.tif"
    tifffile.imwrite(
        path,
        movie,
        ome=True,
        metadata={"axes": "TYX", "PhysicalSizeX": size, "PhysicalSizeXUnit": unit},
    )
    with open_stack(path) as stack:
        assert stack.pixel_size_nm == pytest.approx(expected)
        np.testing.assert_array_equal(stack.data[3], movie[3])


def test_write_tiff_uses_bigtiff_above_threshold(tmp_path, movie, monkeypatch):
    path = tmp_path / "big.tif"
    write_tiff(path, movie, pixel_size_nm=100.0)
    with tifffile.TiffFile(path) as tif:
        assert not tif.is_bigtiff
    monkeypatch.setattr(tiff_io, "BIGTIFF_THRESHOLD", movie.nbytes - 1)
    write_tiff(path, movie, pixel_size_nm=100.0)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
    with open_stack(path) as stack:
        assert stack.pixel_size_nm == 100.0
        np.testing.assert_array_equal(np.asarray(stack.data), movie)


# ----------------------------------------------------------------------------- errors


def _write_error_case(case: str, path, movie) -> None:
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "not a tiff":
        path.write_bytes(b"frame,x,y\n1,2,3\n" * 10)
    elif case == "rgb":
        tifffile.imwrite(path, np.zeros((16, 20, 3), np.uint8), photometric="rgb")
    elif case == "complex":
        tifffile.imwrite(path, np.zeros((2, 16, 20), np.complex64))
    elif case == "bool":
        tifffile.imwrite(path, np.zeros((16, 20), bool))
    elif case == "6-D":
        tifffile.imwrite(path, np.zeros((2, 2, 2, 2, 4, 5), np.uint16))


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing", "does not exist"),
        ("directory", "directory"),
        ("empty", "empty"),
        ("not a tiff", "not a readable TIFF"),
        ("rgb", "RGB"),
        ("complex", "complex64"),
        ("bool", "bool"),
        ("6-D", "6-D"),
    ],
)
def test_open_errors_name_the_file(tmp_path, movie, case, match):
    path = tmp_path / "bad input.tif"
    _write_error_case(case, path, movie)
    with pytest.raises(StackError, match=match) as error:
        open_stack(path)
    assert_one_line_error(error, path)


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_non_finite_frames_fail_when_read(tmp_path, movie, value, compression):
    path = tmp_path / "nan.tif"
    data = movie.astype(np.float32)
    data[6, 3, 4] = value
    tifffile.imwrite(path, data, compression=compression)
    with open_stack(path) as stack:
        np.testing.assert_array_equal(stack.data[5], data[5])
        for key in (6, slice(4, 8)):
            with pytest.raises(StackError, match="frame 6 contains 1 NaN") as error:
                stack.data[key]
            assert_one_line_error(error, path)


@pytest.mark.parametrize(
    "options",
    [{}, {"imagej": True}, {"compression": "zlib"}, {"bigtiff": True}, {"ome": True}],
    ids=["shaped", "imagej", "zlib", "bigtiff", "ome"],
)
@pytest.mark.parametrize("cut", ["half", "tail"])
def test_truncated_tiff_fails_with_one_line(tmp_path, movie, options, cut):
    path = tmp_path / "truncated.tif"
    tifffile.imwrite(path, movie, **options)
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size // 2 if cut == "half" else size - 100)
    with pytest.raises(StackError) as error:
        with open_stack(path) as stack:
            for index in range(len(stack.data)):
                stack.data[index]
    assert_one_line_error(error, path)
    assert "truncated" in str(error.value) or "corrupted" in str(error.value)


def test_memory_mapped_file_truncated_after_opening_is_an_error_not_a_crash(tmp_path, movie):
    """Reading a mapped page beyond the end of a file that shrank kills the process (SIGBUS):
    the reader checks the size first. Run in a child process so a regression cannot take the
    test session down with it."""
    path = tmp_path / "shrinking.tif"
    tifffile.imwrite(path, movie)
    script = (
        "import sys\n"
        "from napari_smlm_diffusion.io import open_stack, StackError\n"
        f"stack = open_stack({str(path)!r})\n"
        "assert stack.data.backend == 'memmap'\n"
        f"open({str(path)!r}, 'r+b').truncate(1000)\n"
        "try:\n"
        "    stack.data[-1]\n"
        "except StackError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "shrank to 1000 bytes after it was opened" in result.stdout
    assert "cannot read frame 11" in result.stdout


# ----------------------------------------------------------------------------- atomic writes


def test_failed_write_keeps_previous_file_and_leaves_no_temporary(tmp_path, movie, monkeypatch):
    path = tmp_path / "out.tif"
    write_tiff(path, movie)
    before = path.read_bytes()

    def broken_imwrite(file, *args, **kwargs):
        with open(file, "wb") as handle:
            handle.write(b"II*\x00 partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", broken_imwrite)
    with pytest.raises(RuntimeError, match="disk full"):
        write_tiff(path, movie[:3] * 2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]


def test_atomic_write_replaces_only_on_success(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("old")
    with pytest.raises(KeyError):
        with atomic_write(path) as temporary:
            assert temporary.parent == tmp_path and temporary != path
            temporary.write_text("new, half")
            raise KeyError("interrupted")
    assert path.read_text() == "old"
    with atomic_write(path) as temporary:
        temporary.write_text("new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


# ----------------------------------------------------------------------------- localizations


@pytest.fixture
def localizations() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    n = 7
    return pd.DataFrame(
        {
            "frame": np.array([0, 0, 1, 3, 3, 3, 10], dtype=np.int64),
            "x_nm": rng.uniform(0, 5000, n),
            "y_nm": rng.uniform(0, 5000, n),
            "sigma_nm": rng.uniform(90, 150, n),
            "photons": rng.uniform(500, 5000, n),
            "background": rng.uniform(5, 20, n),
            "bkgstd": rng.uniform(2, 5, n),
            "uncertainty_nm": rng.uniform(5, 20, n),
            "uncertainty_x_nm": rng.uniform(5, 20, n),
            "uncertainty_y_nm": rng.uniform(5, 20, n),
            "detection_probability": rng.uniform(0, 1, n),
            "score": rng.uniform(0, 1, n),
        }
    )


def test_localizations_round_trip(tmp_path, localizations):
    path = tmp_path / "locs.csv"
    assert write_localizations(path, localizations) == path
    lines = path.read_text().splitlines()
    assert lines[0] == (
        HEADER + ',"uncertainty_x [nm]","uncertainty_y [nm]","detection probability","score"'
    )
    assert len(lines) == 8
    assert [line.split(",")[:2] for line in lines[1:4]] == [["1", "1"], ["2", "1"], ["3", "2"]]
    assert lines[-1].split(",")[:2] == ["7", "11"]
    pd.testing.assert_frame_equal(read_localizations(path), localizations)


def test_localizations_missing_columns_and_nan(tmp_path, localizations):
    path = tmp_path / "locs.csv"
    table = localizations[["frame", "x_nm", "y_nm"]].copy()
    table.loc[2, "y_nm"] = np.nan
    write_localizations(path, table)
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER
    fields = lines[1].split(",")
    assert fields[4:] == ["0.0", "NaN", "0.0", "0.0", "NaN"]
    assert lines[3].split(",")[3] == "NaN"
    back = read_localizations(path)
    assert list(back.columns) == [
        "frame",
        "x_nm",
        "y_nm",
        "sigma_nm",
        "photons",
        "background",
        "bkgstd",
        "uncertainty_nm",
    ]
    pd.testing.assert_frame_equal(back[["frame", "x_nm", "y_nm"]], table)
    assert (back["sigma_nm"] == 0).all() and back["photons"].isna().all()


def test_truth_round_trip(tmp_path, localizations):
    path = tmp_path / "truth.csv"
    write_truth(path, localizations)
    lines = path.read_text().splitlines()
    assert lines[0] == '"id","frame","x [nm]","y [nm]","intensity [photon]"'
    back = read_localizations(path)
    pd.testing.assert_frame_equal(back, localizations[["frame", "x_nm", "y_nm", "photons"]])


def test_empty_table_round_trip(tmp_path, localizations):
    path = tmp_path / "none.csv"
    write_localizations(path, localizations.iloc[:0])
    back = read_localizations(path)
    assert len(back) == 0 and back["frame"].dtype == np.int64 and back["x_nm"].dtype == float


def test_read_thunderstorm_unquoted_header(tmp_path):
    path = tmp_path / "thunderstorm.csv"
    path.write_text(
        "id,frame,x [nm],y [nm],sigma [nm],intensity [photon],offset [photon],"
        "bkgstd [photon],chi2,uncertainty [nm]\n"
        "1,1.0,1520.5,830.25,120.0,1500.0,10.0,3.0,1.2,8.5\n"
        "2,3.0,20.0,40.0,110.0,900.0,9.0,2.5,0.9,12.0\n"
    )
    table = read_localizations(path)
    assert list(table.columns) == [
        "frame",
        "x_nm",
        "y_nm",
        "sigma_nm",
        "photons",
        "background",
        "bkgstd",
        "chi2",
        "uncertainty_nm",
    ]
    assert table["frame"].tolist() == [0, 2] and table["frame"].dtype == np.int64
    assert table["x_nm"].tolist() == [1520.5, 20.0]
    assert table["uncertainty_nm"].tolist() == [8.5, 12.0]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        (b"", "empty"),
        (b"II*\x00\x08\x00\x00\x00\xff\xfe\x00\x81\x9c\x00", "not a"),
        (b'"frame","y [nm]"\n1,2\n', "missing column.*'x \\[nm\\]'"),
        (b"frame,x [nm],y [nm]\n0,1,2\n", "1-based"),
        (b"frame,x [nm],y [nm]\n1,abc,2\n", "non-numeric"),
    ],
)
def test_read_localizations_errors_name_the_file(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TableError, match=match) as error:
        read_localizations(path)
    assert_one_line_error(error, path)


def test_write_localizations_needs_positions(tmp_path, localizations):
    path = tmp_path / "locs.csv"
    with pytest.raises(TableError, match="x_nm") as error:
        write_localizations(path, localizations.drop(columns="x_nm"))
    assert_one_line_error(error, path)
    bad = localizations.assign(frame=localizations["frame"] - 1.5)
    with pytest.raises(TableError, match="frame"):
        write_localizations(path, bad)
    assert not path.exists()


def test_extra_columns_round_trip_through_the_csv(tmp_path):
    import pandas as pd

    from napari_smlm_diffusion.io import read_localizations, write_localizations

    table = pd.DataFrame({"frame": [0, 3], "x_nm": [10.0, 20.0], "y_nm": [5.0, 6.0],
                          "photons": [100.0, 200.0], "uncertainty_nm": [7.0, 8.0],
                          "frames_on": [3, 1], "crlb_x_nm": [4.0, 5.0]})
    back = read_localizations(write_localizations(tmp_path / "merged.csv", table))
    assert back["frames_on"].tolist() == [3, 1] and back["crlb_x_nm"].tolist() == [4.0, 5.0]
    assert back["frame"].tolist() == [0, 3]


def test_truncated_tiff_is_found_when_another_package_silenced_tifffile(tmp_path, movie):
    """picasso.io sets tifffile's logger to CRITICAL when it is imported; the truncation (which
    tifffile reports as ERROR records) must still be found, and the level left as it was."""
    import logging

    path = tmp_path / "truncated.tif"
    tifffile.imwrite(path, movie, imagej=True)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    logger = logging.getLogger("tifffile")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with pytest.raises(StackError, match="truncated or corrupted"):
            with open_stack(path) as stack:
                for index in range(len(stack.data)):
                    stack.data[index]
        assert logger.level == logging.CRITICAL
    finally:
        logger.setLevel(previous)
