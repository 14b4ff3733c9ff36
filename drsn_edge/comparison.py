"""One comparison of a runtime's logits with the float reference, the same for every runtime:
accuracy against the labels, top-1 agreement, max abs diff, output SQNR, per class and per noise × SNR."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class Comparison:
    n: int
    reference_accuracy: float
    accuracy: float
    drop_pp: float
    agreement: float
    max_abs_diff: float
    sqnr_db: float
    grid_reference_accuracy: float | None = None
    grid_accuracy: float | None = None
    grid_drop_pp: float | None = None
    max_cell_drop_pp: float = 0.0
    per_class: dict = field(default_factory=dict)
    per_snr: dict = field(default_factory=dict)
    snr_curve: dict = field(default_factory=dict)
    bit_exact: float | None = None  # share of windows whose raw int8 outputs equal a reference runtime's

    def to_json(self) -> dict:
        return asdict(self)


def output_stats(ref: np.ndarray, got: np.ndarray) -> dict:
    """Max abs diff, top-1 agreement and SQNR (dB) of `got` against `ref` logits."""
    err = got.astype(np.float64) - ref.astype(np.float64)
    sig = float(np.mean(ref.astype(np.float64) ** 2)) if ref.size else 0.0
    noise = float(np.mean(err**2)) if err.size else 0.0
    return {
        "max_abs_diff": float(np.abs(err).max()) if err.size else 0.0,
        "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean()) if len(ref) else 1.0,
        "sqnr_db": float(10 * np.log10(sig / noise)) if noise > 0 else float("inf"),
        "n": int(len(ref)),
    }


def compare(ref_logits: np.ndarray, got_logits: np.ndarray, y: np.ndarray, noise: np.ndarray, snr_db: np.ndarray,
            class_names: list[str]) -> Comparison:
    from .evaluate import accuracy_report, drop_pp, grid_mean

    fp, qp = ref_logits.argmax(1), got_logits.argmax(1)
    f = accuracy_report(y, fp, class_names, noise, snr_db)
    q = accuracy_report(y, qp, class_names, noise, snr_db)
    stats = output_stats(ref_logits, got_logits)
    per_snr, worst = {}, 0.0
    for kind, cells in f["per_snr"].items():
        per_snr[kind] = {}
        for snr, fa in cells.items():
            qa = q["per_snr"][kind][snr]
            m = (noise == kind) if kind == "none" else (noise == kind) & (snr_db == float(snr))
            per_snr[kind][snr] = {"float": fa, "int8": qa, "drop_pp": drop_pp(y[m], fp[m], qp[m])}
            worst = max(worst, per_snr[kind][snr]["drop_pp"])
    # accuracy-vs-SNR averaged over noise types, the curve the drop targets are stated on
    snrs = sorted({s for k, c in per_snr.items() if k != "none" for s in c}, key=float)
    curve = {}
    for s in snrs:
        cells = [per_snr[k][s] for k in per_snr if k != "none" and s in per_snr[k]]
        fm, qm = float(np.mean([c["float"] for c in cells])), float(np.mean([c["int8"] for c in cells]))
        curve[s] = {"float": fm, "int8": qm, "drop_pp": 100 * (fm - qm)}
    fg, qg = grid_mean(f), grid_mean(q)
    return Comparison(
        n=f["n"], reference_accuracy=f["accuracy"], accuracy=q["accuracy"], drop_pp=drop_pp(y, fp, qp),
        agreement=stats["top1_agreement"], max_abs_diff=stats["max_abs_diff"], sqnr_db=stats["sqnr_db"],
        grid_reference_accuracy=fg, grid_accuracy=qg, grid_drop_pp=None if fg is None else 100 * (fg - qg),
        max_cell_drop_pp=worst,
        per_class={c: {"float": f["per_class"][c], "int8": q["per_class"][c]} for c in f["per_class"]},
        per_snr=per_snr, snr_curve=curve)
