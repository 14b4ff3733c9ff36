#!/usr/bin/env python
"""Batch-1 latency of PyTorch eager and every host format of the shipped model, measured interleaved in one
run: each round runs a burst of consecutive windows (a stream, one window per call) through every format in
turn, the order rotating each round, so the load of a shared machine falls on all formats alike while each
format runs with its own data in the caches, as it would serving a stream. Prints p50 / p99 / min per
format, the load average before and after, and the speed-up of the best format over PyTorch eager (host
goal: ≥ 20× and ≤ 60 µs).

The formats are the build folders of `drsn-edge benchmark` in the work folder (built there when missing
or stale, with the same evaluation spec): ONNX Runtime fp32 and int8 QDQ, LiteRT int8, the native float
C engine, the host build (whatever it chose), TFLite Micro and the int8 C engine run on this machine.

  python benchmarks/host_speed.py [--rounds 200] [--burst 10] [--work build/benchmark]
                                  [--out benchmarks/results/host_speed.json]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

HOST_FORMATS = ("pytorch fp32", "onnx fp32", "onnx int8 QDQ", "litert int8", "c engine fp32 (native, host)",
                "host (fastest kept)", "c engine int8 (host)", "tflm int8 (host)")
SLOW = ("tflm int8 (host)", "c engine int8 (host)")  # milliseconds per window: one window a round


def _runners(work: str, windows_per_class: int, progress) -> tuple[list, np.ndarray]:
    from drsn_edge.benchmark import FORMATS, Bench
    from drsn_edge.evalspec import EvalSpec
    from drsn_edge.evaluate import resolve_model

    spec = EvalSpec(windows_per_class=windows_per_class)
    bundle, path = resolve_model(None)
    Path(work).mkdir(parents=True, exist_ok=True)
    b = Bench(work=Path(work), model=None, spec=spec, bundle=bundle, model_path=str(path), progress=progress)
    out = []
    for f in FORMATS:
        if f.label not in HOST_FORMATS:
            continue
        why = f.needs()
        if why:
            print(f"{f.label}: skipped ({why})")
            continue
        factory = f.make(b)[0]
        r = factory()
        r.activate()
        out.append((f.label, r))
    return out, spec.windows(bundle.meta).x


def measure(runners: list, x: np.ndarray, rounds: int, burst: int, warmup: int = 50) -> dict:
    """Interleaved rounds; the runners' own wall clocks (the same timing `check` and `benchmark` use)."""
    for _, r in runners:
        r.infer(x[:warmup])
        r.activate()  # drop the warm-up timings
    n = len(runners)
    for i in range(rounds):
        at = (i * burst) % max(len(x) - burst, 1)
        for k in range(n):
            label, r = runners[(i + k) % n]
            for j in range(1 if label in SLOW else burst):
                r.infer(x[at + j: at + j + 1])
    out = {}
    for label, r in runners:
        lat = np.asarray(r.timing().latencies_ms) * 1000.0
        out[label] = {"runtime": r.name, "runs": len(lat), "p50_us": float(np.percentile(lat, 50)),
                      "p99_us": float(np.percentile(lat, 99)), "min_us": float(lat.min())}
        r.deactivate()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--burst", type=int, default=10)
    ap.add_argument("--work", default="build/benchmark")
    ap.add_argument("--windows-per-class", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/host_speed.json")
    a = ap.parse_args(argv)
    from drsn_edge.fileio import write_json

    runners, x = _runners(a.work, a.windows_per_class, lambda s, *k, **kw: print(f"  … {s}", flush=True))
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    res = measure(runners, x, a.rounds, a.burst)
    load1 = os.getloadavg()
    print(f"\n{a.rounds} interleaved rounds of {a.burst} windows in {time.perf_counter() - t0:.0f} s; load average "
          f"{load0[0]:.2f} before, {load1[0]:.2f} after; {os.cpu_count()} CPUs")
    print(f"{'format':30s} {'runtime':36s} {'runs':>5s} {'p50 µs':>9s} {'p99 µs':>9s} {'min µs':>9s}")
    for label, m in res.items():
        print(f"{label:30s} {m['runtime']:36s} {m['runs']:5d} {m['p50_us']:9.1f} {m['p99_us']:9.1f} {m['min_us']:9.1f}")
    torch = res.get("pytorch fp32")
    best_label = min((k for k in res if k != "pytorch fp32"), key=lambda k: res[k]["p50_us"], default=None)
    summary = {"rounds": a.rounds, "burst": a.burst, "load_before": load0, "load_after": load1, "formats": res}
    if torch and best_label:
        best = res[best_label]
        up = torch["p50_us"] / best["p50_us"]
        summary["best"] = {"format": best_label, "speedup_vs_pytorch": up}
        print(f"\nbest: {best_label} p50 {best['p50_us']:.1f} µs vs PyTorch eager {torch['p50_us']:.1f} µs = "
              f"{up:.1f}× (target ≥ 20×: {'met' if up >= 20 else 'NOT met'}; ≤ 60 µs: "
              f"{'met' if best['p50_us'] <= 60 else 'NOT met'})")
    write_json(Path(a.out), summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
