#!/usr/bin/env python3
"""Build and run TensorRT engines on the device itself (a Jetson). Self-contained: it is copied next to
the ONNX on the device and needs only TensorRT's Python bindings (shipped with JetPack), numpy and, for
running, Polygraphy (pure Python) — no drsn-edge installation on the device.

The builder adapts to the TensorRT version it finds:
  8.x   explicit-batch network; INT8 (+FP16 for layers without Q/DQ) builder flags for QDQ models
  10.x  networks are explicit-batch by default; same flags, or a strongly typed network (--strongly-typed)
  11.x  no INT8/FP16 builder flags: always strongly typed, precision comes from the Q/DQ graph
Options: precision, DLA core with GPU fallback (the layers that fall back are reported), workspace
limit, a persistent timing cache, optimization level (TensorRT ≥ 8.6).

  python3 trt_builder.py build --onnx m.onnx --engine m.engine --precision int8 [--dla-core 0]
          [--workspace-mb 256] [--timing-cache cache.bin] [--opt-level 3] [--strongly-typed]
  python3 trt_builder.py run --engine m.engine --inputs x.npy --outputs logits.npy [--logits-name logits]
          [--save guard_score=guard_score.npy]
  python3 trt_builder.py info
Prints exactly one JSON object.
"""

import argparse
import ctypes
import json
import os
import sys
import time


def cuda_sm():
    """Compute capability of GPU 0 via the CUDA runtime (e.g. '87' on Orin), or None."""
    for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so.10.2"):
        # (Python 3.6 compatible: JetPack 4 ships Python 3.6)
        try:
            rt = ctypes.CDLL(name)
        except OSError:
            continue
        major, minor = ctypes.c_int(), ctypes.c_int()
        # cudaDevAttrComputeCapabilityMajor = 75, Minor = 76
        if rt.cudaDeviceGetAttribute(ctypes.byref(major), 75, 0) == 0 and \
                rt.cudaDeviceGetAttribute(ctypes.byref(minor), 76, 0) == 0:
            return "%d%d" % (major.value, minor.value)
    return None


def trt_major(trt):
    return int(trt.__version__.split(".")[0])


def info():
    out = {"sm": cuda_sm()}
    try:
        import tensorrt as trt

        out["tensorrt"] = trt.__version__
    except ImportError as exc:
        out["tensorrt"] = None
        out["error"] = "tensorrt not available: %s" % exc
    for path, key in (("/etc/nv_tegra_release", "l4t"), ("/proc/device-tree/model", "model")):
        try:
            with open(path, "rb") as f:
                out[key] = f.read().decode(errors="replace").strip("\x00\n ")
        except OSError:
            out[key] = None
    return out


def build(onnx_path, engine_path, precision="int8", dla_core=None, workspace_mb=256, timing_cache=None,
          opt_level=None, strongly_typed=False):
    import tensorrt as trt

    major = trt_major(trt)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    has_precision_flags = hasattr(trt.BuilderFlag, "INT8")
    typed = strongly_typed or not has_precision_flags
    if typed:
        if not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            raise RuntimeError("TensorRT %s has no strongly typed networks" % trt.__version__)
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        if not parser.parse(f.read()):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise RuntimeError("ONNX parser: " + "; ".join(errors))
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    else:  # TensorRT < 8.4
        config.max_workspace_size = workspace_mb << 20
    if not typed:
        if precision in ("int8", "fp16"):
            config.set_flag(trt.BuilderFlag.FP16)  # layers without Q/DQ run in FP16
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales come from Q/DQ
    if opt_level is not None and hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = opt_level
    fallback = []
    if dla_core is not None:
        if builder.num_DLA_cores <= dla_core:
            raise RuntimeError("DLA core %d requested but the device has %d" % (dla_core, builder.num_DLA_cores))
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if not config.can_run_on_DLA(layer):
                fallback.append(layer.name)
    cache = None
    if timing_cache:
        blob = b""
        if os.path.exists(timing_cache):
            with open(timing_cache, "rb") as f:
                blob = f.read()
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT could not build the engine (see the build log)")
    tmp = engine_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(serialized)
    os.replace(tmp, engine_path)
    if cache is not None:
        with open(timing_cache + ".tmp", "wb") as f:
            f.write(cache.serialize())
        os.replace(timing_cache + ".tmp", timing_cache)
    shape = list(network.get_input(0).shape)
    return {"engine": engine_path, "tensorrt": trt.__version__, "sm": cuda_sm(), "precision": precision,
            "strongly_typed": typed, "dla_core": dla_core, "dla_gpu_fallback_layers": fallback,
            "input_shape": shape, "workspace_mb": workspace_mb, "build_s": time.perf_counter() - t0,
            "layers": network.num_layers}


class OutputError(ValueError):
    """An output asked for by name that the engine does not have."""


def pick_outputs(result, logits_name=None, extra_names=()):
    """(logits, [extra outputs]) from one TrtRunner.infer result (output name -> array), selected by name: the
    engine keeps the ONNX's output names. Without logits_name, an engine with a single output gives it."""
    names = list(result)
    if logits_name is None:
        if len(names) != 1:
            raise OutputError("the engine has %d outputs (%s): name the logits output" % (len(names), ", ".join(names)))
        logits_name = names[0]
    for name in [logits_name] + list(extra_names):
        if name not in result:
            raise OutputError("the engine has no output '%s' (its outputs: %s)" % (name, ", ".join(names)))
    return result[logits_name], [result[n] for n in extra_names]


def _save_npy(np, path, array):
    tmp = path + ".tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def run(engine_path, inputs_npy, outputs_npy, warmup=20, logits_name=None, extra_outputs=None):
    """Run an engine over windows [N,1,L] with Polygraphy's TensorRT runner; latency per inference. The
    logits (output `logits_name`) go to outputs_npy, the outputs named in extra_outputs ({name: .npy}, e.g.
    the domain guard's guard_score) to their own files."""
    import numpy as np
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    extra = sorted((extra_outputs or {}).items())
    x = np.load(inputs_npy, allow_pickle=False).astype(np.float32)
    with TrtRunner(EngineFromBytes(BytesFromPath(engine_path))) as runner:
        meta = runner.get_input_metadata()
        name = next(iter(meta))
        batch = int(meta[name].shape[0])
        pad = (-len(x)) % batch
        xp = np.concatenate([x, np.zeros((pad,) + x.shape[1:], np.float32)]) if pad else x
        for _ in range(warmup):
            pick_outputs(runner.infer({name: xp[:batch]}), logits_name, [n for n, _ in extra])
        outs, lat = [[] for _ in range(1 + len(extra))], []
        for i in range(0, len(xp), batch):
            res = runner.infer({name: xp[i : i + batch]})
            lat.append(runner.last_inference_time() * 1000.0)
            logits, more = pick_outputs(res, logits_name, [n for n, _ in extra])
            for k, arr in enumerate([logits] + more):
                outs[k].append(np.array(arr, copy=True))
    _save_npy(np, outputs_npy, np.concatenate(outs[0])[: len(x)])
    for (_, path), arrs in zip(extra, outs[1:]):
        _save_npy(np, path, np.concatenate(arrs)[: len(x)])
    return {"latency_ms": lat, "batch": batch, "n": int(len(x)), "logits_output": logits_name,
            "extra_outputs": dict(extra)}


def _name_file(value):
    name, sep, path = value.partition("=")
    if not (name and sep and path):
        raise argparse.ArgumentTypeError("expected NAME=FILE.npy, got %r" % value)
    return name, path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--onnx", required=True)
    b.add_argument("--engine", required=True)
    b.add_argument("--precision", choices=["int8", "fp16", "fp32"], default="int8")
    b.add_argument("--dla-core", type=int, default=None)
    b.add_argument("--workspace-mb", type=int, default=256)
    b.add_argument("--timing-cache", default=None)
    b.add_argument("--opt-level", type=int, default=None)
    b.add_argument("--strongly-typed", action="store_true")
    r = sub.add_parser("run")
    r.add_argument("--engine", required=True)
    r.add_argument("--inputs", required=True)
    r.add_argument("--outputs", required=True)
    r.add_argument("--logits-name", default=None, help="the logits output (needed when the engine has several)")
    r.add_argument("--save", action="append", default=[], metavar="NAME=FILE.npy", type=_name_file,
                   help="save another output too, e.g. guard_score=guard_score.npy")
    sub.add_parser("info")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "info":
            res = info()
        elif a.cmd == "build":
            res = build(a.onnx, a.engine, a.precision, a.dla_core, a.workspace_mb, a.timing_cache, a.opt_level,
                        a.strongly_typed)
        else:
            res = run(a.engine, a.inputs, a.outputs, logits_name=a.logits_name, extra_outputs=dict(a.save))
    except Exception as exc:  # report, never a traceback on stdout
        print(json.dumps({"error": "%s: %s" % (type(exc).__name__, exc)}))
        return 1
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
