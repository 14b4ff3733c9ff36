#!/usr/bin/env python
"""Per-layer profiles of the shipped model on this machine: the host build (the runtime `build --target
host` chose) and the ONNX Runtime int8 QDQ build — the latter shows why int8 is slower than float on an
x86 host — each with the top-5 layers, the op types that take the time and the share of the shrinkage
branches, and the C engine's per-kernel instruction counts on the emulated Cortex-M7 (qemu-m7; see
benchmarks/profile_qemu.py). Uses the builds of benchmarks/format_matrix.py (run that first).

  python benchmarks/profile_host.py [--work build/benchmark] [--repeats 200]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path


def show(name: str, res) -> None:
    print(f"\n== {name} (target {res.target}): {res.runtime} — {res.method}")
    print(f"   wall-clock p50 {res.wall_p50_us:.1f} µs (no profiler); op rows sum {res.rows_total_us:.1f} µs; "
          f"{len(res.rows)} ops; {res.total_macs} MACs")
    print("   top-5 layers:")
    for r in res.top(5):
        print(f"     {r['module']:<28} {', '.join(r['op_types']):<40} {r['time_us']:8.1f} µs  {100 * r['share']:5.1f} %")
    by_op = defaultdict(float)
    for r in res.rows:
        by_op[r["op_type"]] += r["share"]
    print("   by op type: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])[:8]))
    print(f"   shrinkage branches: {100 * res.shrinkage_share:.1f} % of the op time")
    print("   per block µs: " + ", ".join(f"{g['block']} {g['time_us']:.0f}" for g in res.blocks))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="build/benchmark")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--out", default="benchmarks/results/profile_host")
    a = ap.parse_args(argv)
    from drsn_edge.errors import DrsnEdgeError
    from drsn_edge.profile import profile

    for name in ("host", "litert-int8", "onnx-int8", "onnx-fp32"):
        folder = Path(a.work) / name
        if not folder.is_dir():
            print(f"\n== {name}: no build at {folder}; run benchmarks/format_matrix.py first")
            continue
        show(name, profile(folder, repeats=a.repeats, warmup=20, report=str(Path(a.out) / name)))
    folder = Path(a.work) / "c-engine"
    try:
        from profile_qemu import show as show_qemu

        show_qemu(profile(folder, repeats=min(a.repeats, 50), warmup=1))
    except DrsnEdgeError as exc:
        print(f"\n== qemu-m7: skipped — {exc} (benchmarks/profile_qemu.py builds and profiles it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
