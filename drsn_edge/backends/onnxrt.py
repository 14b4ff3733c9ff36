"""ONNX Runtime backend: float or QDQ int8 ONNX (TensorRT's Q/DQ rules), run in-process on this machine
or through the device agent on a remote device. The Jetson backend uses the same runners where a device
has no TensorRT (ONNX Runtime stands in)."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DeviceError, InputError
from .base import Backend, BuildContext, BuildOutput, CommonOptions, RunnerBase

SWEEP_BATCHES = (8, 32)  # besides batch 1; the deploy graph has a static batch, so each size is an artifact


@dataclass
class Options(CommonOptions):
    method: str = "auto"  # every calibration method measured on validation windows, the best kept
    precision: str = "int8"

    def validate(self, target) -> None:
        from ..quantize.ptq import METHODS

        super().validate(target)
        if self.method not in ("auto", *METHODS):
            raise InputError(f"unknown --method '{self.method}'; choose one of auto, {', '.join(METHODS)}")
        if self.precision not in ("int8", "fp32"):
            raise InputError(f"{target.name} runs ONNX Runtime in int8 or fp32, got --precision {self.precision}")


def artifact_name(precision: str) -> str:
    return "model.int8.onnx" if precision == "int8" else "model.onnx"


def sweep_name(artifact: str, batch: int) -> str:
    stem = artifact[: -len(".onnx")]
    return f"{stem}.b{batch}.onnx"


def write_onnx(ctx: BuildContext, method: str, precision: str) -> BuildOutput:
    """The (QDQ int8 or float) ONNX with its sidecar, measured on the evaluation spec, and one static-batch
    variant per sweep size (same calibration and method) for throughput by batch size."""
    from ..export import bundle_onnx_bytes, export
    from ..fileio import write_bytes
    from ..guard_export import adapt_onnx
    from ..quantize.ptq import quantize_onnx
    from ..quantize.run import quantize_model, raise_if_failed

    name = artifact_name(precision)
    path = ctx.out / name
    ctx.progress("quantize" if precision == "int8" else "export")
    if precision == "int8":
        q = quantize_model(ctx.model_path, ctx.calibration_path, path, method=method, max_drop=ctx.options.max_drop,
                           max_cell_drop=ctx.options.max_cell_drop, spec=ctx.spec)
        raise_if_failed(q)
        accuracy, method, selection = q.comparison, q.method, q.method_selection
    else:
        export(ctx.model_path, path)
        accuracy, selection = None, None
    ctx.progress("sweep variants")
    for b in SWEEP_BATCHES:
        fb = bundle_onnx_bytes(ctx.bundle, b)
        qb = adapt_onnx(quantize_onnx(fb, ctx.calib_x, b, method), ctx.bundle, ctx.calib_x, b) if precision == "int8" else fb
        write_bytes(ctx.out / sweep_name(name, b), qb)
    return BuildOutput(artifact=name, accuracy=accuracy, details={"method": method if precision == "int8" else None,
                                                                 "method_selection": selection,
                                                                 "sweep_batches": [1, *SWEEP_BATCHES]})


def build(ctx: BuildContext) -> BuildOutput:
    out = write_onnx(ctx, ctx.options.method, ctx.options.precision)
    _tag_sidecar(ctx.out / out.artifact, ctx.target.name, "onnxruntime")
    return out


def _tag_sidecar(path: Path, target: str, backend: str, **extra) -> None:
    from ..artifacts import sidecar_path
    from ..fileio import read_json, write_json

    side = sidecar_path(path)
    doc = read_json(side) if side.exists() else {}
    doc.update({"target": target, "backend": backend, **extra})
    write_json(side, doc)


# ---------------------------------------------------------------------------------------------- runners
class OrtRunner(RunnerBase):
    """ONNX Runtime in this process (one intra-op thread by default: what an edge CPU core gives)."""

    def __init__(self, path: str | Path, threads: int = 1, name: str | None = None, variants: dict | None = None):
        super().__init__()
        from ..export import ort_session

        self.path = Path(path)
        self.threads = threads
        self.session = ort_session(self.path.read_bytes(), threads=threads)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.batch = int(inp.shape[0]) if isinstance(inp.shape[0], int) else 1
        self.name = name or f"onnxruntime ({'int8 QDQ' if 'int8' in self.path.name else 'fp32'})"
        self.variants = variants or {}
        from ..guard_export import SCORE, onnx_guard

        self.guard_meta = onnx_guard(self.session)
        self._fetch = [self.session.get_outputs()[0].name] + ([SCORE] if self.guard_meta else [])

    def _infer_one(self, x):
        out = self.session.run(self._fetch, {self.input_name: x})
        if self.guard_meta:
            self._guard = out[1]
        return out[0]

    def profile_ops(self, x: np.ndarray, repeats: int = 100, warmup: int = 20) -> dict:
        return profile_ort_runner(self, x, repeats, warmup)

    def profile_max_runs(self, x: np.ndarray) -> int:
        return ort_max_runs(self.path, x[: self.batch], self.threads)

    def profile_bytes(self, runs: int) -> float:
        """Memory of ONNX Runtime's per-op trace of `runs` runs, read back whole: about 5 kB per graph node
        and run (measured: 2.84 MB per run for the shipped model's 585-node QDQ graph, JSON text and parsed)."""
        import onnx

        nodes = len(onnx.load_model(str(self.path), load_external_data=False).graph.node)
        return float(runs) * nodes * ORT_TRACE_BYTES_PER_NODE

    def sweep(self, x: np.ndarray, runs: int = 20) -> dict[str, float]:
        import time

        out = {}
        for b, path in sorted({1: self.path, **self.variants}.items()):
            r = self if b == 1 else OrtRunner(path, self.threads)
            feed = np.ascontiguousarray(np.resize(x, (r.batch,) + x.shape[1:]), np.float32)
            for _ in range(3):
                r._infer_one(feed)
            t0 = time.perf_counter()
            for _ in range(runs):
                r._infer_one(feed)
            out[str(b)] = b * runs / (time.perf_counter() - t0)
        return out


class AgentOnnxRunner(RunnerBase):
    """ONNX Runtime on a device, through the device agent: the artifact is copied once; each infer() sends
    the windows, runs them after warm-up and fetches the logits (and the guard_score output, where the
    artifact has the domain guard); timings are the device's own."""

    timing_source = "device wall clock (agent)"

    def __init__(self, device, path: str | Path, name: str | None = None, variants: dict | None = None,
                 warmup: int = 20):
        super().__init__()
        from ..guard_export import onnx_file_guard

        self.device, self.path, self.variants, self.warmup = device, Path(path), variants or {}, warmup
        self.name = name or "onnxruntime on the device"
        self.guard_meta = onnx_file_guard(self.path)[1]
        self._sent = False

    def activate(self) -> None:
        super().activate()
        if not self._sent:
            self.device.put(self.path, self.path.name)
            self._sent = True

    def infer(self, x: np.ndarray) -> np.ndarray:
        if not self.active:
            self.activate()
        return agent_infer(self, "run-onnx", {"model": self.path.name, "warmup": self.warmup, "sweep_runs": 1}, x)

    def sweep(self, x: np.ndarray, runs: int = 20) -> dict[str, float]:
        with tempfile.TemporaryDirectory() as tmp:
            inp = Path(tmp) / "sweep.npy"
            np.save(inp, np.ascontiguousarray(x[:32], np.float32))
            out = {}
            for b, path in sorted({1: self.path, **self.variants}.items()):
                res = self.device.run_agent("run-onnx", {"model": Path(path).name, "input": "sweep.npy", "warmup": 3,
                                                         "sweep_runs": runs}, files=[inp, path] if b != 1 else [inp])
                out[str(b)] = res["throughput"][0]["windows_per_s"]
        return out


def fetch_npy(device, name: str, tmp: Path, n: int) -> np.ndarray:
    """A result file the agent wrote in its work dir, read here as a plain .npy with one row per window."""
    device.get(name, tmp / name)
    got = np.load(tmp / name, allow_pickle=False)
    if got.shape[0] != n:
        raise DeviceError(f"device returned {got.shape[0]} results in {name} for {n} windows")
    return got


def agent_infer(runner, command: str, args: dict, x: np.ndarray) -> np.ndarray:
    """Run windows through the device agent's `command` (run-onnx, run-engine) with `args` for it: the logits
    come back, and the guard_score output where the runner's artifact has a guard (runner.last_guard); the
    device's latencies are the runner's."""
    from ..guard_export import SCORE

    extra = {SCORE: "guard_score.npy"} if runner.guard_meta else {}
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "windows.npy"
        np.save(inp, np.ascontiguousarray(x, np.float32))
        res = runner.device.run_agent(command, {**args, "input": "windows.npy", "output": "logits.npy",
                                                "extra_outputs": extra}, files=[inp])
        got = fetch_npy(runner.device, "logits.npy", Path(tmp), len(x))
        runner.last_guard = fetch_npy(runner.device, extra[SCORE], Path(tmp), len(x)).reshape(len(x)).astype(
            np.float64) if extra else None
    runner._lat.extend(float(v) for v in res["latency_ms"])
    return got.astype(np.float32)


def onnx_runner(build, device, name: str | None = None, path: Path | None = None):
    """The ONNX artifact of a build (with its batch-sweep variants) in-process or on the device."""
    path = path or build.artifact
    variants = {b: build.file(sweep_name(path.name, b)) for b in SWEEP_BATCHES
                if build.file(sweep_name(path.name, b)).is_file()}
    if device is None or getattr(device, "transport", "local") == "local":
        return OrtRunner(path, name=name, variants=variants)
    return AgentOnnxRunner(device, path, name=name, variants=variants)


def runner(build, device=None):
    return onnx_runner(build, device)


BACKEND = Backend(name="onnxruntime", description="ONNX Runtime, float or QDQ int8 ONNX (CPU)", Options=Options,
                  build=build, runner=runner, suffixes=(".onnx",))


# ---------------------------------------------------------------------------------------------- profiling
CONV_OPS = ("Conv", "QLinearConv", "FusedConv", "NchwcConv", "Gemm", "FusedGemm", "QGemm", "MatMul")


def onnx_conv_layers(model_bytes: bytes) -> tuple[dict[str, int], dict[str, str]]:
    """(module path → MACs of its convolution or Gemm, tensor name → module of the convolution that
    feeds it through element-wise ops), from the graph's own shapes."""
    from ..deps import onnx
    from ..layers import onnx_node_module

    m = onnx().shape_inference.infer_shapes(onnx().load_from_string(model_bytes))
    shapes = {t.name: [d.dim_value for d in t.type.tensor_type.shape.dim]
              for t in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)}
    shapes.update({t.name: list(t.dims) for t in m.graph.initializer})
    macs, feeder = {}, {}
    for n in m.graph.node:  # topological order: a tensor's feeder is known before its users
        mod = onnx_node_module(n.name)
        if n.op_type in ("Conv", "Gemm", "QLinearConv"):
            w = shapes.get(n.input[3 if n.op_type == "QLinearConv" else 1]) or []
            y = shapes.get(n.output[0]) or []
            if w and y:
                k = int(w[1] if len(w) > 1 else 1) if n.op_type == "Gemm" else int(np.prod(w[1:]))
                macs[mod] = int(np.prod(y)) * k
            feeder[n.output[0]] = mod
        elif n.input and n.input[0] in feeder:
            feeder[n.output[0]] = feeder[n.input[0]]
    return macs, feeder


ORT_MAX_EVENTS = 1_000_000  # ONNX Runtime's profiler records at most this many events, then drops the rest


def _ort_trace(path: Path, x: np.ndarray, threads: int, runs: int) -> list[dict]:
    """ONNX Runtime's profiler events of `runs` runs (the session's log kept quiet: a full trace is reported
    by ort_max_runs beforehand, not logged)."""
    import json
    import os

    from ..deps import onnxruntime

    ort = onnxruntime()
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 4
        opts.enable_profiling, opts.profile_file_prefix = True, os.path.join(tmp, "ort")
        sess = ort.InferenceSession(Path(path).read_bytes(), opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: np.ascontiguousarray(x, np.float32)}
        for _ in range(runs):
            sess.run(None, feed)
        return json.loads(Path(sess.end_profiling()).read_text())


def ort_max_runs(path: Path, x: np.ndarray, threads: int) -> int:
    """How many runs of this model ONNX Runtime's profiler can record (ORT_MAX_EVENTS), from the events of
    two runs (the session's own start-up events counted once)."""
    one, two = len(_ort_trace(path, x, threads, 1)), len(_ort_trace(path, x, threads, 2))
    per_run = max(1, two - one)
    return max(0, (ORT_MAX_EVENTS - (one - per_run)) // per_run)


def ort_profile(path: Path, x: np.ndarray, threads: int, repeats: int, warmup: int) -> dict:
    """Per-node kernel times from ONNX Runtime's own profiler (SessionOptions.enable_profiling) over
    `repeats` batch-1 runs after `warmup` untimed ones. Node names are the optimized graph's; a node that
    ONNX Runtime inserted without a scope (layout reorders) is charged to the node before it."""
    from ..layers import onnx_node_module

    events = _ort_trace(path, x, threads, warmup + repeats)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"][warmup:]
    t_first = runs[0]["ts"] if runs else 0
    rows: dict[str, dict] = {}
    last_module = ""
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < t_first:
            continue
        name = e["name"][: -len("_kernel_time")]
        weight = re.match(r"^([A-Za-z_][\w.]*)\.(weight|bias)_", name)  # a weight's DequantizeLinear
        module = onnx_node_module(name) if name.startswith("/") else weight.group(1) if weight else last_module
        last_module = module or last_module
        r = rows.setdefault(name, {"name": name, "module": module, "op_type": e["args"].get("op_name", "?"), "_d": []})
        r["_d"].append(float(e["dur"]))
    for r in rows.values():
        r["time_us"] = float(np.median(r.pop("_d")))
    kernel_sum = sum(r["time_us"] for r in rows.values())
    floor = min((r["time_us"] for r in rows.values()), default=0.0)
    for r in rows.values():
        r["time_us"] = max(r["time_us"] - floor, 0.0)
    return {"rows": list(rows.values()), "total_us": float(np.median([r["dur"] for r in runs])) if runs else 0.0,
            "kernel_sum_us": kernel_sum, "invoke_floor_us": floor, "runs": len(runs),
            "method": "ONNX Runtime profiler (per-node kernel time, median over runs, less the cheapest node's time: "
                      "the profiler's own cost per node)"}


ORT_TRACE_BYTES_PER_NODE = 5_000


def profile_ort_runner(self, x: np.ndarray, repeats: int = 100, warmup: int = 20) -> dict:
    """OrtRunner's profiler hook: per-node rows (module, op type, MACs, µs per run) for a batch-1 window.
    A convolution that ONNX Runtime fused with its activation is named after the activation's output
    (`/units/units.0/Relu_output_0_nchwc`): it is traced back to the convolution feeding that tensor."""
    res = ort_profile(self.path, x[: self.batch], self.threads, repeats, warmup)
    macs, feeder = onnx_conv_layers(self.path.read_bytes())
    charged = set()
    for r in res["rows"]:
        if r["op_type"] in CONV_OPS:
            hit = feeder.get(r["name"].replace("_nchwc", ""))  # named after the tensor it writes
            if r["module"] not in macs and hit:
                r["module"] = hit
        r["macs"] = 0
        if r["op_type"] in CONV_OPS and r["module"] in macs and r["module"] not in charged:
            r["macs"] = macs[r["module"]]
            charged.add(r["module"])
        if not r["module"]:
            r["module"] = "stem" if r["name"].startswith("/Unsqueeze") or r["name"] == "vibration_q" else "head"
    return res
