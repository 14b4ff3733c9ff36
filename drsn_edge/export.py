"""torch → deploy form → ONNX, validated against PyTorch on real windows every time."""

from __future__ import annotations

import io
import time
import warnings
from pathlib import Path

import numpy as np

from .errors import CheckFailedError, InputError

OPSET = 17
INPUT_NAME = "vibration"
OUTPUT_NAME = "logits"


class ExportValidationError(CheckFailedError):
    """The exported graph does not reproduce the PyTorch model within tolerance (exit 1)."""


def validation_windows(meta: dict, data: str | None = None, n: int = 64, seed: int = 0) -> tuple[np.ndarray, str]:
    """Normalized real windows to validate against: --data (test split first), else the default
    calibration set when it matches the model, else freshly simulated noisy recordings."""
    from .data.dataset import normalize
    from .evaluate import check_compatible, load_test_windows

    rng = np.random.default_rng(seed)
    if data is not None:
        ds, src = load_test_windows(meta, data)
    else:
        from .calibration import default_calibration_path, load_calibration

        ds, src = None, ""
        path = default_calibration_path()
        if path.exists():
            cal = load_calibration(path)
            try:
                check_compatible(meta, cal)
                ds, src = cal, str(path)
            except InputError:
                ds = None
        from .evalspec import recorded_test_split

        recorded = recorded_test_split(meta) if ds is None else None
        if recorded:
            ds, src = load_test_windows(meta, recorded)
        if ds is None:
            from .data.noise import assign_noise
            from .evaluate import fresh_test_set

            ds = fresh_test_set(meta, max(2, -(-n // len(meta["class_names"]))), seed=200_000 + seed)
            ds = assign_noise(ds, ["gaussian", "laplacian", "pink"], [-5.0, 0.0, 5.0], seed=seed)
            src = "simulated"
    idx = np.sort(rng.choice(len(ds), min(n, len(ds)), replace=False))
    return normalize(ds.x[idx], meta["normalization"]), src


def to_onnx_bytes(model, batch: int, window: int, opset: int = OPSET, guard=None, score: bool = True) -> bytes:
    """Export the deploy form of `model` to ONNX with a static input [batch, 1, window]; with a domain guard
    (drsn_edge.guard.Guard) the graph also outputs guard_features and guard_score (guard_export.py), or with
    score=False the guard's raw tap outputs guard.<tap> after the logits (for a runtime that scores the taps
    itself: the native engine)."""
    from .models.deploy import DeployNet

    taps = guard.taps if guard is not None else ()
    raw = deploy_to_onnx_bytes(DeployNet(model, batch, window, taps=taps), batch, window, opset)
    if guard is None or not score:
        return raw
    from .guard_export import attach_onnx

    return attach_onnx(raw, guard)


def bundle_onnx_bytes(bundle, batch: int, opset: int = OPSET, with_guard: bool = True) -> bytes:
    """A bundle's deploy-form ONNX, with its domain guard when it has one."""
    from .guard import from_meta

    return to_onnx_bytes(bundle.model, batch, bundle.window, opset, from_meta(bundle.meta) if with_guard else None)


def deploy_to_onnx_bytes(deploy, batch: int, window: int, opset: int = OPSET) -> bytes:
    import torch

    from .guard_export import tap_output
    from .models.blocks import deploy_ops

    deploy.eval()
    f = io.BytesIO()
    outputs = [OUTPUT_NAME] + [tap_output(t) for t in getattr(deploy, "taps", ())]
    with deploy_ops(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(deploy, (torch.zeros(batch, 1, window),), f, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=outputs, do_constant_folding=True)
    return f.getvalue()


def annotate(onnx_model, meta: dict, extra: dict | None = None) -> None:
    """Store the bundle metadata the later stages need inside the ONNX file."""
    import json

    props = {"drsn_edge.class_names": json.dumps(meta["class_names"]), "drsn_edge.fs": str(meta["fs"]),
             "drsn_edge.window": str(meta["window"]), "drsn_edge.normalization": meta["normalization"],
             "drsn_edge.arch": meta["arch"], "drsn_edge.config": json.dumps(meta["config"])}
    props.update(extra or {})
    del onnx_model.metadata_props[:]
    for k, v in props.items():
        p = onnx_model.metadata_props.add()
        p.key, p.value = k, v
    onnx_model.producer_name = "drsn-edge"


def ort_session(model_bytes: bytes, threads: int = 1):
    from .deps import onnxruntime

    ort = onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def run_ort(session, x: np.ndarray, batch: int, output: str | None = None) -> np.ndarray:
    """Run a static-batch session over any number of windows (the last batch is padded); the first output
    (the logits) or the one named."""
    name = session.get_inputs()[0].name
    fetch = [output or session.get_outputs()[0].name]
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - n,) + chunk.shape[1:], dtype=chunk.dtype)])
        outs.append(session.run(fetch, {name: chunk.astype(np.float32)})[0][:n])
    return np.concatenate(outs)


GUARD_RTOL = 1e-3  # float32 graph vs float64 NumPy on the same features: rounding only


def run_ort_guard(session, x: np.ndarray, batch: int) -> np.ndarray | None:
    """The guard_score output over any number of windows (None when the graph has none)."""
    from .guard_export import SCORE

    if SCORE not in [o.name for o in session.get_outputs()]:
        return None
    return run_ort(session, x, batch, SCORE)


def validate_guard(bundle, raw: bytes, x: np.ndarray, batch: int) -> dict | None:
    """The float export's guard_score against the bundle's guard on the same windows (None without a guard)."""
    from .guard import from_meta, guard_features

    g = from_meta(bundle.meta)
    if g is None:
        return None
    got = run_ort_guard(ort_session(raw), x, batch)
    ref = g.score(guard_features(g, bundle.model, x))
    rel = float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-9)))
    if rel > GUARD_RTOL:
        raise ExportValidationError(f"the exported guard score differs from the bundle's by {100 * rel:.3g} % "
                                    f"(tolerance {100 * GUARD_RTOL:g} %)")
    from .guard_export import FEATURES, SCORE, guard_meta

    return {**guard_meta(g), "outputs": [FEATURES, SCORE], "max_rel_score_diff": rel}


def compare_outputs(ref: np.ndarray, got: np.ndarray) -> dict:
    from .comparison import output_stats

    return output_stats(ref, got)


def export(model_path=None, out="model.onnx", batch: int = 1, opset: int = OPSET, data: str | None = None,
           n_check: int = 64, atol: float = 1e-3) -> dict:
    """The `export` command: bundle → deploy-form ONNX (validated) + sidecar."""
    from .artifacts import tool_versions, write_sidecar
    from .deps import onnx
    from .evaluate import predict_logits, resolve_model
    from .fileio import sha256_file, write_bytes

    out = Path(out)
    if out.suffix != ".onnx":
        raise InputError(f"ONNX files end in .onnx, got '{out.name}'")
    if batch < 1:
        raise InputError(f"batch must be at least 1, got {batch}")
    if not 13 <= opset <= 21:
        raise InputError(f"opset must be in 13..21 (17 recommended), got {opset}")
    t0 = time.perf_counter()
    bundle, model_path = resolve_model(model_path)
    from .outputs import guard_file

    guard_file(out, [model_path, data], [out.with_suffix(".json")])
    raw = bundle_onnx_bytes(bundle, batch, opset)
    om = onnx().load_from_string(raw)
    src_hash = sha256_file(model_path)
    keep = {p.key: p.value for p in om.metadata_props if p.key == "drsn_edge.guard"}
    annotate(om, bundle.meta, {"drsn_edge.source_sha256": src_hash, "drsn_edge.batch": str(batch), **keep})
    try:
        onnx().checker.check_model(om, full_check=True)
    except Exception as exc:
        raise ExportValidationError(f"exported ONNX failed the checker: {exc}") from None
    raw = om.SerializeToString()
    x, src = validation_windows(bundle.meta, data, n_check)
    ref = predict_logits(bundle.model, x)
    got = run_ort(ort_session(raw), x, batch)
    cmp = compare_outputs(ref, got)
    if cmp["max_abs_diff"] > atol or cmp["top1_agreement"] < 1.0:
        raise ExportValidationError(
            f"ONNX Runtime output differs from PyTorch: max abs diff {cmp['max_abs_diff']:.3g} (tolerance {atol:g}), "
            f"top-1 agreement {100 * cmp['top1_agreement']:.2f} %; the model may use an op the exporter mishandles")
    guard_check = validate_guard(bundle, raw, x, batch)
    write_bytes(out, raw)
    info = {
        "kind": "onnx", "precision": "fp32", "backend": "onnxruntime", "target": None,
        "source_model": str(model_path), "source_model_sha256": src_hash, "arch": bundle.arch,
        "input": {"name": INPUT_NAME, "shape": [batch, 1, bundle.window], "dtype": "float32",
                  "normalization": bundle.normalization, "quantization": None},
        "output": {"name": OUTPUT_NAME, "shape": [batch, len(bundle.class_names)], "dtype": "float32",
                   "quantization": None},
        "class_names": bundle.class_names, "fs": bundle.fs, "window": bundle.window, "opset": opset,
        "validation": {**cmp, "windows": src, "atol": atol},
        "guard": guard_check,
        "tools": tool_versions("torch", "onnx", "onnxruntime"),
    }
    try:
        side = write_sidecar(out, info)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    nodes = len(om.graph.node)
    return {"artifact": str(out), "sidecar": str(side), "nodes": nodes,
            "ops": sorted({n.op_type for n in om.graph.node}), "validation": info["validation"],
            "wall_s": time.perf_counter() - t0, "model": str(model_path)}
