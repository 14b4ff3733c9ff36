"""ONNX Runtime backend: float or QDQ int8 ONNX (TensorRT's Q/DQ rules), run in-process on this machine
or through the device agent on a remote device. The Jetson backend uses the same runners where a device
has no TensorRT (ONNX Runtime stands in)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DeviceError, InputError
from .base import Backend, BuildContext, BuildOutput, CommonOptions, RunnerBase

SWEEP_BATCHES = (8, 32)  # besides batch 1; the deploy graph has a static batch, so each size is an artifact


@dataclass
class Options(CommonOptions):
    method: str = "percentile"
    precision: str = "int8"

    def validate(self, target) -> None:
        from ..quantize.ptq import METHODS

        super().validate(target)
        if self.method not in METHODS:
            raise InputError(f"unknown --method '{self.method}'; choose one of {', '.join(METHODS)}")
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
    from ..export import export, to_onnx_bytes
    from ..fileio import write_bytes
    from ..quantize.ptq import quantize_onnx
    from ..quantize.run import quantize_model, raise_if_failed

    name = artifact_name(precision)
    path = ctx.out / name
    ctx.progress("quantize" if precision == "int8" else "export")
    if precision == "int8":
        q = quantize_model(ctx.model_path, ctx.calibration_path, path, method=method, max_drop=ctx.options.max_drop,
                           spec=ctx.spec)
        raise_if_failed(q)
        accuracy = q["comparison"]
    else:
        export(ctx.model_path, path)
        accuracy = None
    ctx.progress("sweep variants")
    for b in SWEEP_BATCHES:
        fb = to_onnx_bytes(ctx.bundle.model, b, ctx.bundle.window)
        write_bytes(ctx.out / sweep_name(name, b), quantize_onnx(fb, ctx.calib_x, b, method) if precision == "int8" else fb)
    return BuildOutput(artifact=name, accuracy=accuracy, details={"method": method if precision == "int8" else None,
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

    def _infer_one(self, x):
        return self.session.run(None, {self.input_name: x})[0]

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
    the windows, runs them after warm-up and fetches the logits; timings are the device's own."""

    timing_source = "device wall clock (agent)"

    def __init__(self, device, path: str | Path, name: str | None = None, variants: dict | None = None,
                 warmup: int = 20):
        super().__init__()
        self.device, self.path, self.variants, self.warmup = device, Path(path), variants or {}, warmup
        self.name = name or "onnxruntime on the device"
        self._sent = False

    def activate(self) -> None:
        super().activate()
        if not self._sent:
            self.device.put(self.path, self.path.name)
            self._sent = True

    def infer(self, x: np.ndarray) -> np.ndarray:
        if not self.active:
            self.activate()
        with tempfile.TemporaryDirectory() as tmp:
            inp = Path(tmp) / "windows.npy"
            np.save(inp, np.ascontiguousarray(x, np.float32))
            res = self.device.run_agent("run-onnx", {"model": self.path.name, "input": "windows.npy",
                                                     "output": "logits.npy", "warmup": self.warmup,
                                                     "sweep_runs": 1}, files=[inp])
            self.device.get("logits.npy", Path(tmp) / "logits.npy")
            got = np.load(Path(tmp) / "logits.npy", allow_pickle=False)
        self._lat.extend(float(v) for v in res["latency_ms"])
        if got.shape[0] != len(x):
            raise DeviceError(f"device returned {got.shape[0]} results for {len(x)} windows")
        return got.astype(np.float32)

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
