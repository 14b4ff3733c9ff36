"""Float vs INT8 accuracy in the quantize report's own key names (float_/int8_), computed by the one
comparison every runtime uses (drsn_edge.comparison)."""

from __future__ import annotations

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
