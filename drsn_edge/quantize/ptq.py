"""Post-training INT8 quantization to explicit QDQ ONNX with ONNX Runtime's quantizer, configured for
TensorRT's rules: symmetric int8 activations (zero point 0), symmetric per-channel int8 weights on the
output-channel axis, no quantized bias, opset ≥ 13.

Calibration methods: minmax and percentile (99.999 %) go through quantize_static; entropy runs ONNX
Runtime's entropy calibrator with 2048 histogram bins (quantize_static would use 128 bins, which for
these activations reproduces the min/max result) and hands its ranges over as overrides; mse picks, per
tensor, the symmetric range that minimizes the int8 quantization MSE over ONNX Runtime's collected
activation histograms and hands it to the quantizer as a range override.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError

METHODS = ("minmax", "percentile", "entropy", "mse")
# Q/DQ placement follows TensorRT's explicit-quantization guidance: int8 inputs for the weighted layers
# (Conv, Gemm) and for the residual Add (so convolution + residual fuse in int8). TensorRT runs the
# remaining element-wise ops of the threshold branch (Max, Neg, ReduceMean, Sigmoid, Mul, Sub, Relu) in
# FP16 or fuses them. Quantizing every op as well was measured on the shipped model: it doubled the worst
# per-SNR drop (benchmarks/quantize_methods.py). The microcontroller path quantizes everything instead.
OP_TYPES = ["Conv", "Gemm", "Add"]
ALL_OP_TYPES = ["Conv", "Gemm", "Relu", "Add", "Sub", "Mul", "Max", "Neg", "ReduceMean", "Sigmoid",
                "AveragePool", "Concat", "Flatten"]


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantizer prints to stdout and warns through the root logger; keep both out of
    our output (stdout may carry exactly one JSON object)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


class _Reader:
    """ONNX Runtime CalibrationDataReader over normalized windows, in batches of the model's batch size."""

    def __init__(self, x: np.ndarray, batch: int, input_name: str):
        self.chunks = []
        for i in range(0, len(x) - batch + 1, batch):
            self.chunks.append({input_name: x[i : i + batch].astype(np.float32)})
        self.i = 0

    def get_next(self):
        if self.i >= len(self.chunks):
            return None
        self.i += 1
        return self.chunks[self.i - 1]

    def rewind(self):
        self.i = 0


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.MinMax, "mse": CalibrationMethod.MinMax}[method]  # ranges come as overrides


def _histograms(model_path: Path, x: np.ndarray, batch: int, input_name: str, op_types, bins: int = 2048) -> dict:
    """Activation histograms of |x| per tensor, collected by ONNX Runtime's histogram calibrator."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory() as tmp, _quiet():
        cal = create_calibrator(str(model_path), op_types, augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                calibrate_method=CalibrationMethod.Percentile,
                                extra_options={"symmetric": True, "num_bins": bins, "percentile": 100.0})
        cal.collect_data(_Reader(x, batch, input_name))
        return dict(cal.collector.histogram_dict)


def entropy_ranges(model_path: Path, x: np.ndarray, batch: int, input_name: str, op_types, bins: int = 2048,
                   quantized_bins: int = 128) -> dict:
    """ONNX Runtime's KL-divergence (entropy) calibration with a real histogram resolution."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory() as tmp, _quiet():
        cal = create_calibrator(str(model_path), op_types, augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                calibrate_method=CalibrationMethod.Entropy,
                                extra_options={"symmetric": True, "num_bins": bins, "num_quantized_bins": quantized_bins})
        cal.collect_data(_Reader(x, batch, input_name))
        data = cal.compute_data()
        return {name: float(max(abs(float(np.asarray(td.range_value[0]).item())), abs(float(np.asarray(td.range_value[1]).item()))))
                for name, td in data.data.items()}


def mse_ranges(hists: dict, candidates: int = 128) -> dict:
    """Per tensor, the clipping threshold T minimizing E[(x − q(x))²] for symmetric int8 with scale T/127."""
    out = {}
    for name, h in hists.items():
        hist, edges = np.asarray(h[0], dtype=np.float64), np.asarray(h[1], dtype=np.float64)
        centers = 0.5 * (edges[:-1] + edges[1:])
        amax = float(np.abs(edges).max())
        if hist.sum() == 0 or amax == 0:
            continue
        best_t, best_e = amax, np.inf
        for t in np.linspace(amax / candidates, amax, candidates):
            s = t / 127.0
            q = np.clip(np.round(centers / s), -127, 127) * s
            e = float(np.sum(hist * (centers - q) ** 2))
            if e < best_e:
                best_t, best_e = t, e
        out[name] = best_t
    return out


DEFAULT_METHOD = "percentile"  # measured best on the shipped model (benchmarks/quantize_methods.py)


def quantize_onnx(float_bytes: bytes, calib_x: np.ndarray, batch: int, method: str = DEFAULT_METHOD,
                  nodes_to_exclude: list[str] | None = None, percentile: float = 99.999) -> bytes:
    """Float ONNX (deploy form) → INT8 QDQ ONNX bytes."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise InputError(f"unknown calibration method '{method}'; choose one of {', '.join(METHODS)}")
    if len(calib_x) < batch:
        raise InputError(f"calibration set has {len(calib_x)} windows, fewer than one batch of {batch}")
    model = onnx.load_from_string(float_bytes)
    input_name = model.graph.input[0].name
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
             "CalibTensorRangeSymmetric": True, "CalibMovingAverage": False,
             "QDQOpTypePerChannelSupportToAxis": {"Gemm": 0}}
    if method == "percentile":
        extra.update({"CalibPercentile": percentile, "CalibNumBins": 2048})
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(float_bytes)
        if method in ("mse", "entropy"):
            if method == "mse":
                ranges = mse_ranges(_histograms(src, calib_x, batch, input_name, OP_TYPES))
            else:
                ranges = entropy_ranges(src, calib_x, batch, input_name, OP_TYPES)
            ranges = {k: t for k, t in ranges.items() if t > 0}
            extra["TensorQuantOverrides"] = {k: [{"rmin": np.float32(-t), "rmax": np.float32(t)}]
                                             for k, t in ranges.items()}
        with _quiet():
            quantize_static(str(src), str(dst), _Reader(calib_x, batch, input_name), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=OP_TYPES, per_channel=True, reduce_range=False,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=nodes_to_exclude or [], calibrate_method=_ort_method(method),
                            extra_options=extra)
        return dst.read_bytes()
