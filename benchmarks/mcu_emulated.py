#!/usr/bin/env python
"""Emulated on-device check of the shipped model: the int8 model → the generated C engine → firmware for each
QEMU target → N windows streamed over the emulated UART (`qemu` transport) and judged by run_mcu_check against
TFLite Micro on the host (bit-exact agreement), the labels and the float model. Prints the wall time of the
whole check, instructions per inference and per MAC (QEMU -icount), the latency estimated at the target's
clock and at a real board's clock, and flash/RAM of the linked image.

  python benchmarks/mcu_emulated.py [--windows 1000] [--targets qemu-m7,qemu-m4] [--instances 2]
                                    [--tflite model.int8.tflite]

--instances N runs N emulated boards side by side, each on a share of the windows (one per host core).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

BOARD_CLOCK_MHZ = {"qemu-m7": ("stm32h743", 480.0), "qemu-m4": ("nrf52840", 64.0)}


def int8_model(path: str | None) -> tuple[bytes, object]:
    from drsn_edge.backends import tflite as tfl
    from drsn_edge.calibration import model_and_calibration

    bundle, _, _, _, _, cx = model_and_calibration(None, None)
    if path:
        return Path(path).read_bytes(), bundle
    return tfl.strip_names(tfl.quantize_int8(tfl.float_tflite(bundle.model, bundle.window), cx)), bundle


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=1000)
    ap.add_argument("--targets", default="qemu-m7,qemu-m4")
    ap.add_argument("--tflite", help="reuse an int8 .tflite of the shipped model (skips conversion)")
    ap.add_argument("--instances", type=int, default=1, help="emulated boards side by side (one per core)")
    ap.add_argument("--engine-flags", default="-DDRSN_DSP=0", help="extra compiler flags for the engine")
    ap.add_argument("--out", default="benchmarks/results/mcu_emulated.json")
    a = ap.parse_args(argv)
    from drsn_edge.backends.tflm import tflm_run
    from drsn_edge.cengine import generate
    from drsn_edge.evalspec import EvalSpec
    from drsn_edge.devices.mcu import Expected, mcu_runner
    from drsn_edge.evaluate import predict_logits
    from drsn_edge.firmware.cfirmware import build_qemu_elf
    from drsn_edge.mcu_check import run_mcu_check
    from drsn_edge.targets import get_target

    t0 = time.perf_counter()
    q, bundle = int8_model(a.tflite)
    # each simulated window clean + 3 noise types x 3 SNRs: 100 windows per window and class
    spec = EvalSpec(windows_per_class=-(-a.windows // (len(bundle.class_names) * 10)), snrs=(-5.0, 0.0, 5.0))
    ds = spec.windows(bundle.meta)
    x, y, src = ds.x[: a.windows], ds.y[: a.windows], ds.description
    float_logits = predict_logits(bundle.model, x)
    ref = tflm_run(q, x, raw=True)
    work = Path(tempfile.mkdtemp(prefix="drsn-qemu-"))
    gen = generate(q, work / "c")
    print(f"model {len(q)} B, {gen['macs']} MACs, arena {gen['arena_bytes']} B; {len(x)} windows ({src}); "
          f"preparation {time.perf_counter() - t0:.1f} s")
    rows = {}
    for name in a.targets.split(","):
        target = get_target(name)
        mem = build_qemu_elf(work / "c", target, work / f"{name}.elf", extra_flags=a.engine_flags.split())
        runner = mcu_runner(target, elf=work / f"{name}.elf", expected=Expected.from_tflite(q),
                            instances=a.instances, timeout_s=60)
        res = run_mcu_check(runner, x, y, ref, float_logits, mem, target, macs=gen["macs"])
        board, mhz = BOARD_CLOCK_MHZ.get(name, (None, None))
        if board:
            res[f"estimated_latency_ms_on_{board}"] = res["instructions_per_inference"] / (mhz * 1e3)
        rows[name] = res
        res["instances"] = a.instances
        print(f"{name:8s} wall {res['wall_s']:.1f} s for {res['windows']} windows on {a.instances} board(s) "
              f"({1e3 * res['wall_s'] / res['windows']:.0f} ms/window)  "
              f"bit-exact {100 * res['agreement_with_reference']:.1f} %  "
              f"accuracy {100 * res['accuracy']:.2f} % (float {100 * res['accuracy_float']:.2f} %)  "
              f"{res['instructions_per_inference']:.0f} instructions/inference = "
              f"{res['instructions_per_mac']:.2f}/MAC  "
              f"estimated {res['latency_ms']:.0f} ms at {target.hardware['clock_mhz']:g} MHz"
              + (f", {res[f'estimated_latency_ms_on_{board}']:.1f} ms on {board} at {mhz:g} MHz (1 instr/cycle)"
                 if board else "")
              + f"  flash {res['flash_bytes']} B  RAM {res['ram_bytes']} B  passed {res['passed']}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    import os

    load = os.getloadavg()[0]  # the machine may be shared: wall times depend on it
    print(f"1-minute load average at the end: {load:.1f} on {os.cpu_count()} cores")
    Path(a.out).write_text(json.dumps({"windows": len(x), "macs": gen["macs"], "load_average_1min": load,
                                       "cores": os.cpu_count(), "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
