"""Per-kernel instruction counts of the C engine on an emulated Cortex-M (the `c` backend's profiler).

The build folder holds two images of the same engine: `firmware.elf` (the normal firmware) and
`firmware.profile.elf` (the profiling firmware: the same sources with the kernel markers on and drsn_prof.c,
which answers the protocol's PROFILE request with each kernel's SysTick ticks). Both run in QEMU with
`-icount shift=0`, where a SysTick tick is a fixed number of instructions (40 at the 25 MHz of the MPS2
boards). The normal firmware gives the unprofiled instructions per inference; the profiling firmware gives
the per-kernel ticks, from which the markers' own cost (measured by the firmware on empty brackets) is taken
off. Nothing is rebuilt: the kernels' labels, ops, MACs and layer names come from the build's .tflite and
sidecar (cengine.kernels)."""

from __future__ import annotations

import numpy as np

from ..errors import CheckFailedError, InputError
from .cengine import FIRMWARE, PROFILE_ELF

# What the outside-kernel part of drsn_infer (prologue, output copy, epilogue) may take in the normal
# firmware, in instructions: it is a few dozen; the bound leaves room for a larger output copy.
GLUE_BOUND = 512


def _images(build) -> tuple:
    side = build.sidecar
    if not side.get("image"):
        raise InputError(f"{build.target} is not an emulated board: per-kernel counts are taken on QEMU "
                         "(build for qemu-m7, qemu-m4, qemu-m33 or qemu-m55)")
    prof = side.get("profile_image")
    if not prof or not build.file(prof).is_file():
        raise InputError(f"'{build.folder}' has no profiling firmware ({PROFILE_ELF}); it was built by an older "
                         f"drsn-edge: rebuild it with drsn-edge build --target {build.target}")
    return build.file(side["image"]), build.file(prof)


def _kernels(build) -> list[dict]:
    from ..cengine.kernels import kernel_table

    rows = kernel_table(build.artifact.read_bytes(), build.sidecar.get("op_modules"))
    recorded = (build.sidecar.get("engine") or {}).get("kernels")
    if recorded is not None and [r["label"] for r in rows] != list(recorded):
        raise CheckFailedError(f"the kernels of {build.artifact.name} differ from those recorded at build time "
                               f"({len(rows)} vs {len(recorded)}): rebuild {build.folder}")
    return rows


def _runner(build, elf):
    from ..devices.mcu import Expected, mcu_runner
    from ..targets import get_target

    return mcu_runner(get_target(build.target), "qemu", elf=elf, expected=Expected.from_tflite(build.artifact.read_bytes()))


def _normal_counts(build, elf, xs: np.ndarray, warmup: int) -> tuple[list[int], np.ndarray]:
    r = _runner(build, elf)
    r.activate()
    try:
        if warmup:
            r.infer(xs[:warmup])
        r.infer(xs[warmup:])
        return r.timing().counts[warmup:], r.last_raw
    finally:
        r.deactivate()


def _profiled_counts(build, elf, xs: np.ndarray, warmup: int, n_kernels: int):
    r = _runner(build, elf)
    r.activate()
    try:
        if warmup:
            r.infer(xs[:warmup])
            r.client.kernel_ticks()  # clears the warm-up's totals
        r.infer(xs[warmup:])
        kt = r.client.kernel_ticks()
        info = r.info
        if len(kt.ticks) != n_kernels:
            raise CheckFailedError(f"the profiling firmware counts {len(kt.ticks)} kernels, the engine has "
                                   f"{n_kernels}: rebuild {build.folder}")
        return r.timing().counts[warmup:], r.last_raw, kt, info
    finally:
        r.deactivate()


def profile_kernels(build, x: np.ndarray, repeats: int = 100, warmup: int = 20, device=None, device_options=None,
                    progress=None) -> dict:
    """Per-kernel instructions (mean over `repeats` inferences of the window x) on the build's emulated board,
    and the totals that check them: the normal firmware's instructions per inference and the markers' cost."""
    if device not in (None, "qemu") and not str(device).startswith("qemu"):
        raise InputError(f"per-kernel counts of {build.target} are taken on QEMU, not on '{device}'")
    step = progress or (lambda *a, **k: None)
    normal_elf, prof_elf = _images(build)
    kernels = _kernels(build)
    xs = np.repeat(x[:1], warmup + repeats, axis=0)
    step("normal firmware on QEMU")
    counts0, out0 = _normal_counts(build, normal_elf, xs, warmup)
    step("profiling firmware on QEMU")
    counts1, out1, kt, info = _profiled_counts(build, prof_elf, xs, warmup, len(kernels))
    res = kernel_rows(kernels, kt, info, repeats, counts0, counts1, same_output=bool(np.array_equal(out0, out1)))
    res.update(runtime=f"c engine on {build.target} (int8)", device=f"qemu ({info.name})")
    return res


def kernel_rows(kernels: list[dict], kt, info, runs: int, counts0: list[int], counts1: list[int],
                same_output: bool = True) -> dict:
    """Rows and totals from a PROFILE answer `kt` over `runs` inferences. Each kernel's instructions: its
    ticks × instructions per tick / runs, less one bracket's own cost (the firmware's calibration)."""
    per_tick = 1e9 / kt.tick_hz if info.counter == "instructions" else info.clock_hz / kt.tick_hz
    bracket = kt.cal_ticks * per_tick / kt.cal_pairs
    clock = float(info.clock_hz)
    rows = []
    for k, t in zip(kernels, kt.ticks):
        n = t * per_tick / runs - bracket
        rows.append({"name": k["label"], "module": k["module"], "op_type": k["op_type"], "macs": k["macs"],
                     "instructions": n, "time_us": n / clock * 1e6})
    unprofiled, profiled = float(np.mean(counts0)), float(np.mean(counts1))
    total = sum(r["instructions"] for r in rows)
    tolerance = (len(rows) + 1) * per_tick + GLUE_BOUND
    counts = {
        "unit": info.counter, "clock_hz": info.clock_hz, "kernels": len(rows), "runs": runs,
        "per_inference_unprofiled": unprofiled, "per_inference_profiled": profiled, "kernels_sum": total,
        "outside_kernels": unprofiled - total, "marker_bracket_inside": bracket,
        "marker_overhead_per_inference": profiled - unprofiled, "per_tick": per_tick,
        "tolerance": tolerance, "within_tolerance": abs(unprofiled - total) <= tolerance,
        "same_output": same_output,
        "tolerance_reason": (f"each kernel's count and the whole inference's are read off a counter that ticks every "
                             f"{per_tick:g} {info.counter}, so each may be off by less than one tick "
                             f"({len(rows)} kernels + the whole run), plus drsn_infer's own code outside the kernel "
                             f"calls (at most {GLUE_BOUND})"),
    }
    return {"rows": rows, "total_us": profiled / clock * 1e6, "runs": runs, "unit": "instructions", "counts": counts,
            "wall_p50_us": float(np.median(counts0)) / clock * 1e6,
            "method": (f"C engine on QEMU -icount: SysTick ticks per kernel from the profiling firmware, mean of "
                       f"{runs} inferences, less the markers' own cost ({bracket:.1f} {info.counter} per kernel)")}
