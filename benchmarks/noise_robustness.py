#!/usr/bin/env python
"""DRSN-CW vs DRSN-CS vs ResNet vs ConvNet: same recipe, same budget, several seeds.

Every model trains on the same simulated recordings with on-the-fly noise augmentation, then is
tested on recordings it never saw, clean and at every SNR of the −5…+5 dB grid for each of the three
noise types, and again on a shifted test set (shaft speeds, loads, resonances and damping outside the
training ranges). Prints mean ± std over seeds per cell and writes JSON + a plot.

  python benchmarks/noise_robustness.py                  # the reported configuration
  python benchmarks/noise_robustness.py --quick          # a smoke run (minutes, not meaningful)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ARCHS = ["drsn-cw", "drsn-cs", "resnet", "convnet"]
NOISES = ["gaussian", "laplacian", "pink"]


def _run(job: dict) -> dict:
    import torch

    torch.set_num_threads(job["threads"])
    from drsn_edge.bundle import load_bundle
    from drsn_edge.data.dataset import load_dataset
    from drsn_edge.evaluate import evaluate, grid_mean
    from drsn_edge.train import TrainConfig, train

    out = Path(job["workdir"]) / f"{job['arch']}-s{job['seed']}.drsn"
    cfg = TrainConfig(data=job["train"], out=str(out), arch=job["arch"], epochs=job["epochs"], seed=job["seed"],
                      threads=job["threads"], noise=tuple(job["train_noise"]))
    summary = train(cfg)
    bundle = load_bundle(out)
    res = {"arch": job["arch"], "seed": job["seed"], "train": summary}
    snrs = list(range(-5, 6))
    for name in ("test", "shifted"):
        rep = evaluate(bundle, load_dataset(job[name]), NOISES, snrs, seed=123, splits=None)
        res[name] = {"per_snr": rep["per_snr"], "clean": rep["per_snr"]["none"]["clean"], "grid": grid_mean(rep)}
    print(f"  {job['arch']:8s} seed {job['seed']}: in-domain grid {100 * res['test']['grid']:.2f} %, "
          f"shifted grid {100 * res['shifted']['grid']:.2f} %, {summary['wall_s']:.0f} s", flush=True)
    return res


def ms(vals) -> str:
    a = 100 * np.asarray(vals, dtype=float)
    return f"{a.mean():6.2f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:4.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--windows-per-class", type=int, default=1000)
    ap.add_argument("--recordings-per-class", type=int, default=200)
    ap.add_argument("--test-windows-per-class", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2, help="parallel trainings")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per training (default: cores / jobs)")
    ap.add_argument("--out", default="benchmarks/results/noise_robustness.json")
    ap.add_argument("--train-noise", default="gaussian,laplacian,pink",
                    help="augmentation noise types ('none': train on clean windows only — an ablation)")
    ap.add_argument("--quick", action="store_true", help="tiny smoke configuration")
    a = ap.parse_args(argv)
    if a.quick:
        a.seeds, a.epochs, a.windows_per_class, a.recordings_per_class, a.test_windows_per_class = 2, 2, 60, 12, 10
    from drsn_edge.data.dataset import save_dataset
    from drsn_edge.data.simulator import synthesize

    work = Path(tempfile.mkdtemp(prefix="drsn-bench-"))
    t0 = time.time()
    paths = {"train": work / "train.npz", "test": work / "test.npz", "shifted": work / "shifted.npz"}
    save_dataset(synthesize(a.windows_per_class, a.recordings_per_class, seed=1), paths["train"])
    save_dataset(synthesize(a.test_windows_per_class, max(2, a.test_windows_per_class // 5), seed=2,
                            split=(0, 0, 1)), paths["test"])
    save_dataset(synthesize(a.test_windows_per_class, max(2, a.test_windows_per_class // 5), seed=3,
                            condition="shifted", split=(0, 0, 1)), paths["shifted"])
    archs = a.archs.split(",")
    threads = a.threads or max(1, (os.cpu_count() or 1) // a.jobs)
    train_noise = [] if a.train_noise == "none" else a.train_noise.split(",")
    jobs = [{"arch": ar, "seed": s, "epochs": a.epochs, "threads": threads, "workdir": str(work), "train_noise": train_noise,
             **{k: str(v) for k, v in paths.items()}} for s in range(a.seeds) for ar in archs]
    print(f"{len(jobs)} trainings: {a.epochs} epochs on {int(0.7 * a.windows_per_class)} windows/class "
          f"from {a.recordings_per_class} recordings/class, augmentation noise {a.train_noise}; "
          f"{a.jobs} in parallel", flush=True)
    if a.jobs > 1:
        with ProcessPoolExecutor(a.jobs) as ex:
            results = list(ex.map(_run, jobs))
    else:
        results = [_run(j) for j in jobs]

    by = {ar: [r for r in results if r["arch"] == ar] for ar in archs}
    snrs = [f"{s}" for s in range(-5, 6)]
    print(f"\naccuracy % (mean ± std over {a.seeds} seeds), held-out recordings")
    head = f"{'model':9s} {'clean':>13s} " + " ".join(f"{n:>13s}" for n in NOISES) + f" {'grid':>13s} {'shifted grid':>13s}"
    print(head)
    table = {}
    for ar, rs in by.items():
        per_noise = [ms([np.mean([r['test']['per_snr'][n][s] for s in snrs]) for r in rs]) for n in NOISES]
        row = {
            "clean": [r["test"]["clean"] for r in rs],
            "grid": [r["test"]["grid"] for r in rs],
            "shifted_grid": [r["shifted"]["grid"] for r in rs],
            "shifted_clean": [r["shifted"]["clean"] for r in rs],
            "per_snr_mean": {s: [float(np.mean([r["test"]["per_snr"][n][s] for n in NOISES])) for r in rs] for s in snrs},
            "per_noise_snr": {n: {s: [r["test"]["per_snr"][n][s] for r in rs] for s in snrs} for n in NOISES},
            "shifted_per_noise_snr": {n: {s: [r["shifted"]["per_snr"][n][s] for r in rs] for s in snrs} for n in NOISES},
        }
        table[ar] = row
        print(f"{ar:9s} {ms(row['clean']):>13s} " + " ".join(f"{v:>13s}" for v in per_noise)
              + f" {ms(row['grid']):>13s} {ms(row['shifted_grid']):>13s}")
    print("\nper SNR (dB), mean of the three noise types:")
    print(f"{'model':9s} " + " ".join(f"{s:>6s}" for s in snrs))
    for ar, row in table.items():
        print(f"{ar:9s} " + " ".join(f"{100 * np.mean(row['per_snr_mean'][s]):6.2f}" for s in snrs))
    print("\nper noise type × SNR (dB), held-out recordings:")
    for n in NOISES:
        for ar, row in table.items():
            print(f"{n:9s} {ar:9s} " + " ".join(f"{100 * np.mean(row['per_noise_snr'][n][s]):6.2f}" for s in snrs))
    print("\nper noise type × SNR (dB), shifted operating conditions:")
    for n in NOISES:
        for ar, row in table.items():
            print(f"{n:9s} {ar:9s} " + " ".join(f"{100 * np.mean(row['shifted_per_noise_snr'][n][s]):6.2f}" for s in snrs))
    if "drsn-cw" in table:
        cw = np.mean(table["drsn-cw"]["grid"])
        cws = np.mean(table["drsn-cw"]["shifted_grid"])
        for base, target in (("resnet", 3.0), ("convnet", 10.0)):
            if base in table:
                d = 100 * (cw - np.mean(table[base]["grid"]))
                ds = 100 * (cws - np.mean(table[base]["shifted_grid"]))
                print(f"DRSN-CW − {base}: {d:+.2f} pp in-domain grid, {ds:+.2f} pp shifted grid (target ≥ +{target:g} pp)")
    elapsed = time.time() - t0
    print(f"total wall time {elapsed / 60:.1f} min")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": vars(a), "table": table, "runs": [
        {k: r[k] for k in ("arch", "seed")} | {"train_wall_s": r["train"]["wall_s"], "best_val_acc": r["train"]["best_val_acc"]}
        for r in results], "wall_s": elapsed}, indent=1))
    _plot(table, snrs, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def _plot(table, snrs, path):
    from drsn_edge.deps import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    x = [float(s) for s in snrs]
    for ax, key, title in ((axes[0], "per_noise_snr", "held-out recordings"),
                           (axes[1], "shifted_per_noise_snr", "shifted operating conditions")):
        for ar, row in table.items():
            m = [100 * np.mean([np.mean(row[key][n][s]) for n in NOISES]) for s in snrs]
            ax.plot(x, m, marker="o", label=ar)
        ax.set_title(f"mean of 3 noise types, {title}")
        ax.set_xlabel("SNR (dB)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
