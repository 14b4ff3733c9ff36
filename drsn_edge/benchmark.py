"""The `benchmark` stage: one model, every format this machine can run, one table.

Each format (a line in FORMATS) is built into the work folder with drsn_edge.build.build — or reused from
there when the folder was built from the same model on the same evaluation spec — and its runner goes
over the same EvalSpec windows; drsn_edge.comparison.compare gives accuracy and top-1 agreement with the
float model, the runner's timing gives batch-1 p50/p99, its sweep the throughput. A format that this
installation cannot run is a row too: skipped, with the reason; one that fails says why.
Peak memory is the rise of this process's peak resident set while the format loads and runs (Linux resets
the peak through /proc/self/clear_refs), so one process measures every row in turn."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import DrsnEdgeError, InputError

# formats built through a target profile written into the work folder (the shipped profiles build for
# boards; these name a runtime on this machine)
_WORK_TARGETS = {
    "bench-onnxruntime": 'family = "host"\nbackend = "onnxruntime"\n',
    "bench-litert": 'family = "host"\nbackend = "litert"\n',
    "bench-native": 'family = "host"\nbackend = "native"\n',
}


@dataclass
class Row:
    format: str
    runtime: str
    status: str  # ok | failed | skipped
    reason: str = ""
    artifact: str | None = None
    artifact_bytes: int | None = None
    accuracy: float | None = None
    agreement: float | None = None
    drop_pp: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    throughput_per_s: float | None = None
    throughput_batch: int | None = None
    peak_memory_mib: float | None = None
    timing_source: str = ""
    build_s: float | None = None


@dataclass
class Format:
    label: str
    make: Callable  # (Bench) -> (runner, artifact path or None, build seconds)
    needs: Callable = lambda: None  # () -> why it cannot run here, or None


@dataclass
class Bench:
    work: Path
    model: str | None
    spec: object
    bundle: object
    model_path: str
    force_build: bool = False
    progress: Callable = lambda *a, **k: None

    def built(self, target: str, folder: str, engine: str | None = None, device: str | None = None, **given):
        """(runner factory, artifact, build seconds or None when reused) of a build in the work folder;
        `engine` picks a microcontroller engine (c, tflm), `device` where the runner runs (None: here)."""
        from .backends.base import is_build_folder, load_build
        from .build import build
        from .fileio import sha256_file, write_bytes

        out = self.work / folder
        if is_build_folder(out) and not self.force_build:
            b = load_build(out)
            m = b.manifest
            same = (m.get("source_model_sha256") == sha256_file(self.model_path) and m.get("target") == target
                    and _spec_key(m.get("eval_spec")) == _spec_key(self.spec.to_json())
                    and (engine is None or m.get("backend") == engine)
                    and all(m.get("options", {}).get(k) == v for k, v in given.items()))
            if same:
                return (lambda: b.runner(device)), b.artifact, None
        tdir = self.work / "targets"
        tdir.mkdir(parents=True, exist_ok=True)
        for name, body in _WORK_TARGETS.items():
            write_bytes(tdir / f"{name}.toml", f'name = "{name}"\n{body}'.encode())
        self.progress(f"build {folder}")
        t0 = time.perf_counter()
        build(target, self.model_path, [str(tdir)], out_dir=out, spec=self.spec, force=True, engine=engine, **given)
        b = load_build(out)
        return (lambda: b.runner(device)), b.artifact, time.perf_counter() - t0


def _spec_key(spec: dict | None) -> dict:
    """An evaluation spec as recorded by a build, less the calibration path the build fills in itself."""
    return {k: v for k, v in (spec or {}).items() if k != "calibration"}


@dataclass
class BenchmarkResult:
    model: str
    windows: int
    evaluation: str
    work_dir: str
    rows: list[Row]
    machine: dict = field(default_factory=dict)
    wall_s: float = 0.0
    report: dict | None = None

    def to_json(self) -> dict:
        return asdict(self)

    def best(self) -> Row | None:
        ok = [r for r in self.rows if r.status == "ok" and r.p50_us and r.format != "pytorch fp32"]
        return min(ok, key=lambda r: r.p50_us) if ok else None

    def row(self, label: str) -> Row | None:
        return next((r for r in self.rows if r.format == label), None)


# ---------------------------------------------------------------------------------------------- formats
def _target_build(target: str, folder: str, engine: str | None = None, device: str | None = None,
                  **given) -> Callable:
    def make(b: Bench):
        return b.built(target, folder, engine, device, **given)
    return make


def _torch_runner(b: Bench):
    from .backends.base import RunnerBase

    class TorchRunner(RunnerBase):
        name = "pytorch eager (fp32, 1 thread)"

        def __init__(self, model):
            super().__init__()
            import torch

            self.torch, self.model, self._threads = torch, model.eval(), None

        def activate(self):
            super().activate()
            if self._threads is None:  # one thread like the other runtimes; the caller's setting comes back
                self._threads = self.torch.get_num_threads()
                self.torch.set_num_threads(1)

        def deactivate(self):
            super().deactivate()
            if self._threads is not None:
                self.torch.set_num_threads(self._threads)
                self._threads = None

        def _infer_one(self, x):
            with self.torch.no_grad():
                return self.model(self.torch.from_numpy(x)).numpy()

    return (lambda: TorchRunner(b.bundle.model)), Path(b.model_path), None


def _no_qemu() -> str | None:
    from .devices import DEVICES

    return None if "qemu" in DEVICES else "the qemu device (emulated Cortex-M) is not available in this installation"


def _no_tensorrt() -> str | None:
    if importlib.util.find_spec("tensorrt"):
        return None
    return "TensorRT is not installed here (it runs on a Jetson or an NVIDIA GPU)"


def _no_c_engine() -> str | None:
    import shutil

    if not importlib.util.find_spec("drsn_edge.cengine"):
        return "the C engine (drsn_edge.cengine) is not available in this installation"
    return None if shutil.which("gcc") or shutil.which("cc") else "the C engine runs here through gcc, which is missing"


def _no_native() -> str | None:
    import shutil

    return None if shutil.which("gcc") or shutil.which("cc") else "the native C engine is compiled here by gcc, missing"


def _no_qemu_engine() -> str | None:
    import shutil

    if _no_c_engine() or _no_qemu():
        return _no_c_engine() or _no_qemu()
    if not shutil.which("arm-none-eabi-gcc") or not shutil.which("qemu-system-arm"):
        return "the emulated Cortex-M needs arm-none-eabi-gcc and qemu-system-arm, missing here"
    return None


def _later(b: Bench):  # pragma: no cover - a format whose runner is not wired yet
    raise InputError("no runner for this format yet")


FORMATS: list[Format] = [
    Format("pytorch fp32", _torch_runner),
    Format("onnx fp32", _target_build("bench-onnxruntime", "onnx-fp32", precision="fp32")),
    Format("onnx int8 QDQ", _target_build("bench-onnxruntime", "onnx-int8", precision="int8")),
    Format("litert int8", _target_build("bench-litert", "litert-int8")),
    Format("c engine fp32 (native, host)", _target_build("bench-native", "native"), _no_native),
    Format("host (fastest kept)", _target_build("host", "host")),
    Format("tflm int8 (host)", _target_build("qemu-m7", "tflm", engine="tflm")),
    Format("c engine int8 (host)", _target_build("qemu-m7", "c-engine", engine="c"), _no_c_engine),
    Format("c engine int8 on qemu-m7", _target_build("qemu-m7", "c-engine", engine="c", device="qemu"),
           _no_qemu_engine),
    Format("tflm int8 on qemu-m7", _later, lambda: "the TFLite Micro firmware runs on boards; on QEMU the C engine "
           "stands for it (bit-exact with TFLite Micro)"),
    Format("tensorrt", _later, _no_tensorrt),
]


# ---------------------------------------------------------------------------------------------- measuring
def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}" if not isinstance(exc, DrsnEdgeError) else text[0]


def measure(fmt: Format, b: Bench, ev, ref, warmup: int = 10) -> Row:
    from .backends.base import warm_up
    from .comparison import compare

    reason = fmt.needs()
    if reason:
        return Row(fmt.label, "", "skipped", reason)
    runner = None
    try:
        factory, artifact, build_s = fmt.make(b)
        b.progress(f"run {fmt.label}")
        can_peak = _reset_peak()
        base = _status_kib("VmRSS")
        runner = factory()
        runner.activate()
        warm_up(runner, ev.x, warmup)
        got = runner.infer(ev.x)
        lat = np.asarray(runner.timing().latencies_ms) * 1000.0
        source = runner.timing().source
        sweep = runner.sweep(ev.x[:32]) if hasattr(runner, "sweep") else {}
        hwm = _status_kib("VmHWM")
    except Exception as exc:  # noqa: BLE001 - a format that fails is a row of the table, not the end of the run
        from .interrupts import reraise_if_interrupted

        reraise_if_interrupted()
        return Row(fmt.label, getattr(runner, "name", ""), "failed", _one_line(exc))
    finally:
        if runner is not None:
            runner.deactivate()
    cmp = compare(ref, got, ev.y, ev.noise, ev.snr_db, b.bundle.class_names)
    thr = {int(k): float(v) for k, v in sweep.items()} or {1: 1e6 / float(np.mean(lat))}
    best_b = max(thr, key=thr.get)
    return Row(fmt.label, runner.name, "ok", artifact=str(artifact),
               artifact_bytes=Path(artifact).stat().st_size if artifact else None, accuracy=cmp.accuracy,
               agreement=cmp.agreement, drop_pp=cmp.drop_pp, p50_us=float(np.percentile(lat, 50)),
               p99_us=float(np.percentile(lat, 99)), throughput_per_s=thr[best_b], throughput_batch=best_b,
               peak_memory_mib=(hwm - base) / 1024.0 if can_peak and hwm and base else None,
               timing_source=source, build_s=build_s)


def _machine() -> dict:
    import os
    import platform

    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version()}


def guard_work(work_dir, report, inputs, force: bool) -> Path:
    """The work folder (new, empty, or holding only builds and the work targets of earlier runs, unless
    --force) and the report folder, checked before any build; neither is nor holds an input."""
    from .backends.base import is_build_folder
    from .outputs import guard_into_folder, guard_report, holds_only
    from .report import report_names

    work = Path(work_dir or Path("build") / "benchmark")
    targets = holds_only([f"{name}.toml" for name in _WORK_TARGETS])
    ours = holds_only(report_names("benchmark"), lambda p: is_build_folder(p) or (p.name == "targets" and targets(p)))
    guard_into_folder(work, inputs, force, "--work", ours)
    if report:
        guard_report(report, report_names("benchmark"), inputs, force)
    return work


def benchmark(model=None, *, work_dir=None, spec=None, formats: list[str] | None = None, force_build: bool = False,
              report: str | None = None, progress=None, force: bool = False) -> BenchmarkResult:
    """Build (or reuse) and run every format over the same evaluation windows; one row per format."""
    from .build import reference_logits
    from .evalspec import EvalSpec
    from .evaluate import resolve_model

    t0 = time.perf_counter()
    chosen = FORMATS
    if formats:
        known = {f.label for f in FORMATS}
        bad = [f for f in formats if f not in known]
        if bad:
            raise InputError(f"unknown format(s) {', '.join(bad)}; known: {', '.join(known)}")
        chosen = [f for f in FORMATS if f.label in formats]
    spec = spec or EvalSpec()
    bundle, model_path = resolve_model(model)
    work = guard_work(work_dir, report, [model_path, spec.data], force)
    b = Bench(work=work, model=model, spec=spec, bundle=bundle, model_path=str(model_path), force_build=force_build,
              progress=progress or (lambda *a, **k: None))
    ev = spec.windows(bundle.meta)
    ref = reference_logits(bundle, ev.x)
    work.mkdir(parents=True, exist_ok=True)
    rows = [measure(f, b, ev, ref) for f in chosen]
    res = BenchmarkResult(model=str(model_path), windows=len(ev), evaluation=ev.description, work_dir=str(work),
                          rows=rows, machine=_machine(), wall_s=time.perf_counter() - t0)
    if report:
        from .benchmark_report import write_benchmark_report

        res.report = write_benchmark_report(res, report)
    return res
