"""The `native` backend: the float32 C engine generated from the build's own fp32 ONNX graph
(drsn_edge.cengine.f32codegen), compiled for this machine with gcc -O3 -march=native and called in-process.

`build` exports the deploy graph, generates the engine into `native/`, compiles it, runs it on every
evaluation window and refuses it when its logits leave the float reference's tolerance; the library
(`native/libdrsn_f32.so`, the artifact) runs where it was built, and is recompiled from the sources beside
it on a machine with another processor. The `host` target measures it as one of its candidates.

With a domain guard in the bundle the graph also outputs the guard's taps (guard.<tap>) and the engine copies
them after the logits; the sidecar holds the float guard itself (the engine's taps are the float model's, in
float32: no adaptation), and the runner scores each window's taps with it (guard.Guard.score, on the host,
when the scores are first asked for), so a window's timing is the engine's: logits and taps."""

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
# The guard's taps (means of |x| along time, and the pooled features) come from the same float32 arithmetic in
# another order, so they move by a few ulps per layer too; each tap value is compared relative to its largest
# magnitude over the windows (at least TAP_FLOOR of the largest tap, so that a channel that is ~0 everywhere is
# not held to ulps of nothing). 1e-3 is far above rounding and far below what moves a guard flag.
TAP_REL_TOL = 1e-3
TAP_FLOOR = 1e-3


@dataclass
class Options(CommonOptions):
    precision: str = "fp32"

    def validate(self, target) -> None:
        super().validate(target)
        if self.precision != "fp32":
            raise InputError(f"{target.name} (native C engine) takes --precision fp32 only, got {self.precision}")


def make_engine(ctx: BuildContext, where: Path) -> tuple[str, dict]:
    """Generate, compile and verify the engine in where/native; (artifact path in `where`, sidecar extras: the
    engine, and the guard when the bundle has one)."""
    from ..cengine.f32codegen import generate_f32
    from ..cengine.f32host import LIB, install_lib
    from ..export import to_onnx_bytes
    from ..guard import from_meta

    guard = from_meta(ctx.bundle.meta)
    ctx.progress("export")
    onnx_bytes = to_onnx_bytes(ctx.bundle.model, 1, ctx.bundle.window, guard=guard, score=False)
    folder = where / FOLDER
    ctx.progress("generate float C")
    meta = generate_f32(onnx_bytes, folder)
    ctx.progress("compile for this machine")
    lib = install_lib(folder)
    extra = {"engine": {**lib, "kernels": len(meta["kernels"]), "onnx_nodes": meta["onnx_nodes"],
                        "macs": meta["macs"], "buffer_bytes": meta["buffer_bytes"], "taps_size": meta["taps_size"]}}
    if guard is not None:
        extra["guard"] = engine_guard(guard, meta["taps"])
    return f"{FOLDER}/{LIB}", extra


def engine_guard(guard, taps: list[dict]) -> dict:
    """The sidecar's guard: the float guard (to_json, with guard_export.guard_meta's fields) and the layout of
    the engine's tap values after the logits."""
    from ..guard_export import guard_meta, tap_output

    names = [tap_output(t) for t in guard.taps]
    if [t["name"] for t in taps] != names or [t["size"] for t in taps] != list(guard.tap_dims):
        raise CheckFailedError(f"the float host engine's tap outputs {[t['name'] for t in taps]} do not match the "
                               f"guard's taps {names}; fit the guard again (drsn-edge guard fit)")
    return {**guard.to_json(), **guard_meta(guard), "outputs": taps,
            "features": "the engine's float32 tap outputs after the logits, scored in float64 on the host"}


def verify(logits: np.ndarray, ref: np.ndarray) -> float:
    """Largest relative difference to the float reference; refuse the engine past REL_TOL."""
    scale = max(1.0, float(np.abs(ref).max()))
    worst = float(np.abs(logits - ref).max()) / scale if len(ref) else 0.0
    if worst > REL_TOL:
        raise CheckFailedError(f"the float host engine's logits differ from the float model by {worst:.2e} "
                               f"(relative; tolerance {REL_TOL:g}); report this model and build with another runtime")
    return worst


def verify_taps(taps: np.ndarray, ref: np.ndarray) -> float:
    """Largest difference of the engine's tap values to the float model's, relative to each value's largest
    magnitude (TAP_FLOOR of the largest tap at least); refuse the engine past TAP_REL_TOL."""
    if not len(ref):
        return 0.0
    peak = np.abs(ref).max(axis=0)
    scale = np.maximum(peak, TAP_FLOOR * max(float(peak.max()), 1e-30))
    worst = float((np.abs(np.asarray(taps, np.float64) - ref) / scale).max())
    if worst > TAP_REL_TOL:
        raise CheckFailedError(f"the float host engine's guard taps differ from the float model's by {worst:.2e} "
                               f"(relative; tolerance {TAP_REL_TOL:g}); report this model and build with another "
                               "runtime")
    return worst


def verify_engine(runner: "NativeRunner", bundle, x: np.ndarray, logits: np.ndarray, ref: np.ndarray) -> dict:
    """The engine's outputs of its last `infer(x)` against the float model: logits (verify) and, with a guard,
    its taps against guard.guard_features (verify_taps); the figures for the sidecar."""
    from ..guard import from_meta, guard_features

    got = {"max_rel_diff": verify(logits, ref)}
    guard = from_meta(bundle.meta)
    if guard is not None and runner.last_taps is not None:
        got["max_rel_tap_diff"] = verify_taps(runner.last_taps, guard_features(guard, bundle.model, x))
    return got


def build(ctx: BuildContext) -> BuildOutput:
    from ..artifacts import tool_versions, write_sidecar
    from ..build import reference_logits
    from ..comparison import compare
    from ..fileio import sha256_file

    ev = ctx.spec.windows(ctx.bundle.meta)
    artifact, extra = make_engine(ctx, ctx.out)
    ctx.progress("verify against the float model")
    runner = NativeRunner(ctx.out / artifact, extra["engine"]["cpu_signature"], extra.get("guard"))
    ref = reference_logits(ctx.bundle, ev.x)
    got = runner.infer(ev.x)
    extra["engine"].update(verify_engine(runner, ctx.bundle, ev.x, got, ref))
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
    """The float host engine in-process (ctypes), one window per call; with the sidecar's guard (engine_guard),
    the guard's score of each window's taps."""

    name = "native c engine (fp32)"
    _guard_fn = None

    def __init__(self, lib_path: Path, built_for: str | None = None, guard: dict | None = None):
        super().__init__()
        from ..cengine.f32host import F32Engine
        from ..guard import Guard

        self.folder = Path(lib_path).parent
        self.built_for = built_for
        self.engine = F32Engine(self.folder, built_for)
        self.shape = [1, 1, self.engine.input_size]
        self.guard_meta = guard or None
        self._guard_fn = Guard.from_json(guard) if guard else None
        if guard and self.engine.taps_size != int(guard["dim"]):
            raise InputError(f"the engine in {self.folder} outputs {self.engine.taps_size} tap values, its guard "
                             f"takes {guard['dim']}; build it again")
        self._taps: list[np.ndarray] = []
        self.last_taps: np.ndarray | None = None  # the taps of the last infer's windows [N, D] (with a guard)

    @property
    def last_guard(self) -> np.ndarray | None:
        """The guard's score of each window of the last `infer` (Guard.score of its taps), computed when first
        asked for: the windows' timings are the engine's alone (logits and taps), and a run nobody asks the
        guard of (a latency benchmark) does not pay for the score."""
        if self._last_guard is None and self._guard_fn is not None and self.last_taps is not None:
            self._last_guard = self._guard_fn.score(self.last_taps)
        return self._last_guard

    @last_guard.setter
    def last_guard(self, value) -> None:
        self._last_guard = value

    def _infer_one(self, x):
        if self._guard_fn is None:
            return self.engine.run_one(x)
        both = self.engine.run_one_all(x)  # logits, then taps: split once the windows have run
        self._taps.append(both)
        return both[:self.engine.output_size]

    def infer(self, x: np.ndarray) -> np.ndarray:
        self._taps, self.last_taps = [], None
        y = super().infer(x)
        if self._taps:
            self.last_taps = np.stack(self._taps)[:, self.engine.output_size:].astype(np.float64)
        self._taps = []
        return y

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
    return NativeRunner(build.artifact, (build.sidecar.get("engine") or {}).get("cpu_signature"),
                        build.sidecar.get("guard"))


BACKEND = Backend(name="native", description="float32 C engine generated from the model's graph, compiled for "
                  "this machine (gcc -O3 -march=native)", Options=Options, build=build, runner=runner,
                  suffixes=(".so",))
