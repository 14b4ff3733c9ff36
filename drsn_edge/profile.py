"""The `profile` stage: where the time of one inference goes, per layer, for the runtime a build folder
holds (loaded with load_build, never rebuilt).

Each runner that can say it has a `profile_ops(x, repeats, warmup)` hook next to it (ONNX Runtime's own
profiler in backends/onnxrt.py; LiteRT ops timed one by one in backends/litert.py) returning per-op rows
(name, module, op type, MACs, µs per run). This stage maps them onto the model's layers and blocks
(drsn_edge.layers), adds shares, achieved MAC/s, the unprofiled wall-clock latency and the batch sweep,
and writes the report. Builds that run on a device are profiled there by the function DEVICE_PROFILERS
names (the C engine's per-kernel instruction counts on QEMU, in instructions instead of µs; TensorRT's
layer profiler on a Jetson). Runtimes whose profiler needs something this installation lacks are named in
PROFILERS with the reason; one line in either plugs a new one in."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, MissingDependencyError

# backend → why its per-layer profile is not available here; a backend not named here uses its runner's own
# profile_ops hook on this machine, or the device profiler named in DEVICE_PROFILERS.
PROFILERS = {
    "tflm": "TFLite Micro's interpreter has no per-op profiler here; build with --engine c for the C engine",
}
# backend → (module under drsn_edge.backends, function): profilers that run the build on its device — the
# C engine's per-kernel instruction counts on QEMU, TensorRT's layer profiler on a Jetson.
DEVICE_PROFILERS = {
    "c": ("cengine_profile", "profile_kernels"),
    "tensorrt": ("trt_profile", "profile_layers"),
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
    unit: str = "us"  # what the rows' share is of: "us" (time) or "instructions" / "cycles" (a counter)
    device: str = "this machine"
    counts: dict | None = None  # counter profiles: per-inference totals and the check of the kernels' sum

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def cost(self) -> str:
        """The row key the shares are of: time_us, or instructions (cycles) for a counter profile."""
        return "time_us" if self.unit == "us" else "instructions"

    def top(self, n: int = 5) -> list[dict]:
        return sorted(self.layers, key=lambda r: -r[self.cost])[:n]


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


_CHUNK = 256


def _wall_p50_us(runner, x: np.ndarray, repeats: int, warmup: int) -> float:
    from .backends.base import warm_up

    xs = np.repeat(x, min(repeats, _CHUNK), axis=0)  # the same window again; never `repeats` copies of it
    runner.activate()
    warm_up(runner, np.repeat(x, min(max(warmup, 1), _CHUNK), axis=0), warmup)
    for done in range(0, repeats, _CHUNK):
        runner.infer(xs[: min(_CHUNK, repeats - done)])
    return float(np.median(runner.timing().latencies_ms)) * 1000.0


def _host_profile(b, x: np.ndarray, repeats: int, warmup: int, sweep: bool, step) -> tuple[dict, str]:
    """The runner's own profiler hook on this machine, the unprofiled wall clock and the batch sweep."""
    runner = _runner_with_profiler(b)
    _check_profile_size(runner, x, repeats, warmup)
    try:
        step("wall clock")
        wall = _wall_p50_us(runner, x, repeats, warmup)
        step("per-op profile")
        raw = runner.profile_ops(x, repeats=repeats, warmup=warmup)
        step("batch sweep")
        raw["sweep"] = {k: float(v) for k, v in runner.sweep(x).items()} if sweep else {}
    finally:
        runner.deactivate()
    raw["wall_p50_us"] = wall
    return raw, runner.name


def _device_profile(b, x: np.ndarray, repeats: int, warmup: int, device, options: dict, step) -> tuple[dict, str]:
    from importlib import import_module

    module, func = DEVICE_PROFILERS[b.backend]
    raw = getattr(import_module(f".backends.{module}", __package__), func)(
        b, x, repeats=repeats, warmup=warmup, device=device, device_options=options, progress=step)
    return raw, raw.get("runtime") or f"{b.backend} on {raw.get('device', b.target)}"


def _rows(raw: list[dict], cost: str = "time_us") -> list[dict]:
    from .layers import block_of, in_shrinkage

    total = sum(r[cost] for r in raw) or 1.0
    out = []
    for r in raw:
        t, macs = float(r["time_us"]), int(r["macs"])
        row = {"name": r["name"], "module": r["module"], "block": block_of(r["module"]),
               "shrinkage": in_shrinkage(r["module"]), "op_type": r["op_type"], "macs": macs, "time_us": t,
               "share": float(r[cost]) / total, "macs_per_s": macs / (t * 1e-6) if t > 0 and macs else None}
        if "instructions" in r:
            n = float(r["instructions"])
            row.update(instructions=n, instructions_per_mac=n / macs if macs else None)
        out.append(row)
    return out


_SHRINK = {"time_us": "shrinkage_us", "instructions": "shrinkage_instructions"}


def _group(rows: list[dict], key: str, cost: str = "time_us") -> list[dict]:
    total = sum(r[cost] for r in rows) or 1.0
    sums = ("time_us", "instructions") if cost != "time_us" else ("time_us",)
    groups: dict[str, dict] = {}
    for r in rows:
        g = groups.setdefault(r[key], {key: r[key], "block": r["block"], "op_types": [], "ops": 0, "macs": 0,
                                       **{k: 0.0 for k in sums}, **{_SHRINK[k]: 0.0 for k in sums}})
        g["ops"] += 1
        g["macs"] += r["macs"]
        for k in sums:
            g[k] += r[k]
            g[_SHRINK[k]] += r[k] if r["shrinkage"] else 0.0
        if r["op_type"] not in g["op_types"]:
            g["op_types"].append(r["op_type"])
    for g in groups.values():
        g["share"] = g[cost] / total
        g["macs_per_s"] = g["macs"] / (g["time_us"] * 1e-6) if g["time_us"] > 0 and g["macs"] else None
        if cost != "time_us":
            g["instructions_per_mac"] = g["instructions"] / g["macs"] if g["macs"] else None
    return list(groups.values())


def profile(path=None, target: str | None = None, *, repeats: int = 100, warmup: int = 20, sweep: bool = True,
            report: str | None = None, seed: int = 0, device: str | None = None, device_options: dict | None = None,
            progress=None, force: bool = False) -> ProfileResult:
    """Profile the artifact of a build folder, one batch-1 window at a time: on this machine with the runner's
    own profiler, or on the build's device (the C engine on QEMU, a TensorRT engine on a Jetson)."""
    if repeats < 1 or warmup < 0:
        raise InputError(f"--repeats must be at least 1 and --warmup at least 0, got {repeats} and {warmup}")
    step = progress or (lambda *a, **k: None)
    b = _locate(path, target)
    if report:
        from .outputs import guard_report
        from .report import report_names

        guard_report(report, report_names("profile"), [b.folder], force)
    x = np.random.default_rng(seed).standard_normal((1, 1, b.window)).astype(np.float32)
    if b.backend in DEVICE_PROFILERS:
        raw, runtime = _device_profile(b, x, repeats, warmup, device, device_options or {}, step)
    elif device is not None:
        raise InputError(f"{b.target} builds are profiled on this machine; drop --device {device}")
    else:
        raw, runtime = _host_profile(b, x, repeats, warmup, sweep, step)
    res = _result(b, raw, runtime, repeats, warmup, seed)
    if report:
        from .profile_report import write_profile_report

        res.report = write_profile_report(res, report)
    return res


def _result(b, raw: dict, runtime: str, repeats: int, warmup: int, seed: int) -> ProfileResult:
    from .layers import block_rank

    unit = raw.get("unit", "us")
    cost = "time_us" if unit == "us" else "instructions"
    rows = _rows(raw["rows"], cost)
    rows_total = sum(r["time_us"] for r in rows)
    cost_total = sum(r[cost] for r in rows) or 1.0
    return ProfileResult(
        target=b.target, build_dir=str(b.folder), artifact=str(b.artifact), runtime=runtime, method=raw["method"],
        warmup=warmup, repeats=repeats, rows=rows, layers=_group(rows, "module", cost),
        blocks=sorted(_group(rows, "block", cost), key=lambda g: block_rank(g["block"])), rows_total_us=rows_total, profiled_total_us=float(raw["total_us"]),
        overhead_us=max(float(raw["total_us"]) - rows_total, 0.0), wall_p50_us=float(raw["wall_p50_us"]),
        shrinkage_share=sum(r[cost] for r in rows if r["shrinkage"]) / cost_total,
        total_macs=sum(r["macs"] for r in rows), sweep=raw.get("sweep") or {},
        input=f"one standard-normal window [1, 1, {b.window}] (seed {seed}), as z-scored data looks",
        unit=unit, device=raw.get("device", "this machine"), counts=raw.get("counts"))
