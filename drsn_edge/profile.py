"""The `profile` stage: where the time of one inference goes, per layer, for the runtime a build folder
holds (loaded with load_build, never rebuilt).

Each runner that can say it has a `profile_ops(x, repeats, warmup)` hook next to it (ONNX Runtime's own
profiler in backends/onnxrt.py; LiteRT ops timed one by one in backends/litert.py) returning per-op rows
(name, module, op type, MACs, µs per run). This stage maps them onto the model's layers and blocks
(drsn_edge.layers), adds shares, achieved MAC/s, the unprofiled wall-clock latency and the batch sweep,
and writes the report. Runtimes whose profiler needs something this installation lacks are named in
PROFILERS with the reason; one line there plugs a new one in."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, MissingDependencyError

# backend (or target family) → why its per-layer profile is not available here, or None when the runner's
# own profile_ops hook is used. The Jetson (TensorRT layer profiler through the device agent) and the C
# engine's per-kernel instruction counts on QEMU plug in here.
PROFILERS = {
    "tensorrt": "the TensorRT layer profiler runs on a Jetson through the device agent; profile the build "
                "there (drsn-edge profile on the device)",
    "tflm": "TFLite Micro's interpreter has no per-op profiler here; build with --engine c for the C engine",
    "c": "per-kernel instruction counts need markers around each kernel of the C engine, which this version "
         "does not have yet (check --target qemu-m7 gives the whole inference's instruction count)",
}


@dataclass
class ProfileResult:
    target: str
    build_dir: str
    artifact: str
    runtime: str
    method: str
    warmup: int
    repeats: int
    rows: list[dict]
    layers: list[dict]
    blocks: list[dict]
    rows_total_us: float
    profiled_total_us: float
    overhead_us: float
    wall_p50_us: float
    shrinkage_share: float
    total_macs: int
    sweep: dict = field(default_factory=dict)
    input: str = ""
    report: dict | None = None

    def to_json(self) -> dict:
        return asdict(self)

    def top(self, n: int = 5) -> list[dict]:
        return sorted(self.layers, key=lambda r: -r["time_us"])[:n]


def _locate(path, target: str | None):
    from .backends import load_build

    if path is None and target is None:
        raise InputError("name a build folder (or artifact) or a --target whose build/<target> folder to profile")
    b = load_build(path if path is not None else Path("build") / target)
    if target is not None and b.target != target:
        raise InputError(f"'{b.folder}' was built for {b.target}, not {target}; profile it with --target {b.target}")
    return b


def _runner_with_profiler(build):
    reason = PROFILERS.get(build.backend)
    if reason:
        raise MissingDependencyError(f"no per-layer profile of {build.target} ({build.backend}) here: {reason}")
    runner = build.runner(None)
    if not hasattr(runner, "profile_ops"):
        raise MissingDependencyError(f"{runner.name} has no per-op profiler hook; profile a host or onnxruntime build")
    return runner


def _check_profile_size(runner, x, repeats: int, warmup: int) -> None:
    """Before the work: the profiler's trace grows with the runs it records (memory), and a profiler that
    records a bounded number of events would silently drop the later runs."""
    runs = warmup + repeats
    if hasattr(runner, "profile_bytes"):
        from .limits import check_alloc

        check_alloc(f"a per-op profile of {runs:,} runs", runner.profile_bytes(runs),
                    "use fewer --repeats (100 time each op well)")
    if hasattr(runner, "profile_max_runs"):
        most = runner.profile_max_runs(x)
        if runs > most:
            raise InputError(f"{runner.name}'s profiler records at most {most:,} runs of this model, not {runs:,} "
                             f"(--warmup + --repeats); use --repeats {max(1, most - warmup)} or fewer")


def _wall_p50_us(runner, x: np.ndarray, repeats: int, warmup: int) -> float:
    from .backends.base import warm_up

    xs = np.repeat(x, min(repeats, _CHUNK), axis=0)  # the same window again; never `repeats` copies of it
    runner.activate()
    warm_up(runner, np.repeat(x, min(max(warmup, 1), _CHUNK), axis=0), warmup)
    for done in range(0, repeats, _CHUNK):
        runner.infer(xs[: min(_CHUNK, repeats - done)])
    return float(np.median(runner.timing().latencies_ms)) * 1000.0


_CHUNK = 256


def _rows(raw: list[dict]) -> list[dict]:
    from .layers import block_of, in_shrinkage

    total = sum(r["time_us"] for r in raw) or 1.0
    out = []
    for r in raw:
        t = float(r["time_us"])
        out.append({"name": r["name"], "module": r["module"], "block": block_of(r["module"]),
                    "shrinkage": in_shrinkage(r["module"]), "op_type": r["op_type"], "macs": int(r["macs"]),
                    "time_us": t, "share": t / total,
                    "macs_per_s": r["macs"] / (t * 1e-6) if t > 0 and r["macs"] else None})
    return out


def _group(rows: list[dict], key: str) -> list[dict]:
    total = sum(r["time_us"] for r in rows) or 1.0
    groups: dict[str, dict] = {}
    for r in rows:
        g = groups.setdefault(r[key], {key: r[key], "block": r["block"], "op_types": [], "ops": 0, "macs": 0,
                                       "time_us": 0.0, "shrinkage_us": 0.0})
        g["ops"] += 1
        g["macs"] += r["macs"]
        g["time_us"] += r["time_us"]
        g["shrinkage_us"] += r["time_us"] if r["shrinkage"] else 0.0
        if r["op_type"] not in g["op_types"]:
            g["op_types"].append(r["op_type"])
    for g in groups.values():
        g["share"] = g["time_us"] / total
        g["macs_per_s"] = g["macs"] / (g["time_us"] * 1e-6) if g["time_us"] > 0 and g["macs"] else None
    return list(groups.values())


def profile(path=None, target: str | None = None, *, repeats: int = 100, warmup: int = 20, sweep: bool = True,
            report: str | None = None, seed: int = 0, progress=None, force: bool = False) -> ProfileResult:
    """Profile the artifact of a build folder on this machine, one batch-1 window at a time."""
    if repeats < 1 or warmup < 0:
        raise InputError(f"--repeats must be at least 1 and --warmup at least 0, got {repeats} and {warmup}")
    step = progress or (lambda *a, **k: None)
    b = _locate(path, target)
    if report:
        from .outputs import guard_report
        from .report import report_names

        guard_report(report, report_names("profile"), [b.folder], force)
    runner = _runner_with_profiler(b)
    x = np.random.default_rng(seed).standard_normal((1, 1, b.window)).astype(np.float32)
    _check_profile_size(runner, x, repeats, warmup)
    try:
        step("wall clock")
        wall = _wall_p50_us(runner, x, repeats, warmup)
        step("per-op profile")
        raw = runner.profile_ops(x, repeats=repeats, warmup=warmup)
        step("batch sweep")
        thr = {k: float(v) for k, v in runner.sweep(x).items()} if sweep else {}
    finally:
        runner.deactivate()
    rows = _rows(raw["rows"])
    rows_total = sum(r["time_us"] for r in rows)
    res = ProfileResult(
        target=b.target, build_dir=str(b.folder), artifact=str(b.artifact), runtime=runner.name, method=raw["method"],
        warmup=warmup, repeats=repeats, rows=rows, layers=_group(rows, "module"), blocks=_group(rows, "block"),
        rows_total_us=rows_total, profiled_total_us=float(raw["total_us"]),
        overhead_us=max(float(raw["total_us"]) - rows_total, 0.0), wall_p50_us=wall,
        shrinkage_share=sum(r["time_us"] for r in rows if r["shrinkage"]) / (rows_total or 1.0),
        total_macs=sum(r["macs"] for r in rows), sweep=thr,
        input=f"one standard-normal window [1, 1, {b.window}] (seed {seed}), as z-scored data looks")
    if report:
        from .profile_report import write_profile_report

        res.report = write_profile_report(res, report)
    return res
