#!/usr/bin/env python
"""The domain guard of the shipped model: what it flags and what it leaves alone.

--fit regenerates the shipped model's training data bit for bit (benchmarks/train_default.py: data synth
--windows-per-class 1000 --recordings-per-class 200 --seed 1), fits the guard on it (train split: class means
and covariance; val split swept clean + 3 noises × −5/0/5 dB: threshold) and rewrites the bundle with the same
tensors (checked by hash). Equivalent CLI:
  drsn-edge data synth -o train.npz --windows-per-class 1000 --recordings-per-class 200 --seed 1
  drsn-edge guard fit drsn_edge/pretrained/drsn-cw-default.drsn --data train.npz -o drsn_edge/pretrained/drsn-cw-default.drsn

Then prints, on fresh simulated recordings the model never saw (seed 100000, N windows/class):
  false flags on nominal held-out windows: clean, and each noise type at 0 dB and −5 dB (target ≤ 2 %)
  share flagged on --condition shifted recordings, pure noise (unit, at the healthy windows' level, and a
  disconnected sensor's), flat (constant), near-flat, clipped and 10x louder windows; the level check takes the
  raw windows' levels (guard.window_level) as the runners do
  and the same for max-softmax at a threshold giving the same false-flag rate on clean nominal windows.
With --artifacts, the same windows through the int8 artifacts' own guards (the QDQ ONNX's guard_score output, and
the .tflite's int8 tap outputs from TFLite Micro and from LiteRT, each scored with the guard adapted to that
interpreter's taps as its build does), with their flag agreement with the float guard. --taps head fits the head-only guard of before (for comparison).
  python benchmarks/domain_guard.py [--fit] [--taps head] [--model PATH] [--windows-per-class 50] [--artifacts]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NOISES = ("gaussian", "laplacian", "pink")


def fit_shipped(model: str, taps=None) -> dict:
    from drsn_edge.data.dataset import save_dataset
    from drsn_edge.data.simulator import synthesize
    from drsn_edge.guard import fit_bundle

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.npz"
        save_dataset(synthesize(windows_per_class=1000, recordings_per_class=200, seed=1), data)
        res = fit_bundle(model, data, model, taps=taps,
                         data_label="data synth --windows-per-class 1000 --recordings-per-class 200 --seed 1")
    return res


def inputs(meta: dict, wpc: int) -> dict:
    """Raw windows of each kind, keyed by name."""
    from drsn_edge.data.noise import add_noise
    from drsn_edge.evaluate import fresh_test_set

    rng = np.random.default_rng(3)
    nominal = fresh_test_set(meta, wpc, seed=100_000)
    shifted = fresh_test_set(meta, wpc, seed=100_001, condition="shifted")
    x = nominal.x
    healthy = float(np.std(x[nominal.y == 0])) if (nominal.y == 0).any() else 1.0  # class 0: normal
    peak = np.abs(x).max(axis=-1, keepdims=True)
    out = {"nominal clean": x}
    for snr in (0.0, -5.0):
        for k in NOISES:
            out[f"nominal {k} {snr:g} dB"] = add_noise(x, k, snr, rng)
    out.update({
        "shifted clean": shifted.x,
        "shifted gaussian 0 dB": add_noise(shifted.x, "gaussian", 0.0, rng),
        "pure gaussian noise (std 1)": rng.standard_normal(x.shape).astype(np.float32),
        "pure gaussian noise at the healthy level": (healthy * rng.standard_normal(x.shape)).astype(np.float32),
        "disconnected sensor (noise, std 1e-3)": (1e-3 * rng.standard_normal(x.shape)).astype(np.float32),
        "10x louder than the nominal windows": 10 * x,
        "pure pink noise": add_noise(np.zeros_like(x) + 1e-3 * rng.standard_normal(x.shape).astype(np.float32),
                                     "pink", -60.0, rng),
        "flat (constant, a dead sensor)": np.ones_like(x),
        "near-flat (1 + 1e-6 noise)": (1.0 + 1e-6 * rng.standard_normal(x.shape)).astype(np.float32),
        "clipped at 30 % of peak": np.clip(x, -0.3 * peak, 0.3 * peak),
        "clipped at 5 % of peak": np.clip(x, -0.05 * peak, 0.05 * peak),
    })
    return out


def artifact_guards(bundle) -> dict:
    """name → function(x, level) -> (score, in_domain) of each int8 artifact's own guard, built as `build` does
    (default calibration set; min/max calibration)."""
    from drsn_edge.backends.litert import LiteRTRunner
    from drsn_edge.backends.onnxrt import OrtRunner
    from drsn_edge.backends.tflite import check_integer_only, float_tflite, quantize_int8
    from drsn_edge.backends.tflm import TflmRunner
    from drsn_edge.calibration import default_calibration_path, load_calibration
    from drsn_edge.data.dataset import normalize
    from drsn_edge.export import bundle_onnx_bytes
    from drsn_edge.guard import from_meta
    from drsn_edge.guard_export import adapt_onnx, tflite_guard
    from drsn_edge.quantize.ptq import quantize_onnx

    cx = normalize(load_calibration(default_calibration_path()).x, bundle.normalization)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.int8.onnx"
        path.write_bytes(adapt_onnx(quantize_onnx(bundle_onnx_bytes(bundle, 1), cx, 1, "minmax"), bundle, cx, 1))
        ort = OrtRunner(path)
    q = quantize_int8(float_tflite(bundle.model, bundle.window, taps=from_meta(bundle.meta).taps), cx)
    graph = check_integer_only(q)
    tflm = TflmRunner(q, guard=tflite_guard(bundle, q, graph, cx))
    litert = LiteRTRunner(q, guard=tflite_guard(bundle, q, graph, cx, source="litert"))

    def run(r):
        def fn(x, level):
            r.infer(x)
            return r.guard_result(x, level)
        return fn

    return {"onnx int8": run(ort), "tflm int8": run(tflm), "litert int8": run(litert)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="drsn_edge/pretrained/drsn-cw-default.drsn")
    ap.add_argument("--fit", action="store_true", help="Fit the guard on the regenerated training data first.")
    ap.add_argument("--windows-per-class", type=int, default=50)
    ap.add_argument("--taps", default=None, help="Comma-separated taps for --fit (default: all the model offers).")
    ap.add_argument("--artifacts", action="store_true", help="Also measure the int8 ONNX, TFLite Micro and LiteRT guards.")
    ap.add_argument("--out", default="benchmarks/results/domain_guard")
    a = ap.parse_args(argv)

    import torch

    from drsn_edge.bundle import load_bundle
    from drsn_edge.data.dataset import normalize
    from drsn_edge.evaluate import predict_logits
    from drsn_edge.guard import guard_scores, window_level

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    fitted = fit_shipped(a.model, a.taps.split(",") if a.taps else None) if a.fit else None
    if fitted:
        print(f"fitted the guard in {time.perf_counter() - t0:.0f} s: threshold {fitted['threshold']:.2f} "
              f"(quantile {fitted['quantile']}, {fitted['dim']} values from {len(fitted['taps'])} taps), "
              f"tensors sha256 {fitted['tensors_sha256']} (unchanged)")
    b = load_bundle(a.model)
    arts = artifact_guards(b) if a.artifacts else {}
    rows = {}
    for name, raw in inputs(b.meta, a.windows_per_class).items():
        x, level = normalize(raw, "zscore"), window_level(raw)
        score, ok = guard_scores(b, x, level)
        logits = predict_logits(b.model, x).astype(np.float64)
        p = np.exp(logits - logits.max(1, keepdims=True))
        rows[name] = {"guard_flagged": float((~ok).mean()), "max_softmax": (p.max(1) / p.sum(1)).tolist(), "n": len(x)}
        for art, fn in arts.items():
            a_score, a_ok = fn(x, level)
            rows[name][f"{art}_flagged"] = float((~a_ok).mean())
            rows[name][f"{art}_flag_agreement"] = float((a_ok == ok).mean())
    ref = np.asarray(rows["nominal clean"]["max_softmax"])
    target_ff = max(rows["nominal clean"]["guard_flagged"], 0.01)
    thr = float(np.quantile(ref, target_ff))
    head = "".join(f" {art + ' (agree)':>22s}" for art in arts)
    print(f"\n{'input':34s} {'windows':>7s} {'guard flags':>12s} {'max-softmax flags':>18s}{head}")
    for name, r in rows.items():
        ms = np.asarray(r.pop("max_softmax"))
        r["max_softmax_flagged"] = float((ms < thr).mean())
        cols = "".join(f" {100 * r[f'{art}_flagged']:9.1f} % ({100 * r[f'{art}_flag_agreement']:5.1f} %)" for art in arts)
        print(f"{name:34s} {r['n']:7d} {100 * r['guard_flagged']:11.1f} % {100 * r['max_softmax_flagged']:17.1f} %{cols}")
    print(f"\nmax-softmax threshold {thr:.4f}: the {100 * target_ff:.1f} % quantile of clean nominal windows "
          f"(the same false-flag rate as the guard there, at least 1 %)")
    worst_ff = max(r["guard_flagged"] for k, r in rows.items() if k.startswith("nominal"))
    print(f"worst false-flag rate on nominal held-out windows (clean, 0 dB, -5 dB): {100 * worst_ff:.1f} % (target ≤ 2 %)")
    out = {"model": a.model, "windows_per_class": a.windows_per_class, "fit": fitted, "rows": rows,
           "max_softmax_threshold": thr, "worst_nominal_false_flag": worst_ff, "wall_s": time.perf_counter() - t0}
    Path(a.out + ".json").write_text(json.dumps(out, indent=1))
    print(f"wrote {a.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
