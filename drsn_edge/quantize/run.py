"""The `quantize` stage: bundle + calibration set → INT8 QDQ ONNX (linted, accuracy-checked) + sidecar."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import CheckFailedError, InputError
from .auto import AUTO, AUTO_METHODS, worst_snr_drop_pp
from .ptq import METHODS
from .report import QuantizeResult

DEFAULT_MAX_CELL_DROP = 0.5  # pp, the worst SNR level (mean over noise types)


def spec_from(spec=None, data=None, noise_kinds=None, snrs=None, windows_per_class=None, seed=None):
    """The evaluation spec: the one given, or the default with any of its fields overridden."""
    from ..evalspec import EvalSpec

    if spec is not None:
        return spec
    d = EvalSpec()
    return EvalSpec(data=str(data) if data is not None else None,
                    windows_per_class=d.windows_per_class if windows_per_class is None else windows_per_class,
                    noise=d.noise if noise_kinds is None else tuple(noise_kinds),
                    snrs=d.snrs if snrs is None else tuple(snrs), seed=d.seed if seed is None else seed)


def qat_training_windows(meta: dict, qat_data: str | None, seed: int):
    """Labelled raw windows for quantization-aware fine-tuning, as a Dataset (train and val splits): the
    non-test windows of --qat-data, or fresh simulated recordings (own seed, never the evaluation's) when the
    model's classes are simulated; and where they came from."""
    from ..data.dataset import load_dataset
    from ..data.simulator import CLASS_NAMES, synthesize
    from ..evaluate import check_compatible

    if qat_data is not None:
        ds = check_compatible(meta, load_dataset(qat_data))
        ds = ds.subset(ds.split != "test")
        if len(ds) == 0:
            raise InputError(f"'{qat_data}' has no windows outside the test split for fine-tuning")
        return ds, str(qat_data)
    if any(c not in CLASS_NAMES for c in meta["class_names"]):
        raise InputError("--qat needs labelled training windows for this model's classes; pass --qat-data")
    ds = synthesize(windows_per_class=400, recordings_per_class=80, classes=meta["class_names"],
                    seed=7_000 + seed, split=(0.8, 0.2, 0.0), fs=meta["fs"], window=meta["window"])
    return ds, f"simulated (400 windows/class, seed {7_000 + seed})"


def _check_out(out) -> Path:
    out = Path(out)
    if out.suffix != ".onnx":
        raise InputError(f"ONNX files end in .onnx, got '{out.name}'")
    return out


def _validate(out, method: str, batch: int, max_drop: float, qat_epochs: int, max_cell_drop: float) -> Path:
    from ..validate import count, finite

    out = _check_out(out)
    if method not in (AUTO, *METHODS):
        raise InputError(f"unknown method '{method}'; choose one of {', '.join((AUTO, *METHODS))}")
    count("--batch", batch, lo=1, hi=4096)
    finite("--max-drop", max_drop, lo=0.0, hi=100.0)
    finite("--max-cell-drop", max_cell_drop, lo=0.0, hi=100.0)
    count("--qat", qat_epochs, lo=0, hi=1000)
    return out


def _float_reference(bundle, x, batch: int):
    """The float ONNX (checked against PyTorch) and the float logits every stage compares with."""
    from ..evaluate import predict_logits
    from ..export import ExportValidationError, bundle_onnx_bytes, compare_outputs, ort_session, run_ort

    float_bytes = bundle_onnx_bytes(bundle, batch)
    float_logits = predict_logits(bundle.model, x)
    torch_check = compare_outputs(float_logits[:64], run_ort(ort_session(float_bytes), x[:64], batch))
    if torch_check["max_abs_diff"] > 1e-3:
        raise ExportValidationError(f"float ONNX differs from PyTorch by {torch_check['max_abs_diff']:.3g}")
    return float_bytes, float_logits


def _qat_source(bundle, cx, float_bytes, batch, qat_epochs, qat_data, seed, step):
    """The graph to quantize: the float export, or the deploy form after quantization-aware fine-tuning (with
    the bundle's domain guard fitted again to its new weights); and that guard (None: the bundle's, or none)."""
    if not qat_epochs:
        return float_bytes, None, None
    from ..export import deploy_to_onnx_bytes
    from ..guard_export import attach_onnx
    from .qat import finetune

    ds, qat_src = qat_training_windows(bundle.meta, qat_data, seed)
    t_qat = time.perf_counter()
    deploy = finetune(bundle.model, bundle.window, cx, ds.x, ds.y, qat_epochs, bundle.normalization, seed=seed,
                      progress=lambda e, n, loss: step(f"QAT epoch {e}/{n} loss {loss:.3f}", e, n))
    info = {"epochs": qat_epochs, "data": qat_src, "windows": int(len(ds)), "lr": 1e-3,
            "wall_s": time.perf_counter() - t_qat}
    guard, info["guard"] = _qat_guard(bundle, deploy, ds, seed, step)
    raw = deploy_to_onnx_bytes(deploy.set_batch(batch), batch, bundle.window)
    return (attach_onnx(raw, guard) if guard is not None else raw), info, guard


def _qat_guard(bundle, deploy, ds, seed, step):
    """The bundle's guard fitted again to the fine-tuned weights' taps, as training fits one (train split: class
    means and covariance, with the bundle's noise recipe; val split swept: threshold); and a note of it. None
    without a bundle guard or without a val split to set the threshold on."""
    from ..guard import deploy_tap_features, fit_on_data, from_meta, recipe_noise

    g = from_meta(bundle.meta)
    if g is None:
        return None, None
    train_ds, val_ds = ds.select_split("train"), ds.select_split("val")
    if not len(train_ds) or not len(val_ds):
        return None, "not exported: the fine-tuning data has no train and val split to fit the guard on"
    step("QAT guard")
    g2 = fit_on_data(None, train_ds, val_ds, **recipe_noise(bundle.meta), seed=seed, quantile=g.quantile, taps=g.taps,
                     features=lambda x, taps: deploy_tap_features(deploy, x, taps))
    g2.level = g.level or g2.level  # the level range is the data's, not the weights'
    return g2, {"refitted": True, "threshold": g2.threshold, "train_windows": g2.info["train_windows"],
                "held_out_windows": g2.info["held_out_windows"]}


class _Job:
    """One quantization: the graph, calibration, evaluation windows and float reference it works with."""

    def __init__(self, bundle, source_bytes, float_bytes, cx, batch, method, ev, float_logits):
        self.bundle, self.source, self.float_bytes, self.cx = bundle, source_bytes, float_bytes, cx
        self.batch, self.method, self.ev, self.float_logits = batch, method, ev, float_logits

    def int8(self, float_groups=(), groups=None) -> bytes:
        from .ptq import quantize_onnx

        excl = [n for g in float_groups for n in groups[g]] if float_groups else []
        return quantize_onnx(self.source, self.cx, self.batch, self.method, nodes_to_exclude=excl)

    def measure(self, q_bytes: bytes) -> dict:
        from ..export import ort_session, run_ort
        from .lint import check as lint_check
        from .report import compare

        lint_check(q_bytes)
        ev = self.ev
        return compare(self.float_logits, run_ort(ort_session(q_bytes), ev.x, self.batch), ev.y, ev.noise, ev.snr_db,
                       self.bundle.class_names)

    def mixed_precision(self, rep, sensitivity, auto_mixed, max_drop, seed, step):
        """Sensitivity ranking of layer groups, and the fewest groups kept in float to meet max_drop."""
        from ..evaluate import drop_pp
        from ..export import ort_session, run_ort
        from .sensitivity import analyse, node_groups
        from .sensitivity import auto_mixed as search_mixed

        out = {"float_groups": [], "sensitivity": None, "mixed": None, "q_bytes": None, "rep": rep}
        if not (sensitivity or (auto_mixed and rep["accuracy_drop_pp"] > max_drop)):
            return out
        groups = node_groups(self.float_bytes)
        ev = self.ev
        # sensitivity on a subset of the evaluation windows to keep it tractable
        sub = np.random.default_rng(seed).choice(len(ev.x), min(len(ev.x), 1500), replace=False)
        fsub = self.float_logits[sub]

        def drop_with_float(fg: list[str]) -> float:
            g = run_ort(ort_session(self.int8(fg, groups)), ev.x[sub], self.batch)
            return drop_pp(ev.y[sub], fsub.argmax(1), g.argmax(1))

        step("sensitivity")
        out["sensitivity"] = analyse(groups, drop_with_float, progress=lambda i, n: step("sensitivity", i, n))
        if auto_mixed and rep["accuracy_drop_pp"] > max_drop:
            out["mixed"] = search_mixed(out["sensitivity"], drop_with_float, max_drop)
            if out["mixed"]["float_groups"]:
                out["q_bytes"] = self.int8(out["mixed"]["float_groups"], groups)
                out["rep"] = self.measure(out["q_bytes"])
                out["float_groups"] = out["mixed"]["float_groups"]
        return out


def _choose_method(job: "_Job", spec, step) -> dict:
    """--method auto: every method calibrated with the same set and measured on validation windows (never the
    test windows the result is reported on); the job is switched to the winner."""
    from ..evaluate import predict_logits
    from .auto import choose, selection

    sel = spec.windows(job.bundle.meta, split="val")
    sel_job = _Job(job.bundle, job.source, job.float_bytes, job.cx, job.batch, None, sel,
                   predict_logits(job.bundle.model, sel.x))

    def measure(m):
        sel_job.method = m
        rep = sel_job.measure(sel_job.int8())
        rep.pop("_comparison")
        return rep

    job.method, table = choose(AUTO_METHODS, measure, step)
    return selection(job.method, table, sel.description, len(sel))


def quantize_model(model=None, calib=None, out="model.int8.onnx", method: str = AUTO, batch: int = 1,
                   max_drop: float = 1.0, max_cell_drop: float = DEFAULT_MAX_CELL_DROP, data=None, noise_kinds=None,
                   snrs=None, windows_per_class: int | None = None, seed: int | None = None, sensitivity: bool = False,
                   auto_mixed: bool = False, qat_epochs: int = 0, qat_data: str | None = None, progress=None,
                   spec=None) -> "QuantizeResult":
    """Quantize, lint and measure float vs INT8 on the evaluation spec (`spec`, or the default spec with
    data/noise_kinds/snrs/windows_per_class/seed overriding its fields); write the QDQ ONNX and its sidecar
    only when the drop is within max_drop and the worst SNR level's drop within max_cell_drop.
    method "auto" picks the calibration method on validation windows (see quantize/auto.py). Temporaries (ours
    and ONNX Runtime's) stay in a hidden folder beside the output, removed even when interrupted."""
    from ..fileio import private_tmpdir
    from ..outputs import check_writable

    out = _validate(out, method, batch, max_drop, qat_epochs, max_cell_drop)
    check_writable(out)
    with private_tmpdir(out):
        return _quantize_model(model, calib, out, method, batch, max_drop, max_cell_drop, data, noise_kinds, snrs,
                               windows_per_class, seed, sensitivity, auto_mixed, qat_epochs, qat_data, progress, spec)


def _quantize_model(model, calib, out, method, batch, max_drop, max_cell_drop, data, noise_kinds, snrs,
                    windows_per_class, seed, sensitivity, auto_mixed, qat_epochs, qat_data, progress, spec) -> "QuantizeResult":
    import dataclasses

    from ..calibration import model_and_calibration
    from ..outputs import guard_file

    step = progress or (lambda *a, **k: None)
    t0 = time.perf_counter()
    bundle, model_path, cal, cal_path, warnings, cx = model_and_calibration(model, calib)
    guard_file(out, [model_path, cal_path, data, qat_data, getattr(spec, "data", None)], [out.with_suffix(".json")])
    if len(cx) < batch:
        raise InputError(f"calibration set has {len(cx)} windows, fewer than one batch of {batch}")
    spec = spec_from(spec, data, noise_kinds, snrs, windows_per_class, seed)
    spec = dataclasses.replace(spec, calibration=str(cal_path))  # evaluation fallback for unsimulated classes
    spec.preflight(bundle.meta)
    ev = spec.windows(bundle.meta)
    step("export")
    float_bytes, float_logits = _float_reference(bundle, ev.x, batch)
    source, qat_info, qat_guard = _qat_source(bundle, cx, float_bytes, batch, qat_epochs, qat_data, spec.seed, step)
    job = _Job(bundle, source, float_bytes, cx, batch, method, ev, float_logits)
    selection = _choose_method(job, spec, step) if method == AUTO else None
    step("quantize")
    t_q = time.perf_counter()
    q_bytes = job.int8()
    t_quant = time.perf_counter() - t_q
    step("evaluate")
    mp = job.mixed_precision(job.measure(q_bytes), sensitivity, auto_mixed, max_drop, spec.seed, step)
    q_bytes, rep = mp.pop("q_bytes") or q_bytes, mp.pop("rep")
    comparison = rep.pop("_comparison")
    worst = worst_snr_drop_pp(rep)
    error = gate_error(rep["accuracy_drop_pp"], worst, max_drop, max_cell_drop)
    result = QuantizeResult(
        passed=error is None, error=error, artifact=None, sidecar=None, model=str(model_path), calibration=cal_path,
        calibration_windows=len(cal), evaluation=ev.description, eval_spec=spec.to_json(), comparison=comparison,
        max_drop_pp=max_drop, max_cell_drop_pp_limit=max_cell_drop, worst_snr_drop_pp=worst, method=job.method,
        method_requested=method, method_selection=selection, qat=qat_info, float_groups=mp["float_groups"],
        sensitivity=mp["sensitivity"], mixed=mp["mixed"], warnings=warnings, quantize_s=t_quant,
        wall_s=time.perf_counter() - t0)
    if not result.passed:
        return result
    from ..guard_export import adapt_onnx

    # the guard's constants for this artifact's int8 features (after QAT: the refitted guard, on its own weights)
    q_bytes = adapt_onnx(q_bytes, bundle, cx, batch, qat_guard, source if qat_guard is not None else None)
    _write_qdq(out, q_bytes, bundle, model_path, cal, cal_path, job.method, qat_info, mp["float_groups"], batch, rep,
               spec, ev.description)
    result.artifact, result.sidecar = str(out), str(out.with_suffix(".json"))
    return result


def _write_qdq(out, q_bytes, bundle, model_path, cal, cal_path, method, qat_info, float_groups, batch, rep, spec,
               description) -> None:
    """The QDQ ONNX and its sidecar; neither is left behind if the sidecar cannot be written."""
    import onnx

    from ..artifacts import tool_versions, write_sidecar
    from ..export import INPUT_NAME, OUTPUT_NAME
    from ..fileio import sha256_file, write_bytes

    write_bytes(out, q_bytes)
    try:
        qm = onnx.load_from_string(q_bytes)
        write_sidecar(out, {
            "kind": "onnx-qdq", "precision": "int8" if not float_groups else "int8+fp16",
            "backend": "tensorrt", "target": None, "source_model": str(model_path),
            "source_model_sha256": sha256_file(model_path), "arch": bundle.arch,
            "calibration": {"path": cal_path, "sha256": sha256_file(cal_path), "windows": len(cal), "method": method},
            "qat": qat_info,
            "input": {"name": INPUT_NAME, "shape": [batch, 1, bundle.window], "dtype": "float32",
                      "normalization": bundle.normalization,
                      "quantization": {"scale": input_scale(qm), "zero_point": 0, "dtype": "int8"}},
            "output": {"name": OUTPUT_NAME, "shape": [batch, len(bundle.class_names)], "dtype": "float32",
                       "quantization": None},
            "float_groups": float_groups,
            "guard": _guard_meta(qm),
            "quantization": {"activations": "int8 symmetric per-tensor", "weights": "int8 symmetric per-channel (axis 0)",
                             "bias": "float (not quantized)", "opset": qm.opset_import[0].version},
            "class_names": bundle.class_names, "fs": bundle.fs, "window": bundle.window,
            "accuracy": {k: rep[k] for k in ("float_accuracy", "int8_accuracy", "accuracy_drop_pp", "grid_drop_pp",
                                             "agreement", "sqnr_db", "n")},
            "evaluation": {"spec": spec.to_json(), "description": description},
            "tools": tool_versions("onnx", "onnxruntime", "torch"),
        })
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def _guard_meta(qm) -> dict | None:
    """The domain guard the QDQ graph computes (outputs guard_features, guard_score), None without one."""
    import json

    from ..guard_export import FEATURES, META_KEY, SCORE

    meta = {p.key: p.value for p in qm.metadata_props}.get(META_KEY)
    return {**json.loads(meta), "outputs": [FEATURES, SCORE], "features": "from the int8 activations"} if meta else None


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


def gate_error(drop: float, worst_snr_drop: float, max_drop: float, max_cell_drop: float) -> str | None:
    """None when both gates hold, else the one-line reason. The overall drop is exact (from window counts),
    so a tie passes; the worst SNR level's drop is a mean over noise types, so float rounding gets a margin."""
    if drop > max_drop:
        return (f"INT8 accuracy drop {drop:.2f} pp exceeds --max-drop {max_drop:g} pp; "
                "try --method auto, --auto-mixed or --sensitivity")
    if worst_snr_drop > max_cell_drop + 1e-9:
        return (f"INT8 loses {worst_snr_drop:.2f} pp at its worst SNR level, above --max-cell-drop {max_cell_drop:g} pp; "
                "try --method auto, --auto-mixed, more evaluation windows, or raise --max-cell-drop")
    return None


def raise_if_failed(result: "QuantizeResult") -> None:
    if not result.passed:
        raise CheckFailedError(result.error)
