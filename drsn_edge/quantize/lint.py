"""Static lint of an (INT8 QDQ) ONNX model against TensorRT's explicit-quantization rules.

TensorRT 10/11 builds INT8 networks from the Q/DQ nodes of the ONNX graph (explicit quantization). Its
ONNX parser rejects, or silently mis-handles, graphs that ONNX Runtime runs happily: a nonzero or uint8
zero point, a quantized (int32) bias, per-channel scales on the wrong axis, ops outside its support list.
This module finds those problems before a model is shipped to a Jetson, without TensorRT installed.

Rules (each violation names the node, tensor or initializer it concerns):

    opset           the default-domain opset is at least 13 (per-axis Q/DQ needs it)
    unsupported-op  every op is a default-domain op that TensorRT's ONNX parser supports
    zero-point      Q/DQ zero points are constant and all zero (absent means 0)
    scale           Q/DQ scales are constant, finite and > 0
    dtype           zero points are int8 (not uint8); DequantizeLinear inputs are int8 (no int32 bias)
    axis            a per-axis Q/DQ quantizes the output-channel axis of the Conv/Gemm weight it feeds,
                    with one scale per channel
    weight-range    int8 weights use -127..127 only (-128 is outside TensorRT's symmetric weight range)
    dynamic-shape   every graph input and output has fully static dims
    not-quantized   the graph holds at least one QuantizeLinear -> DequantizeLinear pair (require_qdq)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

MIN_OPSET = 13
DEFAULT_DOMAINS = ("", "ai.onnx")

# ONNX op types TensorRT's ONNX parser imports: the rows marked "Y" in the operator support matrix of
# onnx/onnx-tensorrt, docs/operators.md, revision for TensorRT 10.15 ("TensorRT 10.15 supports operators in
# the inclusive range of opset 9 to opset 24"). Ops marked "N" there (e.g. QLinearConv, QLinearMatMul,
# ConvInteger, MatMulInteger, DynamicQuantizeLinear, DFT, Unique, the Sequence*/Optional*/String* ops) are
# absent on purpose. Per-op restrictions in that table (e.g. "AveragePool: 2D or 3D pooling only") are not
# checked here. Older TensorRT releases support fewer ops (several of these were added in 8.5..10.x).
TENSORRT_SUPPORTED_OPS = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "Attention",
    "AveragePool", "BatchNormalization", "BlackmanWindow", "Cast", "CastLike", "Ceil", "Celu", "Clip",
    "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DeformConv",
    "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand",
    "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm",
    "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample",
    "GroupNormalization", "GRU", "HammingWindow", "HannWindow", "HardSigmoid", "HardSwish", "Hardmax",
    "Identity", "If", "ImageScaler", "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization",
    "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LRN", "LSTM", "LpNormalization",
    "LpPool", "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul",
    "Neg", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow",
    "PRelu", "QuantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
    "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
    "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize",
    "ReverseSequence", "RMSNormalization", "RNN", "RoiAlign", "RotaryEmbedding", "Round", "STFT",
    "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid",
    "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split",
    "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "TensorScatter", "ThresholdedRelu", "Tile", "TopK",
    "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
})

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# ops a quantized weight may pass through unchanged on its way to the layer that uses it
_PASS_THROUGH = ("Identity", "QuantizeLinear", "DequantizeLinear")

_INT8, _UINT8 = 3, 2  # onnx.TensorProto.INT8 / UINT8


class LintError(InputError):
    """The model breaks TensorRT's rules for explicitly quantized ONNX (exit 2)."""

    def __init__(self, message: str, violations: list | None = None):
        super().__init__(message)
        self.violations = list(violations or [])


@dataclass
class Violation:
    rule: str
    node: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.node}: {self.message}"


def _load(model):
    from ..deps import onnx

    o = onnx()
    if isinstance(model, o.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        try:
            return o.load_from_string(bytes(model))
        except Exception as exc:
            raise InputError(f"cannot parse the ONNX model bytes: {exc}") from None
    if isinstance(model, (str, os.PathLike)):
        from ..limits import regular_file

        path = regular_file(model, "ONNX model")
        if path.stat().st_size == 0:
            raise InputError(f"'{path}' is empty, not an ONNX model")
        try:
            m = o.load(str(path))
        except Exception as exc:
            raise InputError(f"'{path}' is not an ONNX model: {exc}") from None
        _valid(m, str(path))
        return m
    raise InputError(f"expected an ONNX ModelProto, bytes or a path, got {type(model).__name__}")


def _valid(m, where: str) -> None:
    """An ONNX model the checker accepts (every initializer present, types consistent), of sane sizes."""
    from ..deps import onnx
    from ..limits import check_onnx_dims

    if not m.graph.node:
        raise InputError(f"'{where}' is not an ONNX model: it has no graph nodes")
    check_onnx_dims(m, where)
    try:
        onnx().checker.check_model(m, full_check=True)
    except Exception as exc:
        raise InputError(f"'{where}' is not a valid ONNX model (the ONNX checker rejects it: "
                         f"{' '.join(str(exc).split())[:300]})") from None


def _dtype_name(elem_type: int) -> str:
    from ..deps import onnx

    try:
        return onnx().TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type {elem_type}"


def _constants(graph) -> tuple[dict, dict]:
    """name -> numpy value and name -> ONNX elem type of every initializer and Constant output."""
    from ..deps import onnx

    nh = onnx().numpy_helper
    values, types = {}, {}
    for init in graph.initializer:
        values[init.name] = nh.to_array(init)
        types[init.name] = init.data_type
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in DEFAULT_DOMAINS or not node.output:
            continue
        for a in node.attribute:
            if a.name == "value":
                values[node.output[0]] = nh.to_array(a.t)
                types[node.output[0]] = a.t.data_type
            elif a.name in ("value_float", "value_floats"):
                values[node.output[0]] = np.asarray(a.f if a.name == "value_float" else list(a.floats), np.float32)
                types[node.output[0]] = 1
            elif a.name in ("value_int", "value_ints"):
                values[node.output[0]] = np.asarray(a.i if a.name == "value_int" else list(a.ints), np.int64)
                types[node.output[0]] = 7
    return values, types


def _tensor_types(model, const_types: dict) -> tuple[dict, dict]:
    """name -> elem type and name -> shape (tuple, None for unknown dims) where known, using ONNX shape
    inference when it succeeds."""
    from ..deps import onnx

    o = onnx()
    try:
        inferred = o.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        inferred = model
    types, shapes = {}, {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None:
            continue
        if tt.elem_type:
            types[vi.name] = tt.elem_type
        if tt.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    types.update(const_types)
    return types, shapes


def _attr(node, name, default=None):
    from ..deps import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx().helper.get_attribute_value(a)
    return default


def _node_name(node, index: int) -> str:
    if node.name:
        return node.name
    if node.output and node.output[0]:
        return node.output[0]
    return f"{node.op_type}#{index}"


def _opset_violations(model) -> list[Violation]:
    versions = [op.version for op in model.opset_import if op.domain in DEFAULT_DOMAINS]
    if not versions:
        return [Violation("opset", "ai.onnx", f"the model imports no default-domain opset; export with opset "
                                              f">= {MIN_OPSET} (17 recommended)")]
    v = max(versions)
    if v < MIN_OPSET:
        return [Violation("opset", "ai.onnx", f"default-domain opset {v} < {MIN_OPSET}: per-axis Q/DQ needs "
                                              f"opset {MIN_OPSET}+; re-export with opset 17")]
    return []


def _all_nodes(graph):
    """Nodes of the graph and of every subgraph (If/Loop/Scan bodies), depth first."""
    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.HasField("g"):
                yield from _all_nodes(a.g)
            for sub in a.graphs:
                yield from _all_nodes(sub)


def _op_violations(graph) -> list[Violation]:
    out = []
    for i, node in enumerate(_all_nodes(graph)):
        name = _node_name(node, i)
        if node.domain not in DEFAULT_DOMAINS:
            out.append(Violation("unsupported-op", name, f"op '{node.domain}::{node.op_type}' is outside the "
                                 "ONNX default domain; TensorRT's ONNX parser has no importer for it (it needs a "
                                 "TensorRT plugin)"))
        elif node.op_type not in TENSORRT_SUPPORTED_OPS:
            out.append(Violation("unsupported-op", name, f"op '{node.op_type}' is not supported by TensorRT's "
                                 "ONNX parser"))
    return out


def _weight_axis(graph, start: str, consumers: dict) -> tuple[set, list]:
    """Follow `start` through pass-through ops to the layers that use it. Returns the set of expected
    output-channel axes and a list of descriptions of uses that are not a Conv/Gemm weight."""
    expected, other, seen, todo = set(), [], set(), [start]
    outputs = {o.name for o in graph.output}
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in outputs:
            other.append("graph output")
        for node, idx in consumers.get(t, ()):
            if node.op_type in _PASS_THROUGH and node.domain in DEFAULT_DOMAINS and idx == 0:
                todo.extend(o for o in node.output if o)
            elif node.op_type == "Conv" and node.domain in DEFAULT_DOMAINS and idx == 1:
                expected.add(0)
            elif node.op_type == "Gemm" and node.domain in DEFAULT_DOMAINS and idx == 1:
                expected.add(0 if _attr(node, "transB", 0) else 1)
            else:
                other.append(f"{node.op_type} '{node.name or node.output[0]}' input {idx}")
    return expected, other


def _scale_violations(name: str, s: str, scale) -> list[Violation]:
    """scale: constant, finite, > 0"""
    if scale is None:
        return [Violation("scale", name, f"scale '{s}' is not a constant initializer; TensorRT needs build-time scales")]
    if scale.size == 0 or not np.issubdtype(scale.dtype, np.floating):
        return [Violation("scale", name, f"scale '{s}' must be a non-empty float tensor, got "
                          f"{scale.dtype} of shape {list(scale.shape)}")]
    sf = scale.astype(np.float64).ravel()
    bad = ~np.isfinite(sf) | (sf <= 0)
    if not bad.any():
        return []
    k = int(np.argmax(bad))
    what = f"element {k} is {sf[k]!r}" if sf.size > 1 else f"it is {sf[0]!r}"
    return [Violation("scale", name, f"scale '{s}' must be finite and > 0, {what} ({int(bad.sum())} bad of {sf.size})")]


def _zero_point_violations(name: str, zp: str, s: str, scale, values: dict, types: dict) -> list[Violation]:
    """zero point: absent (= 0) or constant all-zero int8"""
    if not zp:
        return []
    out = []
    zval = values.get(zp)
    if zval is None:
        out.append(Violation("zero-point", name, f"zero point '{zp}' is not a constant initializer; "
                             "TensorRT needs a constant zero point of 0"))
    else:
        if np.any(zval != 0):
            nz = zval.ravel()[np.flatnonzero(zval.ravel())[0]]
            out.append(Violation("zero-point", name, f"zero point '{zp}' holds {int(nz)}; TensorRT "
                                 "supports symmetric quantization only (zero point 0)"))
        if scale is not None and zval.size != scale.size:
            out.append(Violation("zero-point", name, f"zero point '{zp}' has {zval.size} element(s) but "
                                 f"scale '{s}' has {scale.size}"))
    zt = types.get(zp)
    if zt is not None and zt != _INT8:
        why = " (signed: TensorRT has no asymmetric uint8 Q/DQ)" if zt == _UINT8 else ""
        out.append(Violation("dtype", name, f"zero point '{zp}' is {_dtype_name(zt)}; TensorRT INT8 "
                             f"Q/DQ needs an int8 zero point{why}"))
    return out


def _io_dtype_violations(node, name: str, x: str, zp: str, types: dict) -> list[Violation]:
    if node.op_type == "QuantizeLinear":
        od = _attr(node, "output_dtype", 0)  # opset 21+; 0 = taken from the zero point, else uint8
        if od and od != _INT8:
            return [Violation("dtype", name, f"output_dtype is {_dtype_name(od)}, not int8")]
        if not zp and not od:
            return [Violation("dtype", name, "QuantizeLinear without a zero point produces uint8 (the "
                              "ONNX default); give it an int8 zero point of 0")]
        return []
    xt = types.get(x)
    if xt is not None and xt != _INT8:
        hint = " (a quantized bias? keep biases float: QuantizeBias=False)" if xt == 6 else ""
        return [Violation("dtype", name, f"input '{x}' is {_dtype_name(xt)}; TensorRT's "
                          f"DequantizeLinear takes int8 only{hint}")]
    return []


def _axis_violations(graph, node, name: str, x: str, s: str, scale, values: dict, shapes: dict,
                     consumers: dict) -> list[Violation]:
    """per-axis: the output-channel axis of the weight it feeds, one scale per channel"""
    if scale is None or scale.size <= 1:
        return []
    out = []
    shape = tuple(values[x].shape) if x in values else shapes.get(x)
    axis = int(_attr(node, "axis", 1))
    rank = len(shape) if shape is not None else None
    if rank is not None:
        if not -rank <= axis < rank:
            return [Violation("axis", name, f"axis {axis} is out of range for input '{x}' of rank {rank}")]
        axis %= rank
    expected, other = _weight_axis(graph, node.output[0] if node.output else "", consumers)
    if other or not expected:
        where = ", ".join(other) if other else "nothing"
        out.append(Violation("axis", name, f"per-axis quantization ({scale.size} scales) feeds {where}; "
                             "TensorRT takes per-axis Q/DQ only on Conv and Gemm weights"))
    elif len(expected) > 1:
        out.append(Violation("axis", name, f"the weight feeds layers with different output-channel axes "
                             f"{sorted(expected)}"))
    elif axis not in expected:
        exp = next(iter(expected))
        out.append(Violation("axis", name, f"axis is {axis} but the output-channel axis of the weight it "
                             f"feeds is {exp}"))
    if rank is not None and shape[axis] is not None and shape[axis] != scale.size:
        out.append(Violation("axis", name, f"scale '{s}' has {scale.size} elements but input '{x}' has "
                             f"{shape[axis]} along axis {axis}"))
    return out


def _qdq_violations(graph, values: dict, types: dict, shapes: dict) -> list[Violation]:
    out = []
    consumers: dict[str, list] = {}
    for node in graph.node:
        for idx, t in enumerate(node.input):
            if t:
                consumers.setdefault(t, []).append((node, idx))
    for i, node in enumerate(graph.node):
        if node.op_type not in QDQ_OPS or node.domain not in DEFAULT_DOMAINS:
            continue
        name = _node_name(node, i)
        x = node.input[0] if len(node.input) > 0 else ""
        s = node.input[1] if len(node.input) > 1 else ""
        zp = node.input[2] if len(node.input) > 2 else ""
        scale = values.get(s)
        out += _scale_violations(name, s, scale)
        out += _zero_point_violations(name, zp, s, scale, values, types)
        out += _io_dtype_violations(node, name, x, zp, types)
        out += _axis_violations(graph, node, name, x, s, scale, values, shapes, consumers)
    return out


def _weight_range_violations(graph, values: dict) -> list[Violation]:
    out, seen = [], set()
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.domain not in DEFAULT_DOMAINS or not node.input:
            continue
        w = node.input[0]
        val = values.get(w)
        if w in seen or val is None or val.dtype != np.int8:
            continue
        seen.add(w)
        n = int((val == -128).sum())
        if n:
            out.append(Violation("weight-range", w, f"int8 weight holds -128 in {n} place(s); TensorRT's "
                                 "symmetric weight range is -127..127 (clip before quantizing)"))
    return out


def _shape_violations(graph) -> list[Violation]:
    out = []
    inits = {i.name for i in graph.initializer}
    for kind, vis in (("input", graph.input), ("output", graph.output)):
        for vi in vis:
            if vi.name in inits:
                continue
            tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
            if tt is None or not tt.HasField("shape"):
                out.append(Violation("dynamic-shape", vi.name, f"graph {kind} has no shape; TensorRT/DLA here "
                                     "need fully static dims"))
                continue
            dims = []
            for d in tt.shape.dim:
                if d.HasField("dim_value") and d.dim_value > 0:
                    dims.append(str(d.dim_value))
                else:
                    dims.append(repr(d.dim_param) if d.dim_param else "?")
            if any(not x.isdigit() for x in dims):
                out.append(Violation("dynamic-shape", vi.name, f"graph {kind} has shape [{', '.join(dims)}]; "
                                     "export with a fixed batch so every dim is static"))
    return out


def _has_qdq_pair(graph) -> bool:
    q_out = {o for n in graph.node if n.op_type == "QuantizeLinear" and n.domain in DEFAULT_DOMAINS
             for o in n.output}
    return any(n.op_type == "DequantizeLinear" and n.domain in DEFAULT_DOMAINS and n.input and n.input[0] in q_out
               for n in graph.node)


def lint_model(model, require_qdq: bool = True) -> list[Violation]:
    """Check an ONNX model (ModelProto, serialized bytes or a path) against TensorRT's rules for
    explicitly quantized INT8 networks. Returns the violations in graph order; empty when clean."""
    m = _load(model)
    g = m.graph
    values, const_types = _constants(g)
    types, shapes = _tensor_types(m, const_types)
    out = _opset_violations(m)
    out += _op_violations(g)
    out += _qdq_violations(g, values, types, shapes)
    out += _weight_range_violations(g, values)
    out += _shape_violations(g)
    if require_qdq and not _has_qdq_pair(g):
        out.append(Violation("not-quantized", g.name or "graph", "the graph has no QuantizeLinear -> "
                             "DequantizeLinear pair; TensorRT would build it without INT8 (quantize it first)"))
    return out


def format_violations(violations) -> str:
    """One line per violation: `rule: node: message`."""
    return "\n".join(str(v) for v in violations)


def check(model, require_qdq: bool = True) -> None:
    """Raise LintError (exit 2) naming the first violation and the count when the model is not clean."""
    violations = lint_model(model, require_qdq=require_qdq)
    if violations:
        n = len(violations)
        raise LintError(f"model breaks TensorRT's INT8 Q/DQ rules: {n} violation{'s' if n != 1 else ''}, first: "
                        f"{violations[0]}", violations)
