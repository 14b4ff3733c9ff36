"""TFLite Micro backend on the host: run an int8 .tflite with the real TFLM kernels
(`tflite-micro` on PyPI, dev builds only: pin the exact version), find the smallest working tensor
arena, and check that every op of a graph has an int8 kernel in TFLM.

Pitfalls (tflite-micro 0.dev20261023182759):
- A too-small arena does not always fail cleanly: between the persistent ("tail") need and the full
  need, `Interpreter.from_bytes` can crash the whole process with SIGSEGV. Arena probing therefore
  runs in child processes, and `tflm_run` with an explicit arena checks it in a child first.
- `print_allocations()` under-reports the need: its total (55 536 B for the shipped model) misses the
  memory planner's scratch, which decides the real minimum (65–66 kB: "Too many buffers" below it).
- Host figures are for a 64-bit build with TFLM's reference kernels. On a 32-bit Cortex-M the
  persistent structs are smaller, while CMSIS-NN kernels ask for scratch buffers: re-measure on target.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

from ..deps import require
from ..errors import CheckFailedError, InputError
from .base import Backend, BuildOutput, RunnerBase
from .tflite import Int8Options as Options
from .tflite import Int8RunnerBase, _as_windows, calibration_details, graph_ops, quantize_input

EXTRA = "tflite"

# Builtin ops whose int8 kernels TFLite Micro registers and runs. The first group ran in the
# FIELD-NOTES probe; the second was verified here through the TFLM Python interpreter on graphs from
# float_tflite + quantize_int8 (tflite-micro 0.dev20261023182759).
TFLM_SUPPORTED_INT8_OPS = frozenset({
    # FIELD-NOTES §3 probe
    "ABS", "RELU", "LOGISTIC", "ADD", "SUB", "MUL", "MINIMUM", "MAXIMUM", "MEAN", "RESHAPE", "SQUEEZE",
    "EXPAND_DIMS", "PAD", "TRANSPOSE", "AVERAGE_POOL_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
    # verified here
    "QUANTIZE",  # int8 -> int8 requantize
    "CONCATENATION",
})

# Known to be missing or float-only in TFLM (named in errors so the fix is clear).
TFLM_MISSING_INT8 = {
    "SIGN": "not registered in TFLite Micro (not even float)",
    "NEG": "TFLite Micro's NEG has no int8 kernel ('Type INT8 (9) not supported')",
    "DEQUANTIZE": "a float op: the graph must stay integer from input to output",
}

_PROBE = r"""
import sys, numpy as np
from tflite_micro.python.tflite_micro import runtime
data = open(sys.argv[1], "rb").read()
it = runtime.Interpreter.from_bytes(data, arena_size=int(sys.argv[2]))
d = it.get_input_details(0)
it.set_input(np.zeros(d["shape"], d["dtype"]), 0)
it.invoke()
sys.stdout.write("OK\n"); sys.stdout.flush()
if len(sys.argv) > 3:
    it.print_allocations()
"""


def _runtime():
    return require("tflite_micro.python.tflite_micro.runtime", EXTRA)


def ops_used(tflite_bytes: bytes) -> list[str]:
    """The distinct builtin op names of the graph (what a MicroMutableOpResolver must register), sorted."""
    return sorted(set(graph_ops(tflite_bytes)))


def check_ops_supported(tflite_bytes: bytes) -> list[str]:
    """Raise InputError naming the first op (in graph order) without an int8 TFLM kernel, or the first
    op that reads or writes a float tensor; return ops_used."""
    from .tflite import _FLOAT_TYPES, _op_name, _tensor_type, _tname, read_model

    model = read_model(tflite_bytes)
    sg = model.subgraphs[0]
    for k, op in enumerate(sg.operators or []):
        name = _op_name(model, op)
        if name not in TFLM_SUPPORTED_INT8_OPS:
            why = TFLM_MISSING_INT8.get(name, "not in the verified int8 op set of TFLite Micro")
            raise InputError(f"op {name} (#{k}) cannot run on the microcontroller: {why}")
        for idx in list(op.inputs) + list(op.outputs):
            if idx >= 0 and _tensor_type(sg.tensors[idx]) in _FLOAT_TYPES:
                t = sg.tensors[idx]
                raise InputError(f"op {name} (#{k}) uses {_tensor_type(t).lower()} tensor '{_tname(t)}'; "
                                 "the microcontroller build needs a full-integer int8 model")
    return ops_used(tflite_bytes)


# --------------------------------------------------------------------------------------------------
# child-process probes (a bad arena can SIGSEGV the interpreter)


def _probe(path: str, arena: int, report: bool = False, timeout: float = 120.0) -> tuple[bool, str]:
    args = [sys.executable, "-c", _PROBE, path, str(int(arena))] + (["report"] if report else [])
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:g} s"
    ok = p.returncode == 0 and p.stdout.startswith("OK")
    if ok:
        return True, p.stderr
    if p.returncode < 0:
        return False, f"crashed with signal {-p.returncode}"
    lines = [ln.strip() for ln in (p.stderr or "").splitlines()
             if ln.strip() and not ln.startswith((" ", "Traceback", "File "))]
    return False, "; ".join(lines[-3:]) or f"exit status {p.returncode}"


class _ModelFile:
    def __init__(self, tflite_bytes: bytes):
        fd, self.path = tempfile.mkstemp(suffix=".tflite", prefix="drsn-tflm-")
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(tflite_bytes))

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc):
        try:
            os.unlink(self.path)
        except OSError:
            pass


_ALLOC_RE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
_ITEM_RE = re.compile(r"'([^']+)' used (\d+) bytes with alignment overhead \(requested (\d+) bytes for (\d+)")


def parse_allocations(text: str) -> dict:
    """Parse print_allocations() output: {"total", "head", "tail", "items": {name: {used, requested, count}}}."""
    out: dict = {"items": {}}
    for key, val in _ALLOC_RE.findall(text):
        out[key] = int(val)
    for name, used, req, count in _ITEM_RE.findall(text):
        out["items"][name] = {"used": int(used), "requested": int(req), "count": int(count)}
    return out


def arena_allocations(tflite_bytes: bytes, arena_size: int | None = None) -> dict:
    """TFLM's own arena report after one invocation (in a child process). Under-reports the minimum
    arena: see min_arena_bytes."""
    _runtime()
    arena = int(arena_size or _default_hi(tflite_bytes))
    with _ModelFile(tflite_bytes) as path:
        ok, text = _probe(path, arena, report=True)
    if not ok:
        raise CheckFailedError(f"the model does not run in TFLite Micro with a {arena}-byte arena: {text}")
    return parse_allocations(text)


def _default_hi(tflite_bytes: bytes) -> int:
    return max(10 * len(tflite_bytes), 1 << 20)


def min_arena_bytes(tflite_bytes: bytes, hi: int | None = None, resolution: int = 256,
                    details: dict | None = None) -> int:
    """The smallest tensor arena (bytes, within `resolution`) with which TFLM allocates and invokes the
    model on this host, found by bisection on real invocations in child processes.

    hi: an arena known (or expected) to be enough; default max(10 × model size, 1 MiB).
    details: if a dict is passed, it receives the probe count, wall time and the allocation report."""
    _runtime()
    t0 = time.perf_counter()
    hi = int(hi or _default_hi(tflite_bytes))
    resolution = max(16, int(resolution))
    probes = 0
    with _ModelFile(tflite_bytes) as path:
        ok, text = _probe(path, hi, report=True)
        probes += 1
        if not ok:
            raise CheckFailedError(f"the model does not run in TFLite Micro even with a {hi}-byte arena: {text}")
        report = parse_allocations(text)
        # TFLM's report is a lower bound: start just below it, with a bracket above it
        lo = max(0, min(report.get("total", 0), hi) - resolution)
        if lo:
            ok, _ = _probe(path, lo)
            probes += 1
            if ok:
                lo = 0
        guess = min(hi, report.get("total", hi) + max(8192, report.get("total", 0) // 4))
        while guess < hi:
            ok, _ = _probe(path, guess)
            probes += 1
            if ok:
                hi = guess
                break
            lo = guess
            guess = min(hi, guess * 2)
        while hi - lo > resolution:
            mid = (lo + hi) // 2
            mid -= mid % 16  # TFLM aligns arena allocations to 16 bytes
            if mid <= lo:
                break
            ok, _ = _probe(path, mid)
            probes += 1
            if ok:
                hi = mid
            else:
                lo = mid
    if details is not None:
        details.update({"probes": probes, "wall_s": time.perf_counter() - t0, "resolution": resolution,
                        "allocations": report, "largest_failing": lo})
    return hi


# --------------------------------------------------------------------------------------------------
# running


_ARENA_OK: dict[tuple[str, int], bool] = {}


def _check_arena(tflite_bytes: bytes, arena: int) -> None:
    key = (hashlib.sha256(bytes(tflite_bytes)).hexdigest(), int(arena))
    if key not in _ARENA_OK:
        with _ModelFile(tflite_bytes) as path:
            ok, text = _probe(path, arena)
        if not ok:
            raise InputError(f"a {arena}-byte tensor arena is too small for this model in TFLite Micro ({text}); "
                             "find the minimum with min_arena_bytes()")
        _ARENA_OK[key] = True


def tflm_interpreter(tflite_bytes: bytes, arena_size: int | None = None, checked: bool = True):
    """A TFLM interpreter for the model. An explicit arena is first tried in a child process (a
    too-small arena can crash the interpreter) unless checked=False."""
    rt = _runtime()
    arena = int(arena_size) if arena_size else _default_hi(tflite_bytes)
    if arena <= 0:
        raise InputError(f"arena size must be positive, got {arena}")
    if arena_size and checked:
        _check_arena(tflite_bytes, arena)
    try:
        return rt.Interpreter.from_bytes(bytes(tflite_bytes), arena_size=arena)
    except RuntimeError as exc:
        raise CheckFailedError(f"TFLite Micro could not load the model: {exc}") from None


def tflm_run(tflite_bytes: bytes, x: np.ndarray, arena_size: int | None = None, raw: bool = False) -> np.ndarray:
    """Run normalized float windows [N, 1, L] through TFLM's kernels, one window per invocation.

    Inputs are quantized with the model's input scale/zero point; outputs are dequantized to float32
    logits [N, classes] unless raw=True (int8 logits)."""
    it = tflm_interpreter(tflite_bytes, arena_size)
    inp, out = it.get_input_details(0), it.get_output_details(0)
    shape = [int(v) for v in inp["shape"]]
    xs = _as_windows(x, shape)
    batch = shape[0]
    if len(xs) % batch:
        raise InputError(f"{len(xs)} windows do not fill whole batches of {batch}")
    qi, qo = inp["quantization_parameters"], out["quantization_parameters"]
    integer_in = np.issubdtype(inp["dtype"], np.integer)
    res = []
    for i in range(0, len(xs), batch):
        xi = xs[i:i + batch]
        if integer_in:
            xi = quantize_input(xi, float(qi["scales"][0]), int(qi["zero_points"][0]), inp["dtype"])
        it.set_input(np.ascontiguousarray(xi), 0)
        it.invoke()
        res.append(np.array(it.get_output(0)).reshape(batch, -1).copy())
    y = np.concatenate(res)
    if raw or not np.issubdtype(y.dtype, np.integer):
        return y if raw else y.astype(np.float32)
    return ((y.astype(np.float32) - float(qo["zero_points"][0])) * float(qo["scales"][0])).astype(np.float32)


def tflm_outputs_raw(tflite_bytes: bytes, x: np.ndarray, arena_size: int | None = None) -> list[np.ndarray]:
    """Every int8 output of a batch-1 model (logits, then the guard's taps) for normalized windows [N, 1, L]."""
    it = tflm_interpreter(tflite_bytes, arena_size)
    inp = it.get_input_details(0)
    qi = inp["quantization_parameters"]
    from .tflite import read_model

    n_out = len(read_model(tflite_bytes).subgraphs[0].outputs)
    rows: list[list[np.ndarray]] = [[] for _ in range(n_out)]
    for w in _as_windows(x, [int(v) for v in inp["shape"]]):
        it.set_input(quantize_input(w[None], float(qi["scales"][0]), int(qi["zero_points"][0]), inp["dtype"]), 0)
        it.invoke()
        for k in range(n_out):
            rows[k].append(np.array(it.get_output(k)).reshape(-1).copy())
    return [np.stack(r) for r in rows]


# --------------------------------------------------------------------------------------------------
# the backend: int8 .tflite + TFLite Micro firmware bundle for microcontrollers

STACK_BYTES = 8 * 1024  # harness stack estimate for the RAM fit (TFLM kernels run on the caller's stack)


def memory_fit(target, model_bytes: int, arena_bytes: int, input_len: int, output_len: int, guard_bytes: int = 0,
               guard_dim: int = 0) -> dict:
    """Flash = model + runtime code estimate + the domain guard's constants; RAM = arena + I/O and protocol
    buffers + the guard's tap buffer + stack. Fits only when both fit."""
    runtime = target.runtime_code_bytes if target.runtime_code_bytes is not None else 200 * 1024
    flash = model_bytes + runtime + guard_bytes
    ram = arena_bytes + 2 * (input_len + 16) + output_len + guard_dim + STACK_BYTES
    fb, rb = target.flash_bytes, target.ram_budget_bytes
    return {"model_bytes": model_bytes, "runtime_code_bytes": runtime, "guard_bytes": guard_bytes,
            "flash_bytes": flash, "flash_budget_bytes": fb,
            "arena_bytes": arena_bytes, "ram_bytes": ram, "ram_budget_bytes": rb,
            "ram_share": target.hardware.get("ram_share"), "fits": flash <= fb and ram <= rb}


def build(ctx):
    """int8 .tflite verified in TFLite Micro (the reference: what the board computes) and LiteRT, arena
    measured, memory fit against the target, firmware bundle."""
    from ..build import reference_logits
    from ..comparison import compare
    from ..firmware.bundle import arena_with_margin, write_bundle
    from ..guard_export import tflite_guard, tflite_guard_size
    from .tflite import int8_tflite, litert_run, write_tflite

    q, graph = int8_tflite(ctx, guard_taps=True)
    ops = check_ops_supported(q)
    ctx.progress("verify")
    arena = min_arena_bytes(q)
    io_in, io_out = graph["input"], graph["output"]
    n_in, n_out = int(np.prod(io_in["shape"])), int(np.prod(io_out["shape"]))
    guard_dim, guard_bytes = tflite_guard_size(ctx.bundle, graph)
    memory = memory_fit(ctx.target, len(q), arena_with_margin(arena), n_in, n_out, guard_bytes, guard_dim)
    memory["arena_measured_bytes"] = arena
    if not memory["fits"]:
        raise CheckFailedError(
            f"model does not fit {ctx.target.name}: flash {memory['flash_bytes']} B of {memory['flash_budget_bytes']} B, "
            f"RAM {memory['ram_bytes']} B (arena {memory['arena_bytes']} B) of {memory['ram_budget_bytes']} B budget")
    ev = ctx.spec.windows(ctx.bundle.meta)
    micro = tflm_run(q, ev.x, arena_size=arena_with_margin(arena), raw=True)
    lite = litert_run(q, ev.x, raw=True)
    s_out, z_out = float(io_out["scale"]), int(io_out["zero_point"])
    acc = compare(reference_logits(ctx.bundle, ev.x), (micro.astype(np.float32) - z_out) * s_out, ev.y, ev.noise,
                  ev.snr_db, ctx.bundle.class_names)
    cross = {"litert_tflm_agreement": float((lite.argmax(1) == micro.argmax(1)).mean()),
             "litert_tflm_max_lsb": int(np.abs(lite.astype(np.int16) - micro.astype(np.int16)).max()),
             "int8_litert": float((lite.argmax(1) == ev.y).mean())}
    guard = tflite_guard(ctx.bundle, q, graph, ctx.calib_x, arena_with_margin(arena))
    name = write_tflite(ctx, q, graph, "tflm", ops=ops, memory=memory, guard=guard)
    fw = ctx.out / "firmware"
    fw.mkdir()
    (fw / name).write_bytes(q)
    io = {"input": {**io_in, "elements": n_in}, "output": {**io_out, "elements": n_out},
          "window": ctx.bundle.window, "fs": ctx.bundle.fs}
    files = write_bundle(fw, ctx.target, q, ops, arena, io, ctx.bundle.class_names, memory, guard)
    return _output(name, acc, memory, ops, graph, cross, files)


def _output(name, acc, memory, ops, graph, cross, files):
    return BuildOutput(artifact=name, accuracy=acc, memory=memory,
                       details={"ops": ops, "op_counts": graph["op_counts"], **cross,
                                "reference": "TFLite Micro (what the microcontroller computes)",
                                "firmware": "firmware/", "firmware_files": [f"firmware/{f}" for f in files["files"]],
                                **calibration_details(graph)})


class TflmRunner(Int8RunnerBase, RunnerBase):
    """TFLite Micro's interpreter (its real kernels) in this process, one window per invocation."""

    def __init__(self, tflite_bytes: bytes, arena_size: int | None = None, name: str = "tflm (int8, host)",
                 guard: dict | None = None):
        RunnerBase.__init__(self)
        self._setup_guard(guard)
        self.name = name
        self.it = tflm_interpreter(tflite_bytes, arena_size)
        inp, out = self.it.get_input_details(0), self.it.get_output_details(0)
        self.shape = [int(v) for v in inp["shape"]]
        self.batch = self.shape[0]
        qi, qo = inp["quantization_parameters"], out["quantization_parameters"]
        self._setup_io((qi["scales"][0], qi["zero_points"][0]), (qo["scales"][0], qo["zero_points"][0]),
                       inp["dtype"])

    def _infer_one(self, x):
        self.it.set_input(np.ascontiguousarray(self._quantize(x.reshape(self.shape))), 0)
        self.it.invoke()
        if self._guard_fn is not None:
            self._score_taps([np.array(self.it.get_output(k + 1)).reshape(self.batch, -1)
                              for k in range(len(self.guard_meta["outputs"]))])
        return self._dequantize(np.array(self.it.get_output(0)).reshape(self.batch, -1))


def runner(build, device=None):
    """TFLite Micro's kernels on this machine (--device local), or the flashed firmware on the board over its
    serial link (serial://PORT: the protocol the C engine firmware speaks, with the guard's flags and score).
    No QEMU image: the TFLite Micro sources that would link one cannot be fetched by drsn-edge."""
    if isinstance(device, str) and device != "local":
        if device.startswith("qemu"):
            raise InputError(f"this {build.target} build runs TFLite Micro, which drsn-edge does not link into a QEMU "
                             "image: check it with --device local (the same kernels), or build with --engine c to "
                             "run it under QEMU")
        from ..devices.mcu import build_runner

        return build_runner(build, device)
    if device is not None and not isinstance(device, str) and getattr(device, "transport", "local") != "local":
        raise InputError(f"{build.target} runs TFLite Micro on the board: use --device serial://PORT or local")
    arena = (build.sidecar.get("memory") or {}).get("arena_bytes")
    return TflmRunner(build.artifact.read_bytes(), arena, guard=build.sidecar.get("guard"))


BACKEND = Backend(name="tflm", description="TFLite Micro int8 firmware for microcontrollers", Options=Options,
                  build=build, runner=runner, suffixes=(".tflite",))
