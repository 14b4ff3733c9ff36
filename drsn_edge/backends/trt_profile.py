"""TensorRT's layer profiler for a build's engine (the `tensorrt` backend's profiler), on the Jetson it was
built for: over SSH through the device agent (`--device ssh://user@jetson`), or on this machine when it is
that Jetson (the same agent command, run locally).

The agent's `profile-engine` runs trtexec on the build's engine plan: `--loadEngine=model.engine
--separateProfileRun --dumpProfile --exportProfile=profile.json --exportTimes=times.json` (TensorRT's
IProfiler behind trtexec: one timed run without the profiler, then one with it). The exported profile is a
JSON array: `{"count": N}` (the profiled iterations), then one object per engine layer — `name`, `timeMs`
(over all iterations), `averageMs`, `medianMs` (TensorRT 8.4 and later), `percentage`. Layer names carry the
ONNX node names they were built from ("A + B" when fused), which map back to the model's own names."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DeviceError, InputError, MissingDependencyError
from .tensorrt import ENGINE, _version_tuple


def parse_trtexec_profile(profile: list) -> tuple[int, list[dict]]:
    """(profiled iterations, [{name, ms}]) from trtexec's exported profile; ms per iteration: the median
    where trtexec gives it, else the average."""
    if not isinstance(profile, list) or not profile or not isinstance(profile[0], dict) or "count" not in profile[0]:
        raise DeviceError("trtexec's exported profile is not the documented [{\"count\": N}, {layer}...] array")
    layers = []
    for p in profile[1:]:
        if not isinstance(p, dict) or "name" not in p or ("averageMs" not in p and "medianMs" not in p):
            raise DeviceError(f"trtexec's exported profile has a layer entry without name/averageMs: {str(p)[:80]}")
        layers.append({"name": str(p["name"]), "ms": float(p.get("medianMs", p.get("averageMs")))})
    return int(profile[0]["count"]), layers


def layer_rows(layers: list[dict], onnx_bytes: bytes | None) -> list[dict]:
    """Rows for the profile stage: each TensorRT layer with the module it belongs to (its first ONNX node's;
    a layer naming none — a reformat of the input, a constant — joins the block around it), op type and the
    MACs of the convolutions it runs (each charged once, from the ONNX graph's shapes)."""
    from ..layers import assign_modules, trt_layer_modules, trt_layer_op_type, trt_mac_nodes
    from .onnxrt import onnx_conv_layers

    macs = onnx_conv_layers(onnx_bytes)[0] if onnx_bytes else {}
    modules = assign_modules([(trt_layer_modules(la["name"]) or [""])[0] for la in layers])
    charged, rows = set(), []
    for la, module in zip(layers, modules):
        mine = [m for m in dict.fromkeys(trt_mac_nodes(la["name"])) if m in macs and m not in charged]
        charged.update(mine)
        rows.append({"name": la["name"], "module": module, "op_type": trt_layer_op_type(la["name"]),
                     "macs": sum(macs[m] for m in mine), "time_us": la["ms"] * 1000.0,
                     "modules": trt_layer_modules(la["name"])})
    return rows


def _open(device, options: dict):
    """The device to profile on: the URL given, else this machine when it is a Jetson with trtexec."""
    from ..devices import open_device

    if device:
        if not str(device).startswith(("ssh://", "local")):
            raise InputError(f"a TensorRT engine is profiled on its Jetson: use --device ssh://user@jetson, not '{device}'")
        return open_device(device, **options)
    from ..jetson_local import detect_local_jetson

    facts = detect_local_jetson()
    if not (facts["is_jetson"] and facts["trtexec"]):
        raise MissingDependencyError("TensorRT's layer profiler runs on the Jetson the engine was built for (trtexec "
                                     "there): pass --device ssh://user@jetson, or run drsn-edge profile on the Jetson")
    return open_device("local", **options)


def _check_versions(build, res: dict, where: str) -> None:
    """Name a TensorRT version mismatch between the engine's sidecar and the device's packages (trtexec's own
    "version tag does not match" says the same, less plainly)."""
    from ..fileio import read_json

    side = build.folder / Path(ENGINE).with_suffix(".json")
    want = (read_json(side) if side.is_file() else {}).get("tensorrt")
    have = [v for v in (res.get("packages") or {}).values() if v]
    if want and have and _version_tuple(want) not in {_version_tuple(v.split(":")[-1]) for v in have}:
        raise DeviceError(f"the engine was built with TensorRT {want}, {where} has {', '.join(have)}: rebuild the "
                          "engine there (drsn-edge build --device …)")


def profile_layers(build, x: np.ndarray, repeats: int = 100, warmup: int = 20, device=None, device_options=None,
                   progress=None) -> dict:
    """Per-layer times of the build's engine from TensorRT's profiler (trtexec), mapped to the model's layers.
    trtexec feeds its own random input (TensorRT's kernels take the same time whatever the values)."""
    engine = build.folder / ENGINE
    if not engine.is_file():
        raise InputError(f"'{build.folder}' has no TensorRT engine ({ENGINE}): build it on the Jetson first "
                         f"(drsn-edge build --target {build.target} --device ssh://user@jetson)")
    step = progress or (lambda *a, **k: None)
    with _open(device, device_options or {}) as dev:
        step("engine to the device")
        dev.put(engine, ENGINE)
        step("TensorRT layer profiler")
        res = dev.run_agent("profile-engine", {"engine": ENGINE, "iterations": repeats, "warmup_ms": 200}, check=False)
        where = dev.url
    if "error" in res:
        hint = f" ({res['hint']})" if res.get("hint") else ""
        raise DeviceError(f"profiling the engine on {where} failed: {res['error']}{hint}")
    _check_versions(build, res, where)
    count, layers = parse_trtexec_profile(res["profile"])
    onnx = build.file(build.manifest["artifact"]) if build.manifest.get("artifact", "").endswith(".onnx") else None
    rows = layer_rows(layers, onnx.read_bytes() if onnx is not None and onnx.is_file() else None)
    compute = res.get("compute_ms") or []
    return {"rows": rows, "total_us": sum(r["time_us"] for r in rows), "runs": count, "device": where,
            "wall_p50_us": float(np.median(compute)) * 1000.0 if compute else 0.0,
            "runtime": f"tensorrt engine on {where}",
            "method": (f"TensorRT layer profiler (trtexec --separateProfileRun --exportProfile), {count} profiled "
                       "iterations, median per layer where trtexec gives it (else the average); trtexec's own input"),
            "command": " ".join(res.get("command") or [])}

