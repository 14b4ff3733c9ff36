#!/usr/bin/env python
"""INT8 post-training quantization of the shipped model with each calibration method.

For the default model and the default calibration set: accuracy drop averaged over the −5…+5 dB ×
3-noise grid on fresh simulated recordings, the accuracy-vs-SNR curve of INT8 against float (plot), the
worst per-SNR drop, output SQNR, and the quantize wall time.

  python benchmarks/quantize_methods.py [--windows-per-class 100] [--methods minmax,percentile,entropy,mse]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="minmax,percentile,entropy,mse")
    ap.add_argument("--windows-per-class", type=int, default=100)
    ap.add_argument("--out", default="benchmarks/results/quantize_methods.json")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    from drsn_edge.quantize.run import quantize_model

    rows = {}
    work = Path(tempfile.mkdtemp(prefix="drsn-q-"))
    for m in a.methods.split(","):
        t0 = time.perf_counter()
        s = quantize_model(None, None, work / f"{m}.onnx", method=m, max_drop=100,
                           windows_per_class=a.windows_per_class).to_json()
        rows[m] = {k: s[k] for k in ("float_accuracy", "int8_accuracy", "accuracy_drop_pp", "grid_drop_pp",
                                     "max_cell_drop_pp", "agreement", "sqnr_db", "quantize_s", "n", "snr_curve")}
        rows[m]["wall_s"] = time.perf_counter() - t0
        curve = s["snr_curve"]
        rows[m]["max_snr_drop_pp"] = max(c["drop_pp"] for c in curve.values())
        print(f"{m:10s} float {100 * s['grid_float_accuracy']:.2f} %  int8 {100 * s['grid_int8_accuracy']:.2f} %  "
              f"grid drop {s['grid_drop_pp']:+.2f} pp  worst SNR drop {rows[m]['max_snr_drop_pp']:+.2f} pp  "
              f"agreement {100 * s['agreement']:.2f} %  SQNR {s['sqnr_db']:.1f} dB  quantize {s['quantize_s']:.1f} s  "
              f"(whole command {rows[m]['wall_s']:.0f} s, {s['n']} windows)", flush=True)
    print("\nper SNR (dB), mean of 3 noise types: float / int8 per method")
    snrs = list(next(iter(rows.values()))["snr_curve"])
    print(f"{'SNR':>5s} {'float':>7s} " + " ".join(f"{m:>10s}" for m in rows))
    for snr in snrs:
        f = next(iter(rows.values()))["snr_curve"][snr]["float"]
        print(f"{snr:>5s} {100 * f:7.2f} " + " ".join(f"{100 * r['snr_curve'][snr]['int8']:10.2f}" for r in rows.values()))
    best = min(rows, key=lambda m: rows[m]["grid_drop_pp"])
    print(f"\nbest method: {best} (grid drop {rows[best]['grid_drop_pp']:+.2f} pp, target ≤ 0.3; "
          f"worst SNR {rows[best]['max_snr_drop_pp']:+.2f} pp, target ≤ 0.5)")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"windows_per_class": a.windows_per_class, "methods": rows}, indent=1))
    _plot(rows, snrs, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def _plot(rows, snrs, path):
    from drsn_edge.deps import pyplot

    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    x = [float(s) for s in snrs]
    first = next(iter(rows.values()))
    ax.plot(x, [100 * first["snr_curve"][s]["float"] for s in snrs], "k-o", label="float")
    for m, r in rows.items():
        ax.plot(x, [100 * r["snr_curve"][s]["int8"] for s in snrs], marker=".", label=f"int8 {m}")
        ax2.plot(x, [r["snr_curve"][s]["drop_pp"] for s in snrs], marker=".", label=m)
    ax.set_xlabel("SNR (dB)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("float vs INT8, mean of 3 noise types")
    ax.legend()
    ax.grid(alpha=0.3)
    for lim in (0.5, -0.5):
        ax2.axhline(lim, color="gray", ls="--")
    ax2.set_xlabel("SNR (dB)")
    ax2.set_ylabel("INT8 drop (pp)")
    ax2.set_title("accuracy drop per SNR (target within ±0.5 pp)")
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
