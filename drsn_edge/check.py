"""On-device accuracy and latency check.

The model runs on the device — a TensorRT engine built there when the device has TensorRT, otherwise
the INT8 QDQ ONNX in ONNX Runtime (standing in, e.g. on a host or a device without TensorRT) — over test
windows, and is compared with ONNX Runtime's float result on this machine: accuracy against the labels,
top-1 agreement, max abs diff and SQNR of the logits, latency percentiles after warm-up, throughput at
batch 1 and over a batch sweep. The target profile's [check] thresholds decide pass or fail.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import CheckFailedError, DeviceError, InputError

SWEEP = (1, 8, 32)


def device_options(ssh_config=None, ssh_identity=None, remote_python=None) -> dict:
    opts = {}
    if ssh_config:
        opts["config_file"] = ssh_config
    if ssh_identity:
        opts["identity_file"] = ssh_identity
    if remote_python:
        opts["python"] = remote_python
    return opts


def check(target_name: str, device: str = "local", model=None, calib=None, data=None, windows_per_class: int = 10,
          snrs=(-5.0, 0.0, 5.0), seed: int = 0, report: str | None = None, targets_dirs=None, sweep=SWEEP,
          ssh_config=None, ssh_identity=None, remote_python=None, engine=None, progress=None) -> dict:
    from .build import resolve_target
    from .data.dataset import normalize
    from .devices import open_device
    from .export import compare_outputs, ort_session, run_ort, to_onnx_bytes
    from .quantize.ptq import quantize_onnx
    from .quantize.run import evaluation_set
    from .calibration import model_and_calibration
    from .report import latency_summary, write_report

    step = progress or (lambda *a, **k: None)
    t0 = time.perf_counter()
    bundle, model_path, _, _, _, cx = model_and_calibration(model, calib)
    ds, src = evaluation_set(bundle.meta, data, ["gaussian", "laplacian", "pink"], list(snrs), windows_per_class, seed)
    x = normalize(ds.x, bundle.normalization)
    with open_device(device, **device_options(ssh_config, ssh_identity, remote_python)) as dev:
        target = resolve_target(target_name, targets_dirs, dev)
        if target.family == "mcu":
            raise InputError(f"{target.name} is a microcontroller; its on-device check runs over the serial "
                             f"protocol, not over {device}")
        facts = dev.info()
        has_trt = bool(((facts.get("modules") or {}).get("tensorrt") or {}).get("available"))
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            step("quantize")
            float1 = to_onnx_bytes(bundle.model, 1, bundle.window)
            ref = run_ort(ort_session(float1), x, 1)
            variants = {}
            for b in sweep:
                fb = float1 if b == 1 else to_onnx_bytes(bundle.model, b, bundle.window)
                p = tmp / f"model.int8.b{b}.onnx"
                p.write_bytes(quantize_onnx(fb, cx, b))
                variants[b] = p
            np.save(tmp / "windows.npy", x.astype(np.float32))
            if engine is not None and not has_trt:
                raise DeviceError(f"{device} has no TensorRT to run the engine {engine}; check without --engine "
                                  "(ONNX Runtime stands in) or on the Jetson it was built for")
            if has_trt:
                runtime = "tensorrt"
                from .backends.tensorrt import BUILDER, build_on_device, check_engine_compat

                if engine is not None:
                    step("load engine")
                    side = _engine_sidecar(engine)
                    check_engine_compat(side, dev.run_agent("trt-info", {}, files=[BUILDER]))
                    dev.put(engine, "model.engine")
                    eng = {"tensorrt": side.get("tensorrt"), "sm": side.get("sm")}
                    (tmp / "model.engine").write_bytes(Path(engine).read_bytes())
                else:
                    step("build engine on device")
                    eng = build_on_device(dev, tmp, variants[1].name, "model.engine",
                                          {"precision": "int8", "workspace_mb": 256})
                res = dev.run_agent("run-engine", {"engine": "model.engine", "input": "windows.npy",
                                                   "output": "logits.npy", "warmup": 20}, files=[tmp / "windows.npy"])
                lat = res["latency_ms"]
                memory = {"engine_bytes": (tmp / "model.engine").stat().st_size, "tensorrt": eng.get("tensorrt"),
                          "sm": eng.get("sm")}
                throughput_sweep = {}
            else:
                runtime = ("onnxruntime (standing in for TensorRT: no TensorRT on the device)"
                           if target.family == "jetson" else "onnxruntime")
                step("run on device")
                res = dev.run_agent("run-onnx", {"model": variants[1].name, "input": "windows.npy",
                                                 "output": "logits.npy", "warmup": 20, "sweep_runs": 20},
                                    files=[variants[1], tmp / "windows.npy"])
                lat = res["latency_ms"]
                throughput_sweep = {1: res["throughput"][0]["windows_per_s"]}
                for b in sweep:
                    if b == 1:
                        continue
                    r = dev.run_agent("run-onnx", {"model": variants[b].name, "input": "windows.npy",
                                                   "warmup": 3, "sweep_runs": 20}, files=[variants[b]])
                    throughput_sweep[b] = r["throughput"][0]["windows_per_s"]
                memory = None
            dev.get("logits.npy", tmp / "logits.npy")
            got = np.load(tmp / "logits.npy", allow_pickle=False)
    if got.shape != ref.shape:
        raise DeviceError(f"device returned logits of shape {list(got.shape)}, expected {list(ref.shape)}")
    cmp = compare_outputs(ref, got)
    acc = float((got.argmax(1) == ds.y).mean())
    ref_acc = float((ref.argmax(1) == ds.y).mean())
    lat_s = latency_summary(lat)
    th = {"min_accuracy": float(target.check.get("min_accuracy", 0.9)),
          "max_drop_pp": float(target.check.get("max_drop_pp", 1.0)),
          "max_latency_ms": float(target.check.get("max_latency_ms", float("inf")))}
    failures = []
    if acc < th["min_accuracy"]:
        failures.append(f"accuracy {100 * acc:.2f} % < {100 * th['min_accuracy']:.1f} %")
    if 100 * (ref_acc - acc) > th["max_drop_pp"] + 1e-9:  # float rounding must not fail an exact tie
        failures.append(f"drop {100 * (ref_acc - acc):.2f} pp > {th['max_drop_pp']:g} pp")
    if lat_s["p99"] is not None and lat_s["p99"] > th["max_latency_ms"]:
        failures.append(f"p99 latency {lat_s['p99']:.2f} ms > {th['max_latency_ms']:g} ms")
    batch1 = 1000.0 / lat_s["mean"] if lat_s["mean"] else None
    result = {
        "target": target.name, "device": device, "runtime": runtime, "artifact": "model.int8 (QDQ ONNX)" if not has_trt
        else "model.engine", "model": str(model_path), "data": src, "n": int(len(x)),
        "accuracy": acc, "reference_accuracy": ref_acc, "accuracy_drop_pp": 100 * (ref_acc - acc),
        "agreement_with_reference": cmp["top1_agreement"], "max_abs_diff": cmp["max_abs_diff"],
        "sqnr_db": cmp["sqnr_db"], "latency_ms": lat_s,
        "throughput": {"batch1_per_s": batch1, "sweep": {str(k): v for k, v in throughput_sweep.items()}},
        "memory": memory, "thresholds": th, "passed": not failures, "failures": failures,
        "device_facts": {k: facts.get(k) for k in ("hostname", "arch", "os", "python", "jetson")},
    }
    result["wall_s"] = time.perf_counter() - t0
    if report:
        result["report"] = write_report(result, report, lat)
    return result


def _engine_sidecar(engine) -> dict:
    """The sidecar of a prebuilt engine: what TensorRT version and SM it belongs to."""
    from .artifacts import sidecar_path
    from .fileio import read_json

    engine = Path(engine)
    if not engine.is_file():
        raise InputError(f"engine '{engine}' does not exist")
    side = sidecar_path(engine)
    if not side.is_file():
        raise InputError(f"engine '{engine}' has no sidecar '{side.name}' saying which TensorRT and GPU it was built "
                         "for; rebuild it with drsn-edge build")
    return read_json(side)


def raise_if_failed(result: dict) -> None:
    if not result["passed"]:
        raise CheckFailedError("check failed: " + "; ".join(result["failures"]))
