#!/usr/bin/env python
"""`quantize --method auto` against each fixed calibration method: accuracy drop per SNR and the worst level.

auto chooses on validation windows (simulated recordings with another seed, or the val split of --data) and is
reported on the test windows, like every fixed method here. Equivalent CLI, per method:
  drsn-edge quantize [MODEL] --method {auto,minmax,percentile,entropy,mse} --windows-per-class N --snr -5:5 -o m.onnx
  python benchmarks/quantize_auto.py [--model PATH] [--data DATA.npz] [--windows-per-class 30]
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
    ap.add_argument("--model", default=None, help="Default: the shipped model.")
    ap.add_argument("--calib", default=None, help="Default: the shipped calibration set.")
    ap.add_argument("--data", default=None, help="Labelled windows (default: simulated recordings).")
    ap.add_argument("--windows-per-class", type=int, default=30)
    ap.add_argument("--out", default="benchmarks/results/quantize_auto")
    a = ap.parse_args(argv)

    import torch

    from drsn_edge.evalspec import EvalSpec
    from drsn_edge.quantize.ptq import METHODS
    from drsn_edge.quantize.run import quantize_model

    torch.set_num_threads(1)
    spec = EvalSpec(data=a.data, windows_per_class=a.windows_per_class, snrs=tuple(float(s) for s in range(-5, 6)))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in ("auto", *METHODS):
            t0 = time.perf_counter()
            r = quantize_model(a.model, a.calib, Path(tmp) / f"{m}.onnx", method=m, max_drop=100, max_cell_drop=100,
                               spec=spec).to_json()
            rows[m] = {"method": r["method"], "drop_pp": r["accuracy_drop_pp"], "worst_snr_drop_pp": r["worst_snr_drop_pp"],
                       "max_cell_drop_pp": r["max_cell_drop_pp"], "float_accuracy": r["float_accuracy"],
                       "int8_accuracy": r["int8_accuracy"], "curve": {s: c["drop_pp"] for s, c in r["snr_curve"].items()},
                       "selection": r["method_selection"], "s": time.perf_counter() - t0, "n": r["n"]}
            print(f"{m:10s} → {r['method']:10s} drop {r['accuracy_drop_pp']:+.2f} pp, worst SNR {r['worst_snr_drop_pp']:.2f} pp,"
                  f" worst noise×SNR cell {r['max_cell_drop_pp']:.2f} pp ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"\ntest windows: {rows['auto']['n']} ({spec.describe()})")
    snrs = list(rows["minmax"]["curve"])
    print("drop pp per SNR (mean of 3 noise types), test windows")
    print("   SNR " + "".join(f"{m:>11s}" for m in rows))
    for s in snrs:
        print(f"{s:>6s} " + "".join(f"{rows[m]['curve'][s]:11.2f}" for m in rows))
    print(" worst " + "".join(f"{rows[m]['worst_snr_drop_pp']:11.2f}" for m in rows))
    sel = rows["auto"]["selection"]
    print(f"\nauto chose {sel['chosen']} on {sel['n']} validation windows ({sel['windows']}):")
    for r in sel["table"]:
        print(f"  {r['method']:10s} worst SNR drop {r['worst_snr_drop_pp']:.2f} pp, worst cell {r['max_cell_drop_pp']:.2f} pp,"
              f" drop {r['drop_pp']:+.2f} pp{'  ← chosen' if r['chosen'] else ''}")
    best_fixed = min(METHODS, key=lambda m: rows[m]["worst_snr_drop_pp"])
    print(f"best fixed method on the test windows: {best_fixed} (worst SNR {rows[best_fixed]['worst_snr_drop_pp']:.2f} pp);"
          f" auto: {rows['auto']['worst_snr_drop_pp']:.2f} pp")
    Path(a.out + ".json").write_text(json.dumps({"spec": spec.to_json(), "rows": rows}, indent=1))
    print(f"wrote {a.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
