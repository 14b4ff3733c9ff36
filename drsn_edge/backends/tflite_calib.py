"""Calibration of the int8 .tflite (the LiteRT, TFLite Micro and C-engine builds): global min/max, a
percentile of the per-window extremes, or `auto` — each candidate quantized with the same calibration windows,
run in LiteRT on validation windows (never the test windows the build reports on), and the one whose worst SNR
level loses least kept (the rule of `quantize --method auto`, drsn_edge/quantize/auto.py)."""

from __future__ import annotations

from ..errors import InputError
from ..quantize.auto import AUTO

# method -> percentile of the per-window extremes handed to the calibrator (None: global min/max)
TFLITE_METHODS = {"minmax": None, "percentile": 99.0}
DESCRIPTIONS = {"minmax": "global min/max", "percentile": "99th percentile of the per-window min/max"}
AUTO_CANDIDATES = tuple(TFLITE_METHODS)


def check_method(method: str, target_name: str) -> None:
    if method != AUTO and method not in TFLITE_METHODS:
        raise InputError(f"--method {method} is not a .tflite calibration; {target_name} takes "
                         f"{', '.join((AUTO, *TFLITE_METHODS))}")


def describe(method: str) -> str:
    return f"{method}: {DESCRIPTIONS[method]} (ai-edge-quantizer static_wi8_ai8)"


def calibrate(ctx, float_bytes: bytes) -> tuple[bytes, str, dict | None]:
    """(int8 .tflite with names, the method used, the auto selection table or None)."""
    from .tflite import quantize_int8

    method = getattr(ctx.options, "method", "minmax")
    if method != AUTO:
        return quantize_int8(float_bytes, ctx.calib_x, TFLITE_METHODS[method]), method, None
    return _auto(ctx, float_bytes)


def _auto(ctx, float_bytes: bytes) -> tuple[bytes, str, dict]:
    from ..evaluate import predict_logits
    from ..quantize.auto import choose
    from ..quantize.report import compare
    from .tflite import litert_run, quantize_int8

    sel = ctx.spec.windows(ctx.bundle.meta, split="val")
    reference = predict_logits(ctx.bundle.model, sel.x)
    made: dict[str, bytes] = {}

    def measure(m: str) -> dict:
        made[m] = quantize_int8(float_bytes, ctx.calib_x, TFLITE_METHODS[m])
        return compare(reference, litert_run(made[m], sel.x), sel.y, sel.noise, sel.snr_db, ctx.bundle.class_names)

    chosen, table = choose(AUTO_CANDIDATES, measure, lambda info, i, n: ctx.progress(info))
    return made[chosen], chosen, {"chosen": chosen, "windows": sel.description, "n": int(len(sel.y)), "table": table,
                                  "rule": "smallest worst SNR drop; ties: worst noise × SNR cell, overall drop"}
