"""Security: only safetensors are loaded, user weights are verified against their model card and
never unpickled, and nothing named in files, metadata or options is executed."""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch

import napari_smlm_diffusion
from napari_smlm_diffusion.cli import main
from napari_smlm_diffusion.pretrained import (
    WeightsError,
    load_denoiser,
    load_kde_cnn,
    load_verified_state,
    sha256_file,
    shipped_names,
    weights_dir,
)


class _Payload:
    """Unpickling this creates a folder: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _torch_zip(path: Path, marker: Path) -> None:
    torch.save({"weight": torch.zeros(2), "payload": _Payload(marker)}, path)


def _torch_legacy(path: Path, marker: Path) -> None:
    torch.save({"payload": _Payload(marker)}, path, _use_new_zipfile_serialization=False)


def _pickle(protocol: int):
    def write(path: Path, marker: Path) -> None:
        path.write_bytes(pickle.dumps(_Payload(marker), protocol=protocol))
    return write


PICKLES = [
    pytest.param(_torch_zip, "zip archive (torch.save)", id="torch-save-zip"),
    pytest.param(_torch_legacy, "Python pickle", id="torch-save-legacy"),
    pytest.param(_pickle(2), "Python pickle", id="pickle-protocol-2"),
    pytest.param(_pickle(5), "Python pickle", id="pickle-protocol-5"),
    pytest.param(_pickle(0), "not a safetensors file", id="pickle-protocol-0"),
]


@pytest.fixture
def no_unpickling(monkeypatch):
    """Fail the test if anything tries to unpickle."""
    def refuse(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)


def _as_user_weights(writer, folder: Path, stem: str, card: dict) -> tuple[Path, Path]:
    """A pickle renamed .safetensors, with a model card whose hash matches it."""
    marker = folder / f"{stem}-executed"
    weights = folder / f"{stem}.safetensors"
    writer(weights, marker)
    weights.with_suffix(".json").write_text(json.dumps({**card,
                                                        "sha256": sha256_file(weights)}))
    return weights, marker


@pytest.mark.parametrize(("writer", "message"), PICKLES)
@pytest.mark.parametrize("loader", [load_kde_cnn, load_denoiser], ids=["kde-cnn", "denoiser"])
def test_pickles_renamed_safetensors_are_refused_unread(tmp_path, no_unpickling, untrained_weights,
                                                        writer, message, loader):
    card = json.loads(untrained_weights.with_suffix(".json").read_text())
    weights, marker = _as_user_weights(writer, tmp_path, "model", card)
    with pytest.raises(WeightsError, match=re.escape(message)) as error:
        loader(weights)
    assert "\n" not in str(error.value)
    assert not marker.exists()


def test_pickle_through_the_command_is_refused(tmp_path, capsys, no_unpickling,
                                               untrained_weights):
    from napari_smlm_diffusion.io import write_tiff
    from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack

    stack = tmp_path / "stack.tif"
    write_tiff(stack, simulate_stack(1, SimulationConfig(size=(16, 16)), seed=0).frames)
    card = json.loads(untrained_weights.with_suffix(".json").read_text())
    weights, marker = _as_user_weights(_torch_zip, tmp_path, "den", card)
    code = main(["posterior", str(stack), "-o", str(tmp_path / "post"), "--weights",
                 str(untrained_weights), "--denoiser-weights", str(weights)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "pickled weights are never loaded" in err
    assert not marker.exists() and not (tmp_path / "post").exists()


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "model.ckpt", "model.bin",
                                  "../weights/kde_cnn", "kde_cnn/../../x", "/etc/passwd"])
def test_only_shipped_names_or_safetensors_paths_are_resolved(tmp_path, no_unpickling, name):
    if name.startswith("model"):
        name = str(tmp_path / name)
        _torch_zip(Path(name), tmp_path / "executed")
    with pytest.raises(WeightsError, match="expected a shipped model name"):
        load_kde_cnn(name)
    assert not (tmp_path / "executed").exists()


def test_user_weights_are_verified_against_their_card(untrained_weights, no_unpickling):
    state, card = load_verified_state(untrained_weights)  # a genuine safetensors file loads
    assert state and card["sha256"] == sha256_file(untrained_weights)
    untrained_weights.with_suffix(".json").write_text(json.dumps({**card, "sha256": "0" * 64}))
    with pytest.raises(WeightsError, match="altered or corrupt"):
        load_verified_state(untrained_weights)
    card.pop("sha256")
    untrained_weights.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="does not match its model card"):
        load_verified_state(untrained_weights)


def test_weights_without_a_card_are_refused(untrained_weights, tmp_path):
    lone = tmp_path / "lone" / "model.safetensors"
    lone.parent.mkdir()
    shutil.copy(untrained_weights, lone)
    with pytest.raises(WeightsError, match="model card .* not found"):
        load_kde_cnn(lone)


def test_shipped_weights_are_safetensors_matching_their_cards():
    assert {"kde_cnn", "denoiser"} <= set(shipped_names())
    for name in shipped_names():
        path = weights_dir() / f"{name}.safetensors"
        card = json.loads(path.with_suffix(".json").read_text())
        assert card["sha256"] == sha256_file(path)
    assert not [p for p in weights_dir().iterdir()
                if p.suffix not in (".safetensors", ".json", ".py") and p.is_file()]


BANNED_MODULES = {"pickle", "cPickle", "dill", "joblib", "marshal", "shelve", "subprocess"}
BANNED_CALLS = {"eval", "exec", "compile", "__import__", "torch.load", "os.system", "os.popen",
                "importlib.import_module", "np.load", "numpy.load"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def test_the_package_has_no_code_path_that_unpickles_or_executes():
    """No module imports a deserialiser that runs code or a process launcher, and no call
    evaluates text (checked on the syntax tree, so docstrings and messages do not count)."""
    package = Path(napari_smlm_diffusion.__file__).parent
    hits = []
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            banned = [n for n in names if n.split(".")[0] in BANNED_MODULES]
            if isinstance(node, ast.Call) and _dotted(node.func) in BANNED_CALLS:
                banned.append(_dotted(node.func))
            hits += [f"{source.relative_to(package)}:{node.lineno}: {n}" for n in banned]
    assert not hits, hits
