#!/usr/bin/env python
"""What the domain guard costs the native float C engine (the `host` target's fastest candidate) on the shipped
model. Two engines are generated from the model's fp32 graph by the same code: one from the logits-only graph
(what a bundle without a guard gets, and what the engine was before it had taps) and one from the graph with the
guard's tap outputs after the logits. Their runners are timed interleaved, one window per call, in rounds whose
order rotates (the timing `check` uses: the runner's wall clock around each engine call), the taps engine twice:
without its guard, and with it (the runner copies each window's taps out; it scores them when asked, which a
latency run never does). Then the host-side score (guard.Guard.score, float64) per window: on one window
at a time and over a batch of windows, as the runner computes it after a batch has run. Also checks that the
engine's taps match the float model's (guard.guard_features) on the same windows.

  python benchmarks/native_guard.py [--rounds 300] [--burst 10] [--work build/native_guard]
                                    [--out benchmarks/results/native_guard.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def _engine(bundle, guard, folder: Path):
    """(runner, generated meta) of the engine for bundle's graph, with the guard's taps when guard is given."""
    from drsn_edge.backends.native import NativeRunner, engine_guard
    from drsn_edge.cengine.f32codegen import generate_f32
    from drsn_edge.cengine.f32host import LIB, install_lib
    from drsn_edge.export import to_onnx_bytes

    meta = generate_f32(to_onnx_bytes(bundle.model, 1, bundle.window, guard=guard, score=False), folder)
    lib = install_lib(folder)
    side = engine_guard(guard, meta["taps"]) if guard is not None else None
    return NativeRunner(folder / LIB, lib["cpu_signature"], side), meta


def _score_cost(guard, feats: np.ndarray, repeats: int = 200) -> dict:
    one = feats[:1]
    t0 = time.perf_counter()
    for _ in range(repeats):
        guard.score(one)
    single = (time.perf_counter() - t0) / repeats * 1e6
    t0 = time.perf_counter()
    guard.score(feats)
    batched = (time.perf_counter() - t0) / len(feats) * 1e6
    return {"one_window_us": single, "per_window_in_batch_us": batched, "batch": len(feats)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--burst", type=int, default=10)
    ap.add_argument("--work", default="build/native_guard")
    ap.add_argument("--out", default="benchmarks/results/native_guard.json")
    a = ap.parse_args(argv)
    from host_speed import measure

    from drsn_edge.backends.native import NativeRunner, verify_taps
    from drsn_edge.cengine.f32host import LIB
    from drsn_edge.evalspec import EvalSpec
    from drsn_edge.evaluate import resolve_model
    from drsn_edge.fileio import write_json
    from drsn_edge.guard import from_meta, guard_features

    bundle, path = resolve_model(None)
    guard = from_meta(bundle.meta)
    if guard is None:
        print(f"{path} has no domain guard: nothing to compare")
        return 2
    x = EvalSpec(windows_per_class=10).windows(bundle.meta).x
    plain, plain_meta = _engine(bundle, None, Path(a.work) / "logits")
    taps, taps_meta = _engine(bundle, guard, Path(a.work) / "taps")
    taps.infer(x)
    feats = taps.last_taps
    tap_diff = verify_taps(feats, guard_features(guard, bundle.model, x))
    bare = NativeRunner(taps.folder / LIB, taps.built_for)  # the taps engine without its guard: taps not read
    runners = [("logits only", plain), ("logits + taps", bare), ("logits + taps, guard", taps)]
    for _, r in runners:
        r.activate()
    load0 = os.getloadavg()
    res = measure(runners, x, a.rounds, a.burst)
    load1 = os.getloadavg()
    score = _score_cost(guard, feats)
    print(f"\n{bundle.arch} ({Path(path).name}); guard on {len(guard.taps)} taps, {taps_meta['taps_size']} values; "
          f"load average {load0[0]:.2f} before, {load1[0]:.2f} after; {os.cpu_count()} CPUs")
    print(f"{'engine':22s} {'kernels':>7s} {'buffers B':>10s} {'runs':>5s} {'p50 µs':>8s} {'p99 µs':>8s} {'min µs':>8s}")
    for (label, _), meta in zip(runners, (plain_meta, taps_meta, taps_meta)):
        m = res[label]
        m.update(kernels=len(meta["kernels"]), buffer_bytes=meta["buffer_bytes"])
        print(f"{label:22s} {m['kernels']:7d} {m['buffer_bytes']:10d} {m['runs']:5d} {m['p50_us']:8.1f} "
              f"{m['p99_us']:8.1f} {m['min_us']:8.1f}")
    d = res["logits + taps, guard"]["p50_us"] - res["logits only"]["p50_us"]
    print(f"taps cost {d:+.1f} µs at p50; largest tap difference to the float model {tap_diff:.2e} (relative)")
    print(f"guard score on the host (Guard.score, float64): {score['one_window_us']:.0f} µs for one window, "
          f"{score['per_window_in_batch_us']:.0f} µs per window over {score['batch']} windows")
    here = Path.cwd().resolve()
    shown = Path(path).resolve()
    shown = shown.relative_to(here) if shown.is_relative_to(here) else Path(shown.name)  # no machine paths
    write_json(Path(a.out), {"model": str(shown), "rounds": a.rounds, "burst": a.burst, "load_before": load0,
                             "load_after": load1, "engines": res, "taps_p50_cost_us": d,
                             "max_rel_tap_diff": tap_diff, "score": score})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
