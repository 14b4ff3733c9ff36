"""The on-device check of a microcontroller build: run the windows through a protocol runner (a board on
`serial://`, an emulated one on `qemu`) and judge what came back against the reference runtime's int8
outputs (bit-exact agreement must be 100 %), the labels and the float model; report the device's count per
inference (instructions under QEMU, cycles on a board), per MAC, flash/RAM of the linked image, and the
latency — measured from the cycle counter on a board, estimated from the instruction count and the
target's clock under QEMU (which does not model timing)."""

from __future__ import annotations

import time

import numpy as np


def _median(values) -> float | None:
    return float(np.median(values)) if len(values) else None


def _judge(res: dict, target, memory: dict) -> list[str]:
    """The failed thresholds, each one line: bit-exactness, then the target's [check] thresholds as every
    check judges them (check.verdict; the latency is the median, estimated under QEMU), then memory."""
    from .check import Thresholds, verdict

    fails = []
    if res["agreement_with_reference"] < 1.0:
        fails.append(f"int8 outputs differ from the reference in {res['windows_differing']} of {res['windows']} "
                     f"windows (up to {res['max_abs_diff_lsb']} LSB): the device must be bit-exact")
    for f in verdict(res["accuracy"], res["accuracy_drop_pp"] or 0.0, res.get("latency_ms"), Thresholds.of(target)):
        fails.append(f.replace("p99 latency", "estimated latency" if res["latency_is_estimate"] else "latency"))
    for what, budget in (("flash", getattr(target, "flash_bytes", None)), ("RAM", getattr(target, "ram_bytes", None))):
        used = memory.get(f"{what.lower()}_bytes")
        if used is not None and budget is not None and used > budget:
            fails.append(f"{what} {used} B exceeds the target's {budget} B")
    return fails


def run_mcu_check(runner, windows: np.ndarray, labels: np.ndarray, reference_int8: np.ndarray,
                  float_logits: np.ndarray | None, memory: dict, target, macs: int | None = None,
                  progress=None, chunk: int = 50) -> dict:
    """Run `windows` (normalized float [N, 1, L]) through `runner` (activate/infer/timing/deactivate, with
    `last_raw`) and compute the check's figures. reference_int8: the reference runtime's int8 logits [N, C]
    (e.g. tflm_run(q, x, raw=True)); float_logits: the float model's logits or None; memory: {flash_bytes,
    ram_bytes} of the linked image; target: the Target (clock and [check] thresholds); macs: multiply-
    accumulates per inference (for instructions_per_mac). The runner is always deactivated."""
    windows = np.asarray(windows, dtype=np.float32)
    labels = np.asarray(labels).reshape(-1)
    ref = np.asarray(reference_int8).reshape(len(windows), -1)
    step = progress or (lambda *a, **k: None)
    raws = []
    t0 = time.perf_counter()
    runner.activate()
    try:
        for i in range(0, len(windows), chunk):
            runner.infer(windows[i:i + chunk])
            raws.append(np.array(runner.last_raw, dtype=np.int8))
            step("infer", done=min(i + chunk, len(windows)), total=len(windows))
        timing = runner.timing()
    finally:
        runner.deactivate()
    wall = time.perf_counter() - t0
    raw = np.concatenate(raws).reshape(ref.shape)
    return summarize(raw, labels, ref, float_logits, timing, memory, target, macs, wall)


def summarize(raw, labels, ref, float_logits, timing, memory: dict, target, macs, wall_s: float) -> dict:
    """The check's JSON fields from the device's int8 outputs and timing (see run_mcu_check)."""
    same = (raw == ref).all(axis=1)
    diff = np.abs(raw.astype(np.int16) - ref.astype(np.int16))
    pred = raw.argmax(1)
    res = {
        "windows": int(len(raw)),
        "agreement_with_reference": float(same.mean()),
        "windows_differing": int((~same).sum()),
        "max_abs_diff_lsb": int(diff.max()) if diff.size else 0,
        "top1_agreement_with_reference": float((pred == ref.argmax(1)).mean()),
        "accuracy": float((pred == labels).mean()),
        "accuracy_float": None, "agreement_with_float": None, "accuracy_drop_pp": None,
    }
    if float_logits is not None:
        fpred = np.asarray(float_logits).reshape(len(raw), -1).argmax(1)
        res["accuracy_float"] = float((fpred == labels).mean())
        res["agreement_with_float"] = float((pred == fpred).mean())
        res["accuracy_drop_pp"] = 100.0 * (res["accuracy_float"] - res["accuracy"])
    counts = list(timing.counts or [])
    unit = timing.count_unit or "cycles"
    per_inf = _median(counts)
    clock_hz = float(getattr(target, "hardware", {}).get("clock_mhz", 0)) * 1e6
    estimate = unit == "instructions"
    res.update({
        "count_unit": unit,
        "instructions_per_inference": per_inf if estimate else None,
        "cycles_per_inference": None if estimate else per_inf,
        "instructions_per_mac": per_inf / macs if estimate and per_inf and macs else None,
        "cycles_per_mac": per_inf / macs if not estimate and per_inf and macs else None,
        "macs": macs,
        "count_min": min(counts) if counts else None, "count_max": max(counts) if counts else None,
        # a board's cycles at the clock it reports; QEMU's instructions at the target's clock
        "latency_ms": (1e3 * per_inf / clock_hz if per_inf and clock_hz else None) if estimate
        else _median(timing.latencies_ms),
        "latency_is_estimate": estimate,
        "latency_source": (f"estimate: {unit} per inference at the target's {clock_hz / 1e6:g} MHz, one instruction "
                           "per cycle; QEMU does not model timing" if estimate else timing.source),
        "flash_bytes": memory.get("flash_bytes"), "ram_bytes": memory.get("ram_bytes"),
        "wall_s": wall_s,
    })
    res["failures"] = _judge(res, target, memory)
    res["passed"] = not res["failures"]
    return res
