#!/usr/bin/env python
"""Per-kernel instruction counts of the shipped model's C engine on the emulated Cortex-M7 (qemu-m7):
the top-5 kernels, the op types, the blocks, the share of the shrinkage branches, and the check that the
kernels' counts add up to the normal firmware's count of the whole inference. Builds the shipped model for
qemu-m7 into --work once (reused while it has the profiling firmware).

  python benchmarks/profile_qemu.py [--work build/profile-qemu-m7] [--target qemu-m7] [--repeats 50]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def show(res) -> None:
    c, u = res.counts, res.unit
    print(f"== {res.target}: {res.runtime} — {res.method}")
    print(f"   {u} per inference: {c['per_inference_unprofiled']:.0f} (normal firmware), "
          f"{c['per_inference_profiled']:.0f} (profiling firmware, markers {c['marker_overhead_per_inference']:.0f}); "
          f"{c['kernels']} kernels sum to {c['kernels_sum']:.0f}: outside the kernels {c['outside_kernels']:.0f} "
          f"(tolerance ±{c['tolerance']:.0f}: {'ok' if c['within_tolerance'] else 'EXCEEDED'}); "
          f"{res.total_macs} MACs, {c['per_inference_unprofiled'] / res.total_macs:.2f} {u}/MAC")
    print(f"   estimate at {c['clock_hz'] / 1e6:g} MHz, one {u[:-1]} per cycle: "
          f"{c['per_inference_unprofiled'] / c['clock_hz'] * 1e3:.1f} ms per inference")
    print("   top-5 kernels:")
    for r in sorted(res.rows, key=lambda r: -r["instructions"])[:5]:
        print(f"     {r['name']:<22} {r['module']:<20} {r['op_type']:<18} {r['macs']:>7} MACs "
              f"{r['instructions']:>9.0f} {u}  {100 * r['share']:5.2f} %  {r['instructions_per_mac'] or 0:6.2f} {u}/MAC")
    by_op = defaultdict(float)
    for r in res.rows:
        by_op[r["op_type"]] += r["share"]
    print("   by op type: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])))
    print(f"   shrinkage branches: {100 * res.shrinkage_share:.1f} % of the kernels' {u}")
    print("   per block (of it shrinkage): " + ", ".join(
        f"{g['block']} {g['instructions'] / 1e3:.0f}k ({g['shrinkage_instructions'] / 1e3:.0f}k)" for g in res.blocks))


def _build(work: Path, target: str) -> None:
    side = work / "model.int8.json"
    if side.is_file() and json.loads(side.read_text()).get("profile_image"):
        return
    from drsn_edge.build import build

    print(f"building the shipped model for {target} into {work} …")
    build(target, None, out_dir=str(work), force=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="build/profile-qemu-m7")
    ap.add_argument("--target", default="qemu-m7")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--report", default="benchmarks/results/profile_qemu")
    a = ap.parse_args(argv)
    from drsn_edge.profile import profile

    work = Path(a.work)
    _build(work, a.target)
    show(profile(work, a.target, repeats=a.repeats, warmup=1, report=a.report or None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
