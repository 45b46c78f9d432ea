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
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from napari_smlm_diffusion.models.kde_cnn import InferenceKdeCnn, KdeCnn
from napari_smlm_diffusion.pretrained import load_kde_cnn

BATCH, SIZE = 32, 64
SHAPES = {
    "width 16": {"width": 16},
    "4 context blocks": {"dilations": (1, 2, 4, 8)},
    "upsampling channels (4, 4)": {"up_channels": (4, 4)},
    "width 16, upsampling (4, 4)": {"width": 16, "up_channels": (4, 4)},
}


def ms_per_frame(run: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``run`` over ``repeats`` calls (after one warm-up), per frame in ms."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best / BATCH * 1e3


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
    shipped = InferenceKdeCnn(load_kde_cnn("kde_cnn")[0]).eval()
    results: dict[str, dict] = {}
    with torch.no_grad():
        reference = shipped(frames)
        plain = ms_per_frame(lambda: shipped(frames), args.repeats)
        fast = shipped.to(memory_format=torch.channels_last)
        last = frames.contiguous(memory_format=torch.channels_last)
        results["shipped, channels-last (the package)"] = {
            "ms": ms_per_frame(lambda: fast(last), args.repeats)}
        shipped = shipped.to(memory_format=torch.contiguous_format)
        results["shipped, contiguous"] = {"ms": plain}
        half = InferenceKdeCnn(load_kde_cnn("kde_cnn")[0]).eval().to(
            torch.bfloat16, memory_format=torch.channels_last)
        frames_half = last.to(torch.bfloat16)
        results["shipped, bfloat16, channels-last"] = {
            "ms": ms_per_frame(lambda: half(frames_half), args.repeats),
            "max_abs_difference": float((half(frames_half).float() - reference).abs().max())}
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(shipped, frames).eval())
        results["shipped, frozen TorchScript"] = {"ms": ms_per_frame(lambda: frozen(frames),
                                                                     args.repeats)}
    runtime = onnx_runtime(shipped, frames)
    if runtime is not None:
        results["shipped, ONNX Runtime"] = {
            "ms": ms_per_frame(runtime, args.repeats),
            "max_abs_difference": float(np.abs(runtime() - reference.numpy()).max())}
    with torch.no_grad():
        for name, shape in SHAPES.items():
            model = InferenceKdeCnn(KdeCnn(**shape).eval()).to(memory_format=torch.channels_last)
            results[f"untrained, {name}"] = {"ms": ms_per_frame(lambda m=model: m(last),
                                                                args.repeats)}
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
