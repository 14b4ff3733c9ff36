"""Float vs INT8 accuracy in the quantize report's own key names (float_/int8_), computed by the one
comparison every runtime uses (drsn_edge.comparison)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


def compare(float_logits: np.ndarray, int8_logits: np.ndarray, y: np.ndarray, noise: np.ndarray,
            snr_db: np.ndarray, class_names: list[str]) -> dict:
    from ..comparison import compare as compare_runtime

    return as_report(compare_runtime(float_logits, int8_logits, y, noise, snr_db, class_names))


def as_report(c) -> dict:
    """A Comparison in the quantize report's key names, with the Comparison itself under '_comparison'."""
    return {
        "_comparison": c,
        "float_accuracy": c.reference_accuracy,
        "int8_accuracy": c.accuracy,
        "accuracy_drop_pp": c.drop_pp,
        "grid_float_accuracy": c.grid_reference_accuracy,
        "grid_int8_accuracy": c.grid_accuracy,
        "grid_drop_pp": c.grid_drop_pp,
        "max_cell_drop_pp": c.max_cell_drop_pp,
        "agreement": c.agreement,
        "sqnr_db": c.sqnr_db,
        "max_abs_diff": c.max_abs_diff,
        "per_class": c.per_class,
        "per_snr": c.per_snr,
        "snr_curve": c.snr_curve,
        "n": c.n,
    }


@dataclass
class QuantizeResult:
    """What `quantize` did: the gates' verdict, the artifact it wrote (None when a gate failed), how the
    calibration method was chosen, and float vs INT8 on the evaluation spec (`comparison`)."""

    passed: bool
    error: str | None
    artifact: str | None
    sidecar: str | None
    model: str
    calibration: str
    calibration_windows: int
    evaluation: str
    eval_spec: dict
    comparison: object  # drsn_edge.comparison.Comparison
    max_drop_pp: float
    max_cell_drop_pp_limit: float
    worst_snr_drop_pp: float
    method: str
    method_requested: str
    method_selection: dict | None
    qat: dict | None
    float_groups: list
    sensitivity: list | None
    mixed: dict | None
    warnings: list
    quantize_s: float
    wall_s: float

    def to_json(self) -> dict:
        """Every field, the comparison in the report's float_/int8_ key names at the top level."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "comparison"}
        rep = as_report(self.comparison)
        rep.pop("_comparison")
        return {**d, **rep}
