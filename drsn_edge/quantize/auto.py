"""`--method auto`: calibrate with every method, measure each on validation windows per noise × SNR cell, keep
the one whose worst SNR level loses least. The method that wins on one dataset does not win on every one
(on real recordings min/max beat percentile at −4 dB), so the choice is made on the user's own windows."""

from __future__ import annotations

from typing import Callable

AUTO = "auto"
# the candidates of auto: every method but the 2 048-bin entropy calibration, which costs ~50× the others
# (163 s against 3-5 s for the shipped model on 2 cores) and clipped the impulsive tails on simulated and real
# recordings alike (worst of the four in benchmarks/quantize_methods.py and benchmarks/quantize_auto.py);
# it stays available as --method entropy
AUTO_METHODS = ("minmax", "percentile", "mse")


def worst_snr_drop_pp(rep: dict) -> float:
    """Largest float→int8 drop over the SNR levels of the accuracy-vs-SNR curve (each level: mean over the
    noise types) and the clean cell; 0 when nothing is lost."""
    drops = [c["drop_pp"] for c in (rep.get("snr_curve") or {}).values()]
    clean = (rep.get("per_snr") or {}).get("none", {}).get("clean")
    if clean is not None:
        drops.append(clean["drop_pp"])
    return max([0.0, *drops])


def row(method: str, rep: dict) -> dict:
    return {"method": method, "worst_snr_drop_pp": worst_snr_drop_pp(rep),
            "max_cell_drop_pp": float(rep["max_cell_drop_pp"]), "drop_pp": float(rep["accuracy_drop_pp"]),
            "int8_accuracy": float(rep["int8_accuracy"]), "float_accuracy": float(rep["float_accuracy"])}


def select(table: list[dict], order: tuple[str, ...]) -> dict:
    """The row with the smallest worst-SNR drop; ties: smallest worst noise × SNR cell, then overall drop,
    then the earlier method in `order`."""
    if not table:
        raise ValueError("no candidate methods")
    return min(table, key=lambda r: (round(r["worst_snr_drop_pp"], 9), round(r["max_cell_drop_pp"], 9),
                                     round(r["drop_pp"], 9), order.index(r["method"])))


def selection(chosen: str, table: list[dict], windows: str, n: int) -> dict:
    """The record of an auto choice that reports and sidecars keep: what was chosen, on which windows, from
    which table, by which rule."""
    return {"chosen": chosen, "windows": windows, "n": int(n), "table": table,
            "rule": "smallest worst SNR drop; ties: worst noise × SNR cell, overall drop"}


def choose(methods: tuple[str, ...], measure: Callable[[str], dict], step=None) -> tuple[str, list[dict]]:
    """Measure every method (`measure(method)` → a quantize report) and return (chosen method, table)."""
    table = []
    for i, m in enumerate(methods, start=1):
        if step:
            step(f"method auto: {m}", i, len(methods))
        table.append(row(m, measure(m)))
    best = select(table, methods)
    for r in table:
        r["chosen"] = r is best
    return best["method"], table
