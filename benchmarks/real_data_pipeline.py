#!/usr/bin/env python
"""A folder of the user's recordings through import → train → quantize → build → check, with the CLI only.

  python benchmarks/real_data_pipeline.py FOLDER --labels MAP.json [--fs 12000] [--work DIR] [--init MODEL.drsn]
  python benchmarks/real_data_pipeline.py --make-demo DIR [--seconds 20] [--condition shifted]

--make-demo writes one simulated recording per class as the files a user has (.mat CWRU-style, .csv with a
header, .wav float32) plus a label map naming the classes the user's way (healthy / inner-race / outer-race,
not the simulator's names), then runs the pipeline on them. Every step is one `drsn-edge` command (printed);
the data is split by time (one recording per class); the evaluation windows of quantize, build and check are
the test split recorded in the trained bundle. Prints the figures of every step and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

DEMO_CLASSES = {"healthy": "normal", "inner-race": "IR014", "outer-race": "OR021"}
FS = 12000


def make_demo(folder: Path, seconds: float, condition: str, seed: int = 0) -> Path:
    """One recording per class, each in a different file format, and the label map."""
    import numpy as np
    from scipy.io import savemat, wavfile

    from drsn_edge.data.simulator import long_recording

    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for i, (name, sim) in enumerate(DEMO_CLASSES.items()):
        sig = long_recording(sim, seconds, seed=seed, condition=condition, fs=FS)
        kind = ("mat", "csv", "wav")[i % 3]
        path = folder / f"run{i + 1:02d}_{name}.{kind}"
        if kind == "mat":
            savemat(str(path), {f"X{100 + i}_DE_time": sig[:, None], f"X{100 + i}RPM": np.array([[1797.0]])})
        elif kind == "csv":
            path.write_text("accel_g\n" + "\n".join(f"{v:.6f}" for v in sig) + "\n")
        else:
            wavfile.write(str(path), FS, sig.astype(np.float32))
        labels[path.name] = name
    (folder / "labels.json").write_text(json.dumps(labels, indent=1))
    return folder / "labels.json"


def cli(*args, allow_fail: bool = False) -> tuple[dict, float]:
    """Run one drsn-edge command with --json; returns (its JSON object, seconds)."""
    cmd = [sys.executable, "-m", "drsn_edge", *map(str, args), "--json"]
    print("$ drsn-edge " + " ".join(shlex.quote(str(a)) for a in args), flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, DRSN_EDGE_NO_PROGRESS="1"))
    dt = time.perf_counter() - t0
    if r.returncode != 0 and not (allow_fail and r.returncode == 1 and r.stdout.strip()):
        sys.exit(f"step failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
    for line in r.stderr.splitlines():
        if "warning" in line:
            print("  " + line)
    return json.loads(r.stdout), dt


def run(folder: Path, labels: Path, work: Path, a) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    data, calib, model = work / "data.npz", work / "calib.npz", work / "model.drsn"
    out: dict = {"folder": str(folder)}
    res, dt = cli("data", "import", folder, "--labels", labels, "--fs", a.fs, "--split-by", "time", "-o", data)
    out["import"] = {"classes": res["class_names"], "counts": res["counts"], "s": dt}
    print(f"  {len(res['class_names'])} classes, windows per split: "
          + ", ".join(f"{k} {v['windows']}" for k, v in res["counts"].items()))
    res, dt = cli("calibration", "make", "--data", data, "-o", calib, "--n", a.calib_n)
    out["calibration"] = {"windows": res["n"], "s": dt}
    train = ["train", "--data", data, "-o", model, "--depth", a.depth, "--batch", a.batch, "--threads", a.threads]
    train += ["--epochs", a.epochs] if a.epochs else []
    train += ["--init", a.init] if a.init else []
    res, dt = cli(*train)
    out["train"] = {k: res[k] for k in ("best_val_acc", "best_epoch", "selection", "train_windows")} | {"s": dt}
    print(f"  best val accuracy {100 * res['best_val_acc']:.1f} % at epoch {res['best_epoch']} ({res['selection']})")
    gates = ["--max-drop", a.max_drop, "--max-cell-drop", a.max_cell_drop]
    res, dt = cli("evaluate", model, "--noise", "all", "--snr", "-5,0,5")
    out["evaluate"] = {"data": res["data"], "accuracy": res["accuracy"], "per_snr": res["per_snr"],
                       "out_of_domain": (res.get("domain") or {}).get("out_of_domain_share"), "s": dt}
    print(f"  float accuracy {100 * res['accuracy']:.1f} % on {res['data']}; "
          f"out of domain {100 * (out['evaluate']['out_of_domain'] or 0):.1f} %")
    res, dt = cli("quantize", model, "--calib", calib, "-o", work / "model.int8.onnx", *gates, allow_fail=True)
    out["quantize"] = {k: res.get(k) for k in ("method", "evaluation", "float_accuracy", "int8_accuracy",
                                                "accuracy_drop_pp", "worst_snr_drop_pp", "passed")}
    out["quantize"]["table"] = (res.get("method_selection") or {}).get("table")
    print(f"  INT8 ({res['method']}, chosen by --method auto) drop {res['accuracy_drop_pp']:.2f} pp, worst SNR "
          f"{res['worst_snr_drop_pp']:.2f} pp on {res['evaluation']}")
    for target in a.targets.split(","):
        bdir = work / "build" / target
        res, dt = cli("build", model, "--target", target, "--calib", calib, "-o", bdir, *gates)
        acc = res.get("accuracy") or {}
        out[f"build {target}"] = {"measured_on": res["evaluation"]["description"], "drop_pp": acc.get("drop_pp"),
                                  "s": dt}
        print(f"  build {target}: drop {acc.get('drop_pp', float('nan')):.2f} pp, measured on "
              f"{res['evaluation']['description']}")
        res, dt = cli("check", bdir, "--target", target, allow_fail=True)
        out[f"check {target}"] = {"accuracy": res["accuracy"], "drop_pp": res["accuracy_drop_pp"],
                                  "passed": res["passed"], "failures": res["failures"], "data": res["data"],
                                  "out_of_domain": (res.get("domain") or {}).get("out_of_domain_share"), "s": dt}
        print(f"  check {target} ({res['runtime']}): accuracy {100 * res['accuracy']:.1f} %, drop "
              f"{res['accuracy_drop_pp']:.2f} pp, {'PASSED' if res['passed'] else 'FAILED: ' + '; '.join(res['failures'])}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", help="Folder of recordings (with --labels).")
    ap.add_argument("--labels", help="Label map (JSON/CSV: file pattern → class).")
    ap.add_argument("--make-demo", metavar="DIR", help="Write simulated recordings + label map to DIR and use them.")
    ap.add_argument("--seconds", type=float, default=20.0, help="Length of each demo recording.")
    ap.add_argument("--condition", default="nominal", choices=["nominal", "shifted"])
    ap.add_argument("--fs", type=float, default=FS)
    ap.add_argument("--work", default=None, help="Folder for the dataset, model and builds (default: <folder>/work).")
    ap.add_argument("--epochs", type=int, default=None, help="Default: the train command's (15 with --init).")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--init", default=None, help="Fine-tune from this bundle instead of training from scratch.")
    ap.add_argument("--calib-n", type=int, default=256)
    ap.add_argument("--targets", default="jetson-orin-nano,host", help="Comma-separated build/check targets.")
    ap.add_argument("--max-drop", type=float, default=1.0)
    ap.add_argument("--max-cell-drop", type=float, default=0.5)
    ap.add_argument("--out", default=None, help="Write the figures as JSON here.")
    a = ap.parse_args(argv)
    if a.make_demo:
        folder = Path(a.make_demo)
        labels = make_demo(folder, a.seconds, a.condition)
    elif a.folder and a.labels:
        folder, labels = Path(a.folder), Path(a.labels)
    else:
        ap.error("give FOLDER --labels MAP, or --make-demo DIR")
    t0 = time.perf_counter()
    out = run(folder, labels, Path(a.work) if a.work else folder / "work", a)
    out["wall_s"] = time.perf_counter() - t0
    print(f"whole pipeline {out['wall_s']:.0f} s")
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
