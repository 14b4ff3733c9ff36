"""C engine figures for the shipped model: bit-exactness with TFLite Micro, RAM (static plan + stack)
against TFLM's measured arena, flash, and instructions per MAC on QEMU (plain C and the SIMD path,
Cortex-M4 and Cortex-M7).

    PYTHONPATH=. python benchmarks/cengine.py [--windows-per-class 10] [--no-qemu]

Instruction counts: QEMU with -icount shift=0 runs one instruction per ns of virtual time and SysTick
counts core clocks, so ticks x (1e9 / clock) are instructions (calibrated against a loop of known
length in the firmware). They are instruction counts, not cycles.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FW = ROOT / "benchmarks" / "cengine_fw"
RESULTS = ROOT / "benchmarks" / "results"
CORES = {"qemu-m4": ("cortex-m4", "fpv4-sp-d16", "mps2-an386"), "qemu-m7": ("cortex-m7", "fpv5-d16", "mps2-an500")}


def shipped_int8():
    from drsn_edge.backends import tflite as tfl
    from drsn_edge.calibration import model_and_calibration

    bundle, _, _, _, _, cx = model_and_calibration(None, None)
    return tfl.strip_names(tfl.quantize_int8(tfl.float_tflite(bundle.model, bundle.window), cx)), cx, bundle


def quantize(q, x):
    from drsn_edge.backends.tflite import model_io, quantize_input

    inp, _ = model_io(q)
    return quantize_input(x.reshape(len(x), -1), inp["scale"], inp["zero_point"])


def tflm_raw(q, xq):
    from drsn_edge.backends.tflm import tflm_interpreter

    it = tflm_interpreter(q)
    shape = it.get_input_details(0)["shape"]
    out = []
    for row in xq:
        it.set_input(row.reshape(shape), 0)
        it.invoke()
        out.append(np.array(it.get_output(0)).reshape(-1).copy())
    return np.stack(out)


def bit_exactness(q, windows, work: Path) -> dict:
    from drsn_edge.cengine import HostEngine, generate

    ref = tflm_raw(q, windows)
    res = {"windows": len(windows)}
    for dsp in (False, True):
        generate(q, work / f"host_dsp{int(dsp)}", dsp=dsp)
        out = HostEngine(work / f"host_dsp{int(dsp)}").run_raw(windows)
        res["dsp" if dsp else "plain"] = int((out == ref).all(1).sum())
    return res


def qemu_counts(c_dir: Path, cpu: str, fpu: str, machine: str, defines, work: Path, tag: str) -> dict:
    from drsn_edge.cengine import arm_compile

    r = arm_compile(c_dir, cpu, fpu, [FW / "bench_main.c"], work / f"{tag}.elf", 4 << 20, 4 << 20,
                    defines=defines, include_dirs=[str(work), str(FW)])
    p = subprocess.run(["qemu-system-arm", "-M", machine, "-nographic", "-monitor", "none", "-icount", "shift=0",
                        "-semihosting-config", "enable=on,target=native", "-kernel", r["elf"]],
                       check=False, capture_output=True, text=True, timeout=300)
    text = p.stdout + p.stderr
    if p.returncode != 0 or "OUT match" not in text:
        raise SystemExit(f"{tag}: the firmware's output differs from the host engine's:\n{text[-800:]}")
    cal_ticks, cal_instr = (int(v) for v in re.search(r"CAL (\d+) (\d+)", text).groups())
    per_tick = cal_instr / cal_ticks
    kernels = {int(i): int(t) * per_tick for i, t in re.findall(r"^K (\d+) (\d+)", text, re.MULTILINE)}
    return {"instructions": int(text.split("TICKS ")[1].split()[0]) * per_tick, "kernels": kernels,
            "arm": r, "instr_per_tick": per_tick}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows-per-class", type=int, default=10)
    ap.add_argument("--no-qemu", action="store_true")
    args = ap.parse_args()
    from drsn_edge.backends import tflm
    from drsn_edge.cengine import HostEngine, generate
    from drsn_edge.evalspec import EvalSpec

    t0 = time.perf_counter()
    q, cx, bundle = shipped_int8()
    work = Path(tempfile.mkdtemp(prefix="drsn-cengine-bench-"))
    spec = EvalSpec(windows_per_class=args.windows_per_class)
    src = spec.describe()
    windows = np.concatenate([quantize(q, cx), quantize(q, spec.windows(bundle.meta).x)])
    exact = bit_exactness(q, windows, work)
    info = generate(q, work / "c")
    arena_tflm = tflm.min_arena_bytes(q)
    res = {"model": "shipped DRSN-CW", "tflite_bytes": len(q), "macs": info["macs"], "ops": len(info["ops"]),
           "kernels": len(info["kernels"]), "bit_exact": exact, "evaluation": f"calibration set + {src}",
           "arena_bytes": info["arena_bytes"], "tflm_arena_bytes": arena_tflm, "weight_bytes": info["weight_bytes"]}
    if not args.no_qemu and shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc"):
        xq = windows[:1]
        y = HostEngine(work / "c").run_raw(xq)[0]
        (work / "bench_data.h").write_text(
            f"static const int8_t bench_in[{xq.size}] = {{{', '.join(map(str, xq[0]))}}};\n"
            f"static const int8_t bench_expected[{y.size}] = {{{', '.join(map(str, y))}}};\n")
        res["qemu"] = {}
        for target, (cpu, fpu, machine) in CORES.items():
            for path, defs in (("plain", ["DRSN_DSP=0"]), ("simd", [])):
                c = qemu_counts(work / "c", cpu, fpu, machine, defs, work, f"{target}-{path}")
                res["qemu"][f"{target} {path}"] = {"instructions": round(c["instructions"]),
                                                   "instr_per_mac": c["instructions"] / info["macs"],
                                                   "flash_bytes": c["arm"]["engine"]["flash_bytes"],
                                                   "code_bytes": c["arm"]["engine"]["text"],
                                                   "rodata_bytes": c["arm"]["engine"]["rodata"],
                                                   "stack_bytes": c["arm"]["engine"]["stack_estimate_bytes"]}
        prof = qemu_counts(work / "c", "cortex-m4", CORES["qemu-m4"][1], CORES["qemu-m4"][2],
                           ['DRSN_HOOKS_HEADER="bench_hooks.h"'], work, "qemu-m4-profile")
        by_kind = collections.Counter()
        for i, n in prof["kernels"].items():
            by_kind[info["kernels"][i].split("#")[0]] += n
        res["qemu_m4_simd_by_kernel"] = {k: round(v) for k, v in by_kind.most_common()}
        m4 = res["qemu"]["qemu-m4 simd"]
        res["ram_bytes"] = info["arena_bytes"] + m4["stack_bytes"]
        res["flash_bytes"] = m4["flash_bytes"]
    res["wall_s"] = time.perf_counter() - t0
    RESULTS.mkdir(exist_ok=True)
    report(res)
    (RESULTS / "cengine.json").write_text(json.dumps(res, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def report(res: dict) -> None:
    lines = [(f"model: {res['model']}, {res['ops']} tflite ops -> {res['kernels']} kernels, {res['macs']:,} MACs, "
              f".tflite {res['tflite_bytes']:,} B"),
             (f"bit-exact with TFLM: plain {res['bit_exact']['plain']}/{res['bit_exact']['windows']}, "
              f"SIMD {res['bit_exact']['dsp']}/{res['bit_exact']['windows']} ({res['evaluation']})")]
    if "ram_bytes" in res:
        lines.append(f"RAM: static plan {res['arena_bytes']:,} B + stack {res['ram_bytes'] - res['arena_bytes']} B "
                     f"= {res['ram_bytes']:,} B vs TFLM arena {res['tflm_arena_bytes']:,} B "
                     f"({res['ram_bytes'] / res['tflm_arena_bytes']:.2f}x; target <= 0.3x)")
        lines.append(f"flash (engine code + weights + parameters, cortex-m4 SIMD build): {res['flash_bytes']:,} B "
                     f"(target <= 32 KB; constants {res['weight_bytes']:,} B)")
        for name, r in res["qemu"].items():
            lines.append(f"  {name:16s} {r['instructions']:>11,} instructions  {r['instr_per_mac']:.2f} instr/MAC  "
                         f"code {r['code_bytes']:,} B  rodata {r['rodata_bytes']:,} B")
        total = sum(res["qemu_m4_simd_by_kernel"].values())
        lines.append("  qemu-m4 SIMD by kernel: " + ", ".join(
            f"{k} {100 * v / total:.0f}%" for k, v in res["qemu_m4_simd_by_kernel"].items() if v / total >= 0.01))
    lines.append(f"wall {res['wall_s']:.0f} s")
    text = "\n".join(lines)
    print(text)
    (RESULTS / "cengine.txt").write_text(text + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
