#!/usr/bin/env python
"""Train the shipped default DRSN-CW and print the figures of its recipe.

Equivalent CLI commands (what this script runs, plus the evaluation it stores in the bundle):
  drsn-edge data synth -o train.npz --windows-per-class 1000 --recordings-per-class 200 --seed 1
  drsn-edge train --data train.npz --arch drsn-cw --epochs 40 --seed 0 -o drsn-cw-default.drsn

Prints: training throughput (windows/s), wall time, the epoch and time at which the noisy validation
set first reached 95 %, and test accuracy clean and at −5 / 0 dB per noise type on fresh recordings.
  python benchmarks/train_default.py [--out drsn_edge/pretrained/drsn-cw-default.drsn] [--epochs 40]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPRODUCE = ("drsn-edge data synth -o train.npz --windows-per-class 1000 --recordings-per-class 200 --seed 1 && "
             "drsn-edge train --data train.npz --arch drsn-cw --epochs {epochs} --seed 0 -o drsn-cw-default.drsn")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="drsn_edge/pretrained/drsn-cw-default.drsn")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--test-windows-per-class", type=int, default=100)
    a = ap.parse_args(argv)

    import torch

    from drsn_edge.bundle import load_bundle, save_bundle
    from drsn_edge.data.dataset import save_dataset
    from drsn_edge.data.simulator import synthesize
    from drsn_edge.evaluate import evaluate, fresh_test_set, grid_mean
    from drsn_edge.train import TrainConfig, train

    work = Path(tempfile.mkdtemp(prefix="drsn-default-"))
    t0 = time.perf_counter()
    data = work / "train.npz"
    save_dataset(synthesize(windows_per_class=1000, recordings_per_class=200, seed=1), data)
    t_data = time.perf_counter() - t0
    marks = {}

    def on_event(event, **info):
        if event == "start":
            marks["t0"] = time.perf_counter()
        if event == "epoch":
            el = time.perf_counter() - marks["t0"]
            print(f"epoch {info['epoch']:3d}  loss {info['loss']:.4f}  train {100 * info['train_acc']:.2f} %  "
                  f"val(noisy) {100 * info['val_acc']:.2f} %  {el:.0f} s", flush=True)
            if info["val_acc"] >= 0.95 and "hit95" not in marks:
                marks["hit95"] = (info["epoch"], el)

    tmp_out = work / "model.drsn"
    s = train(TrainConfig(data=str(data), out=str(tmp_out), arch="drsn-cw", epochs=a.epochs, seed=0), progress=on_event)
    b = load_bundle(tmp_out)
    test = fresh_test_set(b.meta, a.test_windows_per_class, seed=100_000)
    rep = evaluate(b, test, ["gaussian", "laplacian", "pink"], [-5.0, 0.0, 5.0], seed=1, splits=None)
    shifted = fresh_test_set(b.meta, a.test_windows_per_class, seed=100_001, condition="shifted")
    rep_s = evaluate(b, shifted, ["gaussian", "laplacian", "pink"], [-5.0, 0.0, 5.0], seed=1, splits=None)
    per = rep["per_snr"]
    metrics = {
        "clean_accuracy": per["none"]["clean"],
        "accuracy_0db": sum(per[k]["0"] for k in ("gaussian", "laplacian", "pink")) / 3,
        "accuracy_minus5db": sum(per[k]["-5"] for k in ("gaussian", "laplacian", "pink")) / 3,
        "per_snr": {k: v for k, v in per.items()},
        "shifted_clean_accuracy": rep_s["per_snr"]["none"]["clean"],
        "shifted_grid_accuracy": grid_mean(rep_s),
        "test_set": f"fresh simulated recordings, seed 100000, {a.test_windows_per_class} windows/class",
        "best_val_acc": s["best_val_acc"],
    }
    meta = dict(b.meta)
    meta["metrics"] = metrics
    meta["reproduce"] = REPRODUCE.format(epochs=a.epochs)
    save_bundle(b.model, meta, a.out)
    print(f"\nthreads {torch.get_num_threads()}, cores {os.cpu_count()}")
    print(f"data synthesis {t_data:.1f} s; training {s['wall_s']:.1f} s for {a.epochs} epochs on {s['train_windows']} "
          f"windows = {s['windows_per_s']:.0f} windows/s (forward+backward, augmentation and validation included)")
    if "hit95" in marks:
        print(f"noisy validation first ≥ 95 % at epoch {marks['hit95'][0]} after {marks['hit95'][1]:.0f} s")
    print(f"test clean {100 * metrics['clean_accuracy']:.2f} %")
    for k in ("gaussian", "laplacian", "pink"):
        print(f"  {k:9s} -5 dB {100 * per[k]['-5']:.2f} %   0 dB {100 * per[k]['0']:.2f} %   5 dB {100 * per[k]['5']:.2f} %")
    print(f"shifted conditions: clean {100 * metrics['shifted_clean_accuracy']:.2f} %, "
          f"grid {100 * metrics['shifted_grid_accuracy']:.2f} %")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
