#!/usr/bin/env python
"""Fine-tuning the shipped model on a few recordings of a shifted machine vs training from scratch on them.

For k = 1, 2, 5 recordings per class of the simulator's `--condition shifted` (other speeds, loads,
resonances and damping), both models see exactly the same windows and validate on the same separate
shifted recordings; both are tested on fresh shifted recordings (seed 100001), clean and with noise.
  fine-tune:    drsn-edge train --data few.npz --val-data val.npz --init drsn-cw-default.drsn -o ft.drsn
                (default recipe with --init: 15 epochs, LR 0.01)
  from scratch: drsn-edge train --data few.npz --val-data val.npz --epochs E -o scratch.drsn (paper recipe)
  python benchmarks/finetune.py [--recordings 1,2,5] [--windows-per-recording 8] [--scratch-epochs 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

NOISES = ["gaussian", "laplacian", "pink"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recordings", default="1,2,5")
    ap.add_argument("--windows-per-recording", type=int, default=8)
    ap.add_argument("--scratch-epochs", type=int, default=30)
    ap.add_argument("--test-windows-per-class", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/finetune")
    a = ap.parse_args(argv)

    from drsn_edge.bundle import default_model_path, load_bundle
    from drsn_edge.data.dataset import save_dataset
    from drsn_edge.data.simulator import synthesize
    from drsn_edge.evaluate import evaluate, fresh_test_set, grid_mean
    from drsn_edge.train import FINETUNE_EPOCHS, FINETUNE_LR, TrainConfig, train

    shipped = load_bundle(default_model_path())
    test = fresh_test_set(shipped.meta, a.test_windows_per_class, seed=100_001, condition="shifted")

    def score(bundle) -> dict:
        rep = evaluate(bundle, test, NOISES, [-5.0, 0.0, 5.0], seed=1, splits=None)
        return {"clean": rep["per_snr"]["none"]["clean"], "grid": grid_mean(rep), "accuracy": rep["accuracy"],
                "out_of_domain": (rep.get("domain") or {}).get("out_of_domain_share")}

    rows = {"shipped (no fine-tuning)": score(shipped)}
    print(f"shipped model on shifted recordings: clean {100 * rows['shipped (no fine-tuning)']['clean']:.1f} %, "
          f"noise grid {100 * rows['shipped (no fine-tuning)']['grid']:.1f} %", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        val = tmp / "val.npz"
        save_dataset(synthesize(windows_per_class=2 * a.windows_per_recording, recordings_per_class=2, seed=3001,
                                condition="shifted", split=(0.0, 1.0, 0.0)), val)
        for k in (int(v) for v in a.recordings.split(",")):
            few = tmp / f"few{k}.npz"
            save_dataset(synthesize(windows_per_class=k * a.windows_per_recording, recordings_per_class=k, seed=2000 + k,
                                    condition="shifted", split=(1.0, 0.0, 0.0)), few)
            for name, kw in (("fine-tuned", {"init": str(default_model_path()), "epochs": FINETUNE_EPOCHS,
                                             "lr": FINETUNE_LR}),
                             ("from scratch", {"epochs": a.scratch_epochs})):
                t0 = time.perf_counter()
                out = tmp / f"{name}{k}.drsn"
                train(TrainConfig(data=str(few), out=str(out), val_data=str(val), batch=32, threads=a.threads, seed=0,
                                  **kw))
                r = score(load_bundle(out)) | {"train_s": time.perf_counter() - t0, "windows": 10 * k * a.windows_per_recording}
                rows[f"{name}, {k} recording(s)/class"] = r
                print(f"{name:12s} {k} recording(s)/class ({r['windows']} windows): clean {100 * r['clean']:.1f} %, "
                      f"noise grid {100 * r['grid']:.1f} %, out of domain {100 * (r['out_of_domain'] or 0):.1f} % "
                      f"({r['train_s']:.0f} s)", flush=True)
    Path(a.out + ".json").write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1))
    print(f"wrote {a.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
