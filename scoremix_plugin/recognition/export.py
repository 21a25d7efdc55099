"""Export a recogniser (``model.pt``) to ONNX the way the host's ``torch2onnx.py`` does, and check it.

The graph takes ``data`` float32 ``[B, 3, 112, 112]`` in ``[-1, 1]`` (i.e. ``(pixel - 127.5) / 127.5``,
what insightface's ``ArcFaceONNX`` feeds a graph that does not normalise itself) with a dynamic batch,
and has one output ``[B, D]`` (``embedding``, not normalised). After writing, the file is run through
onnxruntime on random input and compared with the torch model (cosine per row).

    scoremix export --model work_dirs/toy/model.pt --network r18_cpu --out model.onnx
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scoremix_plugin.backbones import load_backbone  # noqa: F401 - the .pt loader, used below and re-exported
from scoremix_plugin.errors import InputError
from scoremix_plugin.io_utils import atomic_path

INPUT_NAME = "data"
OUTPUT_NAME = "embedding"
MIN_COSINE = 0.9999


def export_onnx(module: torch.nn.Module, out: str | os.PathLike, *, opset: int = 17) -> Path:
    """Write ``module`` (eval mode, CPU) as ONNX to ``out`` atomically. Uses the TorchScript-based exporter
    (``dynamo=False``): it gives a plain Conv/BN-folded graph with a symbolic batch for opset 11..18."""
    if opset < 11:
        raise InputError(f"opset must be >= 11 (the host exports opset 11), got {opset}")
    module = module.eval().cpu()
    out = Path(out)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module,
            (torch.zeros(1, 3, 112, 112),),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return out


def check_onnx(
    module: torch.nn.Module, onnx_path: str | os.PathLike, *, batch: int = 4, seed: int = 0
) -> dict[str, Any]:
    """Run the ONNX file through onnxruntime on random ``[-1, 1]`` input; compare with torch row by row.

    Returns ``{"min_cosine", "max_abs_diff", "batch", "output_dim"}``; raises if a row's cosine is below
    ``MIN_COSINE`` or the graph's input/output layout is not the recogniser's.
    """
    import onnx
    import onnxruntime as ort

    onnx_path = Path(onnx_path)
    onnx.checker.check_model(str(onnx_path))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1 or inputs[0].name != INPUT_NAME:
        raise InputError(f"{onnx_path}: expected one input '{INPUT_NAME}' and one output")
    x = np.random.default_rng(seed).uniform(-1, 1, size=(batch, 3, 112, 112)).astype(np.float32)
    got = sess.run(None, {INPUT_NAME: x})[0]
    with torch.inference_mode():
        ref = module.eval().cpu()(torch.from_numpy(x)).float().numpy()
    if got.shape != ref.shape:
        raise InputError(f"{onnx_path}: output shape {got.shape}, torch gives {ref.shape}")
    g, r = got.astype(np.float64), ref.astype(np.float64)  # float64: untrained nets can reach 1e20
    cos = np.sum(g * r, axis=1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(r, axis=1) + 1e-300)
    report = {
        "min_cosine": float(cos.min()),
        "max_abs_diff": float(np.abs(got - ref).max()),
        "batch": batch,
        "output_dim": int(got.shape[1]),
    }
    if not report["min_cosine"] >= MIN_COSINE:  # NaN fails too
        raise InputError(f"{onnx_path}: onnxruntime and torch disagree (min cosine {report['min_cosine']:.6f})")
    return report


def export_model(
    model_path: str | os.PathLike, network: str, out: str | os.PathLike, *, opset: int = 17, check: bool = True
) -> dict[str, Any]:
    """``model.pt`` -> ONNX, then the onnxruntime check. Returns a summary (paths, opset, check numbers)."""
    module = load_backbone(model_path, network)
    path = export_onnx(module, out, opset=opset)
    summary: dict[str, Any] = {"model": str(model_path), "network": network, "onnx": str(path), "opset": opset}
    if check:
        summary["check"] = check_onnx(module, path)
    return summary
