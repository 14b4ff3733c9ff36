#!/usr/bin/env python
"""The format matrix of the shipped model on this machine, every row measured in one run: PyTorch fp32,
ONNX fp32 and int8 QDQ, LiteRT int8, the host build (the fastest runtime within the accuracy gate, chosen
at build time), TFLite Micro int8 on the host, and the rows this installation cannot run (skipped, with the
reason). Then the host goal: batch-1 p50 of the best format against PyTorch eager in the same run
(target: ≥ 20× faster and ≤ 60 µs).

  python benchmarks/format_matrix.py [--work build/benchmark] [--windows-per-class 10] [--rebuild]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="build/benchmark")
    ap.add_argument("--windows-per-class", type=int, default=10)
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/format_matrix")
    a = ap.parse_args(argv)
    from drsn_edge.benchmark import benchmark
    from drsn_edge.benchmark_report import COLUMNS, matrix_rows, timing_notes
    from drsn_edge.evalspec import EvalSpec
    from drsn_edge.fileio import write_json

    res = benchmark(None, work_dir=a.work, spec=EvalSpec(windows_per_class=a.windows_per_class),
                    force_build=a.rebuild, report=a.out, progress=lambda s, *x, **k: print(f"  … {s}", flush=True))
    widths = [max(len(c), *(len(r[i]) for r in matrix_rows(res))) for i, c in enumerate(COLUMNS)]
    print(f"\nmodel {res.model}; {res.windows} windows ({res.evaluation}); machine {res.machine}")
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)))
    for row in matrix_rows(res):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    for note in timing_notes(res):
        print(f"timing of {note}")
    best, torch_row = res.best(), res.row("pytorch fp32")
    if best and torch_row and torch_row.status == "ok":
        speedup = torch_row.p50_us / best.p50_us
        print(f"\nhost goal: best {best.format} ({best.runtime}) p50 {best.p50_us:.1f} µs vs PyTorch eager "
              f"{torch_row.p50_us:.1f} µs in the same run = {speedup:.1f}× "
              f"(target ≥ 20×: {'met' if speedup >= 20 else 'NOT met'}; ≤ 60 µs: "
              f"{'met' if best.p50_us <= 60 else 'NOT met'})")
    host = res.row("host (fastest kept)")
    if host and host.status == "ok":
        from drsn_edge.backends import load_build

        choice = load_build(Path(a.work) / "host").manifest.get("choice") or {}
        print(f"host build chose {choice.get('candidate')}: {choice.get('reason')}")
    write_json(Path(a.out) / "benchmark.json", res.to_json())
    print(f"report: {a.out}/benchmark.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
