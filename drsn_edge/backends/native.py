"""The `native` backend: the float32 C engine generated from the build's own fp32 ONNX graph
(drsn_edge.cengine.f32codegen), compiled for this machine with gcc -O3 -march=native and called in-process.

`build` exports the deploy graph, generates the engine into `native/`, compiles it, runs it on every
evaluation window and refuses it when its logits leave the float reference's tolerance; the library
(`native/libdrsn_f32.so`, the artifact) runs where it was built, and is recompiled from the sources beside
it on a machine with another processor. The `host` target measures it as one of its candidates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckFailedError, InputError
from .base import Backend, BuildContext, BuildOutput, CommonOptions, RunnerBase

FOLDER = "native"
# Largest difference to the float reference's logits, relative to the largest logit magnitude (at least 1):
# the engine and PyTorch add the same products in another order (vectors along time, FMA contraction), which
# moves float32 logits by a few units in the last place per layer; 1e-3 is far above that and far below
# any change of class.
REL_TOL = 1e-3


@dataclass
class Options(CommonOptions):
    precision: str = "fp32"

    def validate(self, target) -> None:
        super().validate(target)
        if self.precision != "fp32":
            raise InputError(f"{target.name} (native C engine) takes --precision fp32 only, got {self.precision}")


def make_engine(ctx: BuildContext, where: Path, onnx_bytes: bytes | None = None) -> tuple[str, dict]:
    """Generate, compile and verify the engine in where/native; (artifact path in `where`, sidecar extras)."""
    from ..cengine.f32codegen import generate_f32
    from ..cengine.f32host import LIB, install_lib
    from ..export import to_onnx_bytes

    if onnx_bytes is None:
        ctx.progress("export")
        onnx_bytes = to_onnx_bytes(ctx.bundle.model, 1, ctx.bundle.window)
    folder = where / FOLDER
    ctx.progress("generate float C")
    meta = generate_f32(onnx_bytes, folder)
    ctx.progress("compile for this machine")
    lib = install_lib(folder)
    return f"{FOLDER}/{LIB}", {"engine": {**lib, "kernels": len(meta["kernels"]), "onnx_nodes": meta["onnx_nodes"],
                                          "macs": meta["macs"], "buffer_bytes": meta["buffer_bytes"]}}


def verify(logits: np.ndarray, ref: np.ndarray) -> float:
    """Largest relative difference to the float reference; refuse the engine past REL_TOL."""
    scale = max(1.0, float(np.abs(ref).max()))
    worst = float(np.abs(logits - ref).max()) / scale if len(ref) else 0.0
    if worst > REL_TOL:
        raise CheckFailedError(f"the float host engine's logits differ from the float model by {worst:.2e} "
                               f"(relative; tolerance {REL_TOL:g}); report this model and build with another runtime")
    return worst


def build(ctx: BuildContext) -> BuildOutput:
    from ..artifacts import tool_versions, write_sidecar
    from ..build import reference_logits
    from ..comparison import compare
    from ..fileio import sha256_file

    ev = ctx.spec.windows(ctx.bundle.meta)
    artifact, extra = make_engine(ctx, ctx.out)
    ctx.progress("verify against the float model")
    runner = NativeRunner(ctx.out / artifact, extra["engine"]["cpu_signature"])
    ref = reference_logits(ctx.bundle, ev.x)
    got = runner.infer(ev.x)
    extra["engine"]["max_rel_diff"] = verify(got, ref)
    acc = compare(ref, got, ev.y, ev.noise, ev.snr_db, ctx.bundle.class_names)
    b = ctx.bundle
    write_sidecar(ctx.out / artifact, {
        "kind": "native", "target": ctx.target.name, "backend": "native", "runtime": "native", "precision": "fp32",
        "source_model": str(ctx.model_path), "source_model_sha256": sha256_file(ctx.model_path), "arch": b.arch,
        "class_names": b.class_names, "fs": b.fs, "window": b.window, **extra,
        "input": {"shape": [1, 1, b.window], "dtype": "float32", "normalization": b.normalization},
        "tools": tool_versions("torch", "onnx"),
    })
    return BuildOutput(artifact=artifact, accuracy=acc, details={"engine": extra["engine"]})


class NativeRunner(RunnerBase):
    """The float host engine in-process (ctypes), one window per call."""

    name = "native c engine (fp32)"

    def __init__(self, lib_path: Path, built_for: str | None = None):
        super().__init__()
        from ..cengine.f32host import F32Engine

        self.folder = Path(lib_path).parent
        self.built_for = built_for
        self.engine = F32Engine(self.folder, built_for)
        self.shape = [1, 1, self.engine.input_size]

    def _infer_one(self, x):
        return self.engine.run_one(x)

    def profile_ops(self, x: np.ndarray, repeats: int = 100, warmup: int = 20) -> dict:
        from ..cengine.f32host import F32Engine, read_meta

        eng = F32Engine(self.folder, profile=True)
        kernels = read_meta(self.folder)["kernels"]
        row = np.ascontiguousarray(x, np.float32).reshape(-1)
        clocks = np.frombuffer(eng.kernel_ns, dtype=np.float64)
        for _ in range(warmup):
            eng.run_one(row)
        runs = np.empty((repeats, len(kernels)))
        for i in range(repeats):
            clocks[:] = 0.0
            eng.run_one(row)
            runs[i] = clocks
        med = np.median(runs, axis=0) / 1000.0
        rows = [{"name": f"{i}:{k['op_type']}", "module": k["module"], "op_type": k["op_type"], "macs": k["macs"],
                 "time_us": float(t)} for i, (k, t) in enumerate(zip(kernels, med))]
        return {"rows": rows, "total_us": float(np.median(runs.sum(axis=1))) / 1000.0, "runs": repeats,
                "method": "float host engine built with a monotonic clock around each kernel (median over runs)"}


def runner(build, device=None):
    if device is not None and getattr(device, "transport", "local") != "local":
        raise InputError(f"{build.target} builds run on this machine; check them with --device local")
    return NativeRunner(build.artifact, (build.sidecar.get("engine") or {}).get("cpu_signature"))


BACKEND = Backend(name="native", description="float32 C engine generated from the model's graph, compiled for "
                  "this machine (gcc -O3 -march=native)", Options=Options, build=build, runner=runner,
                  suffixes=(".so",))
