"""Calibration of the int8 .tflite (the LiteRT, TFLite Micro and C-engine builds): global min/max, a
percentile of the per-window extremes, or `auto` — each candidate quantized with the same calibration windows
(in the converter's child process, backends/tflite.py), run in LiteRT on validation windows (never the test windows the build reports on), and the one whose worst SNR
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


def candidates(ctx) -> dict:
    """The calibrations to quantize with: the options' method, or every candidate of auto (name → the
    percentile handed to quantize_int8, None for global min/max)."""
    method = getattr(ctx.options, "method", "minmax")
    names = AUTO_CANDIDATES if method == AUTO else (method,)
    return {m: TFLITE_METHODS[m] for m in names}


def choose(ctx, made: dict) -> tuple[bytes, str, dict | None]:
    """(int8 .tflite with names, the method kept, the auto selection table or None) from the quantized
    candidates `made` (method → bytes)."""
    if len(made) == 1:
        (method, q), = made.items()
        return q, method, None
    return _auto(ctx, made)


def _auto(ctx, made: dict) -> tuple[bytes, str, dict]:
    from ..evaluate import predict_logits
    from ..quantize.auto import choose as choose_method
    from ..quantize.auto import selection
    from ..quantize.report import compare
    from .tflite import litert_run

    sel = ctx.spec.windows(ctx.bundle.meta, split="val")
    reference = predict_logits(ctx.bundle.model, sel.x)

    def measure(m: str) -> dict:
        logits = litert_run(made[m], sel.x)  # output 0: the logits (guard taps, if any, come after)
        return compare(reference, logits, sel.y, sel.noise, sel.snr_db, ctx.bundle.class_names)

    chosen, table = choose_method(tuple(made), measure, lambda info, i, n: ctx.progress(info))
    return made[chosen], chosen, selection(chosen, table, sel.description, len(sel.y))
