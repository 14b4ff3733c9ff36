#!/usr/bin/env python
"""Microcontroller builds of the shipped model: one bundle per target, with the figures that matter on
the board — .tflite bytes, measured TFLite Micro arena, op list, memory fit, end-to-end build time — and
the int8 drop measured in TFLite Micro over the whole noise grid (−5…+5 dB × 3 noise types + clean).

  python benchmarks/mcu_builds.py [--targets stm32h743,nrf52840,rp2040] [--windows-per-class 20]
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
    ap.add_argument("--targets", default="stm32h743,nrf52840,rp2040")
    ap.add_argument("--windows-per-class", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/mcu_builds.json")
    a = ap.parse_args(argv)
    from drsn_edge.backends.tflm import tflm_run
    from drsn_edge.build import build
    from drsn_edge.evalspec import EvalSpec
    from drsn_edge.evaluate import accuracy_report, grid_mean, predict_logits, resolve_model

    work = Path(tempfile.mkdtemp(prefix="drsn-mcu-"))
    bundle, _ = resolve_model(None)
    spec = EvalSpec(windows_per_class=a.windows_per_class, snrs=tuple(float(s) for s in range(-5, 6)), seed=1)
    ds = spec.windows(bundle.meta)
    x, src = ds.x, ds.description
    ref = predict_logits(bundle.model, x).argmax(1)
    f_rep = accuracy_report(ds.y, ref, bundle.class_names, ds.noise, ds.snr_db)
    rows = {}
    for t in a.targets.split(","):
        t0 = time.perf_counter()
        res = build(t, out_dir=work / t).to_json()
        wall = time.perf_counter() - t0
        q = (work / t / "model.int8.tflite").read_bytes()
        pred = tflm_run(q, x, arena_size=res["memory"]["arena_bytes"], raw=True).argmax(1)
        q_rep = accuracy_report(ds.y, pred, bundle.class_names, ds.noise, ds.snr_db)
        m = res["memory"]
        rows[t] = {"tflite_bytes": m["model_bytes"], "arena_bytes": m["arena_measured_bytes"],
                   "arena_with_margin": m["arena_bytes"], "flash_bytes": m["flash_bytes"],
                   "flash_budget": m["flash_budget_bytes"], "ram_bytes": m["ram_bytes"], "ram_budget": m["ram_budget_bytes"],
                   "fits": m["fits"], "ops": res["op_counts"], "build_s": wall,
                   "grid_float": grid_mean(f_rep), "grid_tflm": grid_mean(q_rep),
                   "grid_drop_pp": 100 * (grid_mean(f_rep) - grid_mean(q_rep)),
                   "clean_float": f_rep["per_snr"]["none"]["clean"], "clean_tflm": q_rep["per_snr"]["none"]["clean"],
                   "litert_tflm_agreement": res["litert_tflm_agreement"],
                   "litert_tflm_max_lsb": res["litert_tflm_max_lsb"]}
        r = rows[t]
        print(f"{t:10s} tflite {r['tflite_bytes']:6d} B  arena {r['arena_bytes']:6d} B (+margin {r['arena_with_margin']})  "
              f"flash {r['flash_bytes']}/{r['flash_budget']}  RAM {r['ram_bytes']}/{r['ram_budget']}  fits {r['fits']}  "
              f"grid float {100 * r['grid_float']:.2f} % TFLM {100 * r['grid_tflm']:.2f} % drop {r['grid_drop_pp']:+.2f} pp  "
              f"LiteRT/TFLM agree {100 * r['litert_tflm_agreement']:.1f} % (max {r['litert_tflm_max_lsb']} LSB)  "
              f"build {wall:.1f} s", flush=True)
    first = next(iter(rows.values()))
    print("ops: " + ", ".join(f"{k}×{v}" for k, v in sorted(first["ops"].items())))
    print(f"evaluation: {src}, {len(x)} windows ({a.windows_per_class}/class × clean + 33 noise cells)")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"windows": int(len(x)), "targets": rows}, indent=1))
    print(f"wrote {out}; bundles in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
