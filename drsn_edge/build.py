"""The `build` stage: a model for one target profile. The target's backend picks the builder:
one registry line per backend."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from .errors import InputError


@contextlib.contextmanager
def staged_output(out_dir: Path):
    """Build into a temporary sibling folder; replace `out_dir` only when the build succeeds, so a
    failed build leaves the output folder as it was."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)
    try:
        yield tmp
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            os.replace(out_dir, old / out_dir.name)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def build_jetson(target, model=None, out_dir=None, device=None, precision="int8", dla_core=None,
                 workspace_mb=256, opt_level=None, strongly_typed=False, calib=None, method="percentile",
                 max_drop=1.0, windows_per_class=20, progress=None, **_) -> dict:
    from .artifacts import tool_versions, write_sidecar
    from .backends import tensorrt as trt
    from .fileio import read_json, sha256_file, write_json

    trt.validate_options(target, precision, dla_core, workspace_mb)
    step = progress or (lambda *a, **k: None)
    t0 = time.perf_counter()
    out_dir = Path(out_dir or Path("build") / target.name)
    result = {"target": target.name, "family": target.family, "backend": target.backend, "precision": precision}
    with staged_output(out_dir) as tmp:
        onnx_name = "model.int8.onnx" if precision == "int8" else "model.onnx"
        onnx_path = tmp / onnx_name
        if precision == "int8":
            from .quantize.run import quantize_model, raise_if_failed

            step("quantize")
            q = quantize_model(model, calib, onnx_path, method=method, max_drop=max_drop,
                               windows_per_class=windows_per_class)
            raise_if_failed(q)
            result["accuracy"] = {"float": q["float_accuracy"], "int8": q["int8_accuracy"],
                                  "drop_pp": q["accuracy_drop_pp"], "evaluation": q["evaluation"]}
            result["lint"] = "passed"
        else:
            from .export import export

            step("export")
            export(model, onnx_path)
            result["accuracy"] = None
        trt_version = target.tensorrt
        src_side = read_json(onnx_path.with_suffix(".json"))
        # the ONNX sidecar also says which target the engine is to be built for
        src_side.update({"target": target.name, "engine_for": {"tensorrt": trt_version, "sm": target.sm,
                                                               "jetpack": target.jetpack}})
        write_json(onnx_path.with_suffix(".json"), src_side)
        engine_name = "model.engine"
        cache = f"timing-{target.name}.cache"
        opts = {"precision": precision, "dla_core": dla_core, "workspace_mb": workspace_mb, "timing_cache": cache,
                "opt_level": opt_level, "strongly_typed": strongly_typed}
        trtexec = trt.trtexec_command(trt_version, onnx_name, engine_name, precision, dla_core, workspace_mb,
                                      cache, opt_level, strongly_typed)
        builder_args = ["build", "--onnx", onnx_name, "--engine", engine_name, "--precision", precision,
                        "--workspace-mb", str(workspace_mb), "--timing-cache", cache]
        if dla_core is not None:
            builder_args += ["--dla-core", str(dla_core)]
        if opt_level is not None:
            builder_args += ["--opt-level", str(opt_level)]
        if strongly_typed:
            builder_args.append("--strongly-typed")
        if target.detected is not None:  # `--target jetson` resolved here: build_engine.sh adapts on the device
            staged = trt.stage_portable_folder(tmp, onnx_path, engine_name, opts, target.name)
        else:
            staged = trt.stage_folder(tmp, onnx_path, trtexec, builder_args)
        engine_info = None
        if device is not None:
            step("build on device")
            engine_info = trt.build_on_device(device, tmp, onnx_name, engine_name, opts)
        elif target.detected and target.detected.get("is_jetson"):  # on a Jetson: build with what is here
            step("build engine here")
            engine_info = trt.build_here(tmp, onnx_name, engine_name, opts, target.detected)
        elif trt.tensorrt_available():
            from .backends.trt_builder import build as local_build

            step("build engine")
            cwd = os.getcwd()
            os.chdir(tmp)
            try:
                engine_info = trt.raise_for_builder_error(
                    _call(local_build, onnx_name, engine_name, precision, dla_core, workspace_mb, cache, opt_level,
                          strongly_typed))
            finally:
                os.chdir(cwd)
        files = {k: str(out_dir / Path(v).name) for k, v in staged.items()}
        if engine_info:
            write_sidecar(tmp / engine_name, {
                "kind": "tensorrt-engine", "target": target.name, "backend": "tensorrt", "precision": precision,
                "tensorrt": engine_info.get("tensorrt"), "sm": engine_info.get("sm"),
                "jetpack": target.jetpack, "dla_core": dla_core,
                "dla_gpu_fallback_layers": engine_info.get("dla_gpu_fallback_layers", []),
                "input_shape": engine_info.get("input_shape"), "source_onnx": onnx_name,
                "source_onnx_sha256": sha256_file(onnx_path), "source_model_sha256": src_side.get("source_model_sha256"),
                "class_names": src_side.get("class_names"), "input": src_side.get("input"),
                "built_on": engine_info.get("device"), "tools": tool_versions(), **engine_info.get("sidecar_extra", {}),
            })
            files["engine"] = str(out_dir / engine_name)
            files["engine_sidecar"] = str(out_dir / "model.json")
            result["engine"] = engine_info
            result["next_step"] = None
        else:
            result["engine"] = None
            result["next_step"] = trt.next_step(target, out_dir)
        files["sidecar"] = str(out_dir / onnx_path.with_suffix(".json").name)
        result["artifacts"] = files
        result["trtexec"] = None if trt.is_portable(target) else " ".join(trtexec)
        result["resolved"] = (target.detected or {}).get("summary")
        result["tensorrt"] = trt_version
        result["jetpack"] = target.jetpack
        result["sm"] = target.sm
    result["out_dir"] = str(out_dir)
    result["wall_s"] = time.perf_counter() - t0
    return result


def _call(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # TensorRT raises plain exceptions; report them as a failed build
        return {"error": f"{type(exc).__name__}: {exc}"}


STACK_BYTES = 8 * 1024  # harness stack estimate for the RAM fit (TFLM kernels run on the caller's stack)


def memory_fit(target, model_bytes: int, arena_bytes: int, input_len: int, output_len: int) -> dict:
    """Flash = model + runtime code estimate; RAM = arena + I/O and protocol buffers + stack."""
    runtime = target.runtime_code_bytes if target.runtime_code_bytes is not None else 200 * 1024
    flash = model_bytes + runtime
    ram = arena_bytes + 2 * (input_len + 16) + output_len + STACK_BYTES
    fb, rb = target.flash_bytes, target.ram_budget_bytes
    return {"model_bytes": model_bytes, "runtime_code_bytes": runtime, "flash_bytes": flash, "flash_budget_bytes": fb,
            "arena_bytes": arena_bytes, "ram_bytes": ram, "ram_budget_bytes": rb,
            "ram_share": target.hardware.get("ram_share"), "fits": flash <= fb and ram <= rb}


def build_mcu(target, model=None, out_dir=None, device=None, calib=None, max_drop=1.0, windows_per_class=10,
              progress=None, precision="int8", **_) -> dict:
    """int8 .tflite (litert-torch + ai-edge-quantizer), verified in LiteRT and TFLite Micro, memory fit,
    firmware bundle."""
    import numpy as np

    from .artifacts import tool_versions, write_sidecar
    from .backends import tflite as tfl
    from .backends import tflm
    from .calibration import model_and_calibration
    from .data.dataset import normalize
    from .errors import CheckFailedError
    from .evaluate import predict_logits
    from .fileio import sha256_file
    from .firmware.bundle import arena_with_margin, write_bundle
    from .quantize.run import evaluation_set

    if device is not None:
        raise InputError(f"{target.name} is a microcontroller: build for it without --device and flash the bundle")
    if precision != "int8":
        raise InputError(f"microcontroller targets are int8 only, got --precision {precision}")
    step = progress or (lambda *a, **k: None)
    t0 = time.perf_counter()
    bundle, model_path, cal, cal_path, warnings, cx = model_and_calibration(model, calib)
    out_dir = Path(out_dir or Path("build") / target.name)

    step("convert")
    float_bytes = tfl.float_tflite(bundle.model, bundle.window)
    step("quantize")
    q = tfl.strip_names(tfl.quantize_int8(float_bytes, cx))
    graph = tfl.check_integer_only(q)
    ops = tflm.check_ops_supported(q)
    step("verify")
    ds, src = evaluation_set(bundle.meta, None, ["gaussian", "laplacian", "pink"], [-5.0, 0.0, 5.0],
                             windows_per_class, 0)
    x = normalize(ds.x, bundle.normalization)
    ref = predict_logits(bundle.model, x)
    arena = tflm.min_arena_bytes(q)
    lite = tfl.litert_run(q, x, raw=True)
    micro = tflm.tflm_run(q, x, arena_size=arena_with_margin(arena), raw=True)
    facc = float((ref.argmax(1) == ds.y).mean())
    tacc = float((micro.argmax(1) == ds.y).mean())
    lacc = float((lite.argmax(1) == ds.y).mean())
    accuracy = {"float": facc, "int8": tacc, "drop_pp": 100 * (facc - tacc), "int8_litert": lacc,
                "litert_tflm_agreement": float((lite.argmax(1) == micro.argmax(1)).mean()),
                "litert_tflm_max_lsb": int(np.abs(lite.astype(np.int16) - micro.astype(np.int16)).max()),
                "float_tflm_agreement": float((ref.argmax(1) == micro.argmax(1)).mean()),
                "n": int(len(x)), "evaluation": src, "reference": "TFLite Micro (what the microcontroller computes)"}
    io_in, io_out = graph["input"], graph["output"]
    n_in, n_out = int(np.prod(io_in["shape"])), int(np.prod(io_out["shape"]))
    memory = memory_fit(target, len(q), arena_with_margin(arena), n_in, n_out)
    memory["arena_measured_bytes"] = arena
    result = {"target": target.name, "family": target.family, "backend": target.backend, "precision": "int8",
              "accuracy": accuracy, "memory": memory, "ops": ops, "op_counts": graph["op_counts"],
              "warnings": warnings, "model": str(model_path)}
    if not memory["fits"]:
        raise CheckFailedError(
            f"model does not fit {target.name}: flash {memory['flash_bytes']} B of {memory['flash_budget_bytes']} B, "
            f"RAM {memory['ram_bytes']} B (arena {memory['arena_bytes']} B) of {memory['ram_budget_bytes']} B budget")
    if accuracy["drop_pp"] > max_drop + 1e-9:
        raise CheckFailedError(f"int8 accuracy drop in TFLite Micro {accuracy['drop_pp']:.2f} pp exceeds --max-drop {max_drop:g}")
    with staged_output(out_dir) as tmp:
        (tmp / "model.int8.tflite").write_bytes(q)
        fw = tmp / "firmware"
        fw.mkdir()
        (fw / "model.int8.tflite").write_bytes(q)
        io = {"input": {**io_in, "elements": n_in}, "output": {**io_out, "elements": n_out},
              "window": bundle.window, "fs": bundle.fs}
        files = write_bundle(fw, target, q, ops, arena, io, bundle.class_names, memory)
        write_sidecar(tmp / "model.int8.tflite", {
            "kind": "tflite", "target": target.name, "backend": "tflm", "precision": "int8",
            "source_model": str(model_path), "source_model_sha256": sha256_file(model_path), "arch": bundle.arch,
            "calibration": {"path": cal_path, "sha256": sha256_file(cal_path), "windows": len(cal),
                            "method": "global min/max (ai-edge-quantizer static_wi8_ai8)"},
            "input": {**io_in, "normalization": bundle.normalization},
            "output": io_out, "class_names": bundle.class_names, "fs": bundle.fs, "window": bundle.window,
            "ops": ops, "memory": memory, "accuracy": accuracy,
            "tools": tool_versions("torch", "litert-torch", "ai-edge-quantizer", "ai-edge-litert", "tflite-micro"),
        })
    result["artifacts"] = {"tflite": str(out_dir / "model.int8.tflite"), "sidecar": str(out_dir / "model.int8.json"),
                           "firmware": str(out_dir / "firmware"),
                           "firmware_files": [str(out_dir / "firmware" / f) for f in files["files"]]}
    result["out_dir"] = str(out_dir)
    result["wall_s"] = time.perf_counter() - t0
    return result


# backend of the target profile → builder (one line plugs in a new backend)
BUILDERS = {
    "tensorrt": build_jetson,
    "tflm": build_mcu,
}


def resolve_target(target_name: str, targets_dirs=None, device=None):
    """A target profile by name; `jetson` is resolved from this machine (drsn_edge.jetson_local) or from the
    connected device's L4T release and model."""
    from .targets import get_target, match_jetson

    if target_name == "jetson":
        if device is None or device.transport == "local":
            from .jetson_local import resolve_jetson_target

            return resolve_jetson_target(targets_dirs, purpose="build" if device is None else "check")
        jet = device.info().get("jetson") or {}
        if not jet.get("is_jetson"):
            raise InputError(f"--target jetson needs a Jetson, but {device.url} has no /etc/nv_tegra_release; "
                             "name the profile instead (drsn-edge targets)")
        return match_jetson(jet.get("nv_tegra_release") or "", jet.get("model"), targets_dirs)
    return get_target(target_name, targets_dirs)


def build(target_name: str, model=None, targets_dirs=None, device: str | None = None, device_options=None,
          **options) -> dict:
    if device is None:
        return _dispatch(resolve_target(target_name, targets_dirs), model, None, options)
    from .devices import open_device

    with open_device(device, **(device_options or {})) as dev:
        return _dispatch(resolve_target(target_name, targets_dirs, dev), model, dev, options)


def _dispatch(target, model, device, options) -> dict:
    builder = BUILDERS.get(target.backend)
    if builder is None:
        raise InputError(f"no builder for backend '{target.backend}' of target {target.name} yet")
    return builder(target, model=model, device=device, **options)
