"""Float vs INT8 accuracy: overall, per class, per noise type × SNR, agreement and output SQNR."""

from __future__ import annotations

import numpy as np

from ..evaluate import accuracy_report, drop_pp, grid_mean
from ..export import compare_outputs


def compare(float_logits: np.ndarray, int8_logits: np.ndarray, y: np.ndarray, noise: np.ndarray,
            snr_db: np.ndarray, class_names: list[str]) -> dict:
    fp, qp = float_logits.argmax(1), int8_logits.argmax(1)
    f = accuracy_report(y, fp, class_names, noise, snr_db)
    q = accuracy_report(y, qp, class_names, noise, snr_db)
    out_cmp = compare_outputs(float_logits, int8_logits)
    per_snr = {}
    worst = 0.0
    for kind, cells in f["per_snr"].items():
        per_snr[kind] = {}
        for snr, fa in cells.items():
            qa = q["per_snr"][kind][snr]
            m = (noise == kind) if kind == "none" else (noise == kind) & (snr_db == float(snr))
            per_snr[kind][snr] = {"float": fa, "int8": qa, "drop_pp": drop_pp(y[m], fp[m], qp[m])}
            worst = max(worst, per_snr[kind][snr]["drop_pp"])
    # accuracy-vs-SNR averaged over noise types, the curve the drop target is stated on
    snrs = sorted({s for k, c in per_snr.items() if k != "none" for s in c}, key=float)
    curve = {}
    for s in snrs:
        cells = [per_snr[k][s] for k in per_snr if k != "none" and s in per_snr[k]]
        curve[s] = {"float": float(np.mean([c["float"] for c in cells])),
                    "int8": float(np.mean([c["int8"] for c in cells]))}
        curve[s]["drop_pp"] = 100 * (curve[s]["float"] - curve[s]["int8"])
    fg, qg = grid_mean(f), grid_mean(q)
    return {
        "float_accuracy": f["accuracy"],
        "int8_accuracy": q["accuracy"],
        "accuracy_drop_pp": drop_pp(y, fp, qp),
        "grid_float_accuracy": fg,
        "grid_int8_accuracy": qg,
        "grid_drop_pp": None if fg is None else 100 * (fg - qg),
        "max_cell_drop_pp": worst,
        "agreement": out_cmp["top1_agreement"],
        "sqnr_db": out_cmp["sqnr_db"],
        "max_abs_diff": out_cmp["max_abs_diff"],
        "per_class": {c: {"float": f["per_class"][c], "int8": q["per_class"][c]} for c in f["per_class"]},
        "per_snr": per_snr,
        "snr_curve": curve,
        "n": f["n"],
    }
