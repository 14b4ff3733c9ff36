"""The `quantize` stage: bundle + calibration set → INT8 QDQ ONNX (linted, accuracy-checked) + sidecar."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import CheckFailedError, InputError
from .ptq import DEFAULT_METHOD, METHODS


def evaluation_set(meta: dict, data: str | None, noise_kinds, snrs, windows_per_class: int, seed: int):
    """Windows to measure float vs INT8 on: --data (its test split) or fresh simulated recordings,
    swept over the noise grid."""
    from ..data.noise import noise_sweep
    from ..evaluate import fresh_test_set, load_test_windows

    if data is not None:
        ds, src = load_test_windows(meta, data)
    else:
        ds = fresh_test_set(meta, windows_per_class, seed=100_000 + seed)
        src = f"simulated ({windows_per_class} windows/class, seed {100_000 + seed})"
    if noise_kinds and snrs:
        ds = noise_sweep(ds, noise_kinds, snrs, seed=seed + 1)
    return ds, src


def qat_training_windows(meta: dict, qat_data: str | None, seed: int):
    """Labelled raw windows for quantization-aware fine-tuning: the train split of --qat-data, or fresh
    simulated recordings (own seed, never the evaluation's) when the model's classes are simulated."""
    from ..data.dataset import load_dataset
    from ..data.simulator import CLASS_NAMES, synthesize
    from ..evaluate import check_compatible

    if qat_data is not None:
        ds = load_dataset(qat_data)
        check_compatible(meta, ds)
        ds = ds.subset(ds.split != "test")
        if len(ds) == 0:
            raise InputError(f"'{qat_data}' has no windows outside the test split for fine-tuning")
        return ds.x, ds.y, str(qat_data)
    if any(c not in CLASS_NAMES for c in meta["class_names"]):
        raise InputError("--qat needs labelled training windows for this model's classes; pass --qat-data")
    ds = synthesize(windows_per_class=400, recordings_per_class=80, classes=meta["class_names"],
                    seed=7_000 + seed, split=(1.0, 0.0, 0.0), fs=meta["fs"], window=meta["window"])
    return ds.x, ds.y, f"simulated (400 windows/class, seed {7_000 + seed})"


def _check_out(out) -> Path:
    out = Path(out)
    if out.suffix != ".onnx":
        raise InputError(f"ONNX files end in .onnx, got '{out.name}'")
    return out


def quantize_model(model=None, calib=None, out="model.int8.onnx", method: str = DEFAULT_METHOD, batch: int = 1,
                   max_drop: float = 1.0, data=None, noise_kinds=("gaussian", "laplacian", "pink"),
                   snrs=tuple(float(s) for s in range(-5, 6)), windows_per_class: int = 20, seed: int = 0,
                   sensitivity: bool = False, auto_mixed: bool = False, qat_epochs: int = 0,
                   qat_data: str | None = None, progress=None) -> dict:
    from ..artifacts import tool_versions, write_sidecar
    from ..calibration import model_and_calibration
    from ..data.dataset import normalize
    from ..evaluate import drop_pp, predict_logits
    from ..export import (INPUT_NAME, OUTPUT_NAME, ExportValidationError, compare_outputs, deploy_to_onnx_bytes,
                          ort_session, run_ort, to_onnx_bytes)
    from ..fileio import sha256_file, write_bytes
    from .lint import check as lint_check
    from .ptq import quantize_onnx
    from .report import compare
    from .sensitivity import analyse
    from .sensitivity import auto_mixed as search_mixed
    from .sensitivity import node_groups

    out = _check_out(out)
    if method not in METHODS:
        raise InputError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    if batch < 1:
        raise InputError(f"batch must be at least 1, got {batch}")
    if max_drop < 0:
        raise InputError("--max-drop must be ≥ 0")
    if qat_epochs < 0:
        raise InputError("--qat takes a number of epochs ≥ 0")
    step = progress or (lambda *a, **k: None)
    t0 = time.perf_counter()
    bundle, model_path, cal, cal_path, warnings, cx = model_and_calibration(model, calib)
    if len(cx) < batch:
        raise InputError(f"calibration set has {len(cx)} windows, fewer than one batch of {batch}")
    ds, src = evaluation_set(bundle.meta, data, list(noise_kinds or []), list(snrs or []), windows_per_class, seed)
    x = normalize(ds.x, bundle.normalization)

    step("export")
    float_bytes = to_onnx_bytes(bundle.model, batch, bundle.window)
    float_logits = run_ort(ort_session(float_bytes), x, batch)
    torch_check = compare_outputs(predict_logits(bundle.model, x[:64]), float_logits[:64])
    if torch_check["max_abs_diff"] > 1e-3:
        raise ExportValidationError(f"float ONNX differs from PyTorch by {torch_check['max_abs_diff']:.3g}")

    source_bytes, qat_info = float_bytes, None
    if qat_epochs:
        from .qat import finetune

        tx, ty, qat_src = qat_training_windows(bundle.meta, qat_data, seed)
        t_qat = time.perf_counter()
        deploy = finetune(bundle.model, bundle.window, cx, tx, ty, qat_epochs, bundle.normalization, seed=seed,
                          progress=lambda e, n, loss: step(f"QAT epoch {e}/{n} loss {loss:.3f}", e, n))
        source_bytes = deploy_to_onnx_bytes(deploy.set_batch(batch), batch, bundle.window)
        qat_info = {"epochs": qat_epochs, "data": qat_src, "windows": int(len(tx)), "lr": 1e-3,
                    "wall_s": time.perf_counter() - t_qat}

    def int8(float_groups: list[str], groups=None) -> bytes:
        excl = [n for g in float_groups for n in groups[g]] if float_groups else []
        return quantize_onnx(source_bytes, cx, batch, method, nodes_to_exclude=excl)

    step("quantize")
    t_q = time.perf_counter()
    q_bytes = int8([])
    t_quant = time.perf_counter() - t_q
    lint_check(q_bytes)
    step("evaluate")
    rep = compare(float_logits, run_ort(ort_session(q_bytes), x, batch), ds.y, ds.noise, ds.snr_db,
                  bundle.class_names)
    result = {"method": method, "qat": qat_info, "float_groups": [], "sensitivity": None, "mixed": None}

    if sensitivity or (auto_mixed and rep["accuracy_drop_pp"] > max_drop):
        groups = node_groups(float_bytes)
        # sensitivity on a subset of the evaluation windows to keep it tractable
        sub = np.random.default_rng(seed).choice(len(x), min(len(x), 1500), replace=False)
        fsub = float_logits[sub]

        def drop_with_float(fg: list[str]) -> float:
            g = run_ort(ort_session(int8(fg, groups)), x[sub], batch)
            return drop_pp(ds.y[sub], fsub.argmax(1), g.argmax(1))

        step("sensitivity")
        ranked = analyse(groups, drop_with_float, progress=lambda i, n: step("sensitivity", i, n))
        result["sensitivity"] = ranked
        if auto_mixed and rep["accuracy_drop_pp"] > max_drop:
            mixed = search_mixed(ranked, drop_with_float, max_drop)
            result["mixed"] = mixed
            if mixed["float_groups"]:
                q_bytes = int8(mixed["float_groups"], groups)
                lint_check(q_bytes)
                rep = compare(float_logits, run_ort(ort_session(q_bytes), x, batch), ds.y, ds.noise, ds.snr_db,
                              bundle.class_names)
                result["float_groups"] = mixed["float_groups"]

    passed = rep["accuracy_drop_pp"] <= max_drop  # the drop is exact (from counts): a tie passes
    summary = {
        "artifact": str(out) if passed else None, "model": str(model_path), "calibration": cal_path,
        "calibration_windows": len(cal), "evaluation": src, "warnings": warnings, "max_drop_pp": max_drop,
        "passed": passed, "quantize_s": t_quant, **result, **rep,
    }
    summary["wall_s"] = time.perf_counter() - t0
    if not passed:
        summary["error"] = (f"INT8 accuracy drop {rep['accuracy_drop_pp']:.2f} pp exceeds --max-drop {max_drop:g} pp; "
                            "try another --method, --auto-mixed or --sensitivity")
        return summary
    write_bytes(out, q_bytes)
    try:
        import onnx

        qm = onnx.load_from_string(q_bytes)
        in_scale = input_scale(qm)
        write_sidecar(out, {
            "kind": "onnx-qdq", "precision": "int8" if not result["float_groups"] else "int8+fp16",
            "backend": "tensorrt", "target": None, "source_model": str(model_path),
            "source_model_sha256": sha256_file(model_path), "arch": bundle.arch,
            "calibration": {"path": cal_path, "sha256": sha256_file(cal_path), "windows": len(cal), "method": method},
            "qat": qat_info,
            "input": {"name": INPUT_NAME, "shape": [batch, 1, bundle.window], "dtype": "float32",
                      "normalization": bundle.normalization,
                      "quantization": {"scale": in_scale, "zero_point": 0, "dtype": "int8"}},
            "output": {"name": OUTPUT_NAME, "shape": [batch, len(bundle.class_names)], "dtype": "float32",
                       "quantization": None},
            "float_groups": result["float_groups"],
            "quantization": {"activations": "int8 symmetric per-tensor", "weights": "int8 symmetric per-channel (axis 0)",
                             "bias": "float (not quantized)", "opset": qm.opset_import[0].version},
            "class_names": bundle.class_names, "fs": bundle.fs, "window": bundle.window,
            "accuracy": {k: rep[k] for k in ("float_accuracy", "int8_accuracy", "accuracy_drop_pp", "grid_drop_pp",
                                             "agreement", "sqnr_db", "n")},
            "tools": tool_versions("onnx", "onnxruntime", "torch"),
        })
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    summary["sidecar"] = str(out.with_suffix(".json"))
    return summary


def input_scale(qm) -> float | None:
    """Scale of the int8 tensor that feeds the first convolution (the quantized network input)."""
    import onnx

    inits = {i.name: i for i in qm.graph.initializer}
    producer = {o: n for n in qm.graph.node for o in n.output}
    stem = next((n for n in qm.graph.node if n.op_type == "Conv"), None)
    dq = producer.get(stem.input[0]) if stem is not None else None
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[1] not in inits:
        return None
    return float(onnx.numpy_helper.to_array(inits[dq.input[1]]))


def raise_if_failed(summary: dict) -> None:
    if not summary["passed"]:
        raise CheckFailedError(summary["error"])
