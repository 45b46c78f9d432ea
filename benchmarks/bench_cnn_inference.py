"""Where could the KDE CNN's CPU time come from? Inference options and cheaper architectures.

Times one forward pass per frame (64x64 camera pixels, batches of 32, one torch thread, best of
``--repeats``) of:

- the shipped network as the package runs it (:class:`InferenceKdeCnn`, channels-last), with
  plain contiguous tensors, and as a frozen TorchScript graph;
- the same network in ONNX Runtime (when ``onnxruntime`` and ``onnx`` are installed; neither is a
  dependency of the package), with the largest difference from torch's output;
- bfloat16 weights and inputs (the package never runs half precision on a CPU: listed because
  CPUs with native bfloat16 run it much faster), with the largest difference;
- untrained networks of cheaper shapes (width of the context module, channels of the upsampling
  stages, number of context blocks): how much a retrained, smaller network could save.

    python benchmarks/bench_cnn_inference.py [--repeats 10] [--out benchmarks/results/cnn_inference]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from napari_smlm_diffusion.models.kde_cnn import InferenceKdeCnn, KdeCnn
from napari_smlm_diffusion.pretrained import load_kde_cnn

sys.path.insert(0, str(Path(__file__).parent))
from bench_throughput import best_fps  # noqa: E402

BATCH, SIZE = 32, 64
SHAPES = {
    "width 16": {"width": 16},
    "4 context blocks": {"dilations": (1, 2, 4, 8)},
    "upsampling channels (4, 4)": {"up_channels": (4, 4)},
    "width 16, upsampling (4, 4)": {"width": 16, "up_channels": (4, 4)},
}


def without_grad(run: Callable[[], object]) -> Callable[[], object]:
    """``run`` under ``torch.no_grad``."""
    def call() -> object:
        with torch.no_grad():
            return run()
    return call


def onnx_runtime(model: torch.nn.Module, frames: torch.Tensor) -> Callable[[], np.ndarray] | None:
    """A callable running ``model`` on ``frames`` in ONNX Runtime on one thread, or None."""
    try:
        import onnxruntime
    except ImportError:
        return None
    buffer = io.BytesIO()
    torch.onnx.export(model, frames, buffer, input_names=["frames"], output_names=["kde"],
                      dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(buffer.getvalue(), options,
                                           providers=["CPUExecutionProvider"])
    inputs = {"frames": frames.numpy()}
    return lambda: session.run(None, inputs)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cnn_inference"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    frames = torch.rand(BATCH, 1, SIZE, SIZE)
    last = frames.contiguous(memory_format=torch.channels_last)

    def shipped(**to: object) -> InferenceKdeCnn:
        return InferenceKdeCnn(load_kde_cnn("kde_cnn")[0]).eval().to(**to)

    plain, package = shipped(), shipped(memory_format=torch.channels_last)
    half = shipped(dtype=torch.bfloat16, memory_format=torch.channels_last)
    half_frames = last.to(torch.bfloat16)
    with torch.no_grad():
        reference = plain(frames)
        frozen = torch.jit.freeze(torch.jit.trace(plain, frames).eval())
    runs = {"shipped, channels-last (the package)": lambda: package(last),
            "shipped, contiguous": lambda: plain(frames),
            "shipped, frozen TorchScript": lambda: frozen(frames),
            "shipped, bfloat16, channels-last": lambda: half(half_frames)}
    differences = {"shipped, bfloat16, channels-last": lambda: half(half_frames).float()}
    runtime = onnx_runtime(plain, frames)
    if runtime is not None:
        runs["shipped, ONNX Runtime"] = runtime
        differences["shipped, ONNX Runtime"] = lambda: torch.from_numpy(runtime())
    for name, shape in SHAPES.items():
        model = InferenceKdeCnn(KdeCnn(**shape).eval()).to(memory_format=torch.channels_last)
        runs[f"untrained, {name}"] = lambda m=model: m(last)
    fps = best_fps({name: without_grad(run) for name, run in runs.items()}, BATCH, args.repeats)
    results: dict[str, dict] = {name: {"ms": 1e3 / value} for name, value in fps.items()}
    for name, output in differences.items():
        results[name]["max_abs_difference"] = float(
            (without_grad(output)() - reference).abs().max())
    base = results["shipped, channels-last (the package)"]["ms"]
    lines = ["KDE CNN forward pass per 64x64 frame, batches of 32, one thread "
             f"(`python benchmarks/bench_cnn_inference.py --repeats {args.repeats}`)", "",
             "| network, run as | ms per frame | vs the package | max abs difference (KDE) |",
             "|---|---|---|---|"]
    for name, entry in results.items():
        entry["relative"] = entry["ms"] / base
        difference = entry.get("max_abs_difference")
        lines.append(f"| {name} | {entry['ms']:.2f} | {entry['relative']:.2f} | "
                     f"{'' if difference is None else f'{difference:.2g}'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    args.out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
