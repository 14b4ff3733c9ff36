"""Read an int8 .tflite into a small graph (tensors + ops) for the C engine generator, and refuse
what the engine cannot run: the message names the op, its index and the tensor."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

SUPPORTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL", "RELU", "MEAN",
                 "LOGISTIC", "AVERAGE_POOL_2D", "PAD", "CONCATENATION", "QUANTIZE", "RESHAPE", "TRANSPOSE")

_NP = {"INT8": np.int8, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "INT16": np.int16,
       "FLOAT32": np.float32}


@dataclass
class Tensor:
    index: int
    name: str
    dtype: str                     # "INT8", "INT32", ...
    shape: tuple[int, ...]
    scale: np.ndarray | None       # float32 [1] per tensor or [C] per channel
    zero_point: np.ndarray | None
    axis: int
    data: np.ndarray | None        # constant contents

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def s(self) -> float:
        """Per-tensor scale as TFLM reads it (float32 widened to double)."""
        return float(np.float32(self.scale[0]))

    @property
    def zp(self) -> int:
        return int(self.zero_point[0]) if self.zero_point is not None and len(self.zero_point) else 0


@dataclass
class Op:
    index: int
    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)


@dataclass
class Graph:
    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]

    def t(self, i: int) -> Tensor:
        return self.tensors[i]

    def consumers(self, tensor: int) -> list[Op]:
        return [op for op in self.ops if tensor in op.inputs]

    def producer(self, tensor: int) -> Op | None:
        return next((op for op in self.ops if tensor in op.outputs), None)


def _options(op) -> dict:
    opt = op.builtinOptions
    return {} if opt is None else {k: v for k, v in vars(opt).items() if not k.startswith("_")}


def _tensor(model, i: int, t) -> Tensor:
    from ..backends.tflite import _tensor_type, _tname

    dtype = _tensor_type(t)
    q = t.quantization
    scale = zp = None
    axis = 0
    if q is not None and q.scale is not None and len(q.scale):
        scale = np.asarray(q.scale, np.float32)
        zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0] * len(scale), np.int64)
        axis = int(q.quantizedDimension or 0)
    shape = tuple(int(v) for v in (t.shape if t.shape is not None else []))
    buf = model.buffers[t.buffer] if t.buffer is not None and t.buffer < len(model.buffers) else None
    data = None
    if buf is not None and buf.data is not None and len(buf.data):
        if dtype not in _NP:
            raise InputError(f"constant tensor '{_tname(t)}' has type {dtype.lower()}, which the C engine does not read")
        data = np.frombuffer(bytes(bytearray(buf.data)), dtype=_NP[dtype]).reshape(shape or ())
    return Tensor(i, _tname(t), dtype, shape, scale, zp, axis, data)


def read_graph(tflite_bytes: bytes) -> Graph:
    """Parse the main subgraph; raise InputError naming the first unsupported op or tensor type."""
    from ..backends.tflite import _op_name, read_model

    model = read_model(tflite_bytes)
    if len(model.subgraphs) != 1:
        raise InputError(f"the model has {len(model.subgraphs)} subgraphs; the C engine runs single-subgraph models")
    sg = model.subgraphs[0]
    tensors = [_tensor(model, i, t) for i, t in enumerate(sg.tensors or [])]
    ops = []
    for k, op in enumerate(sg.operators or []):
        name = _op_name(model, op)
        ins = [int(i) for i in op.inputs]
        outs = [int(i) for i in op.outputs]
        if name not in SUPPORTED_OPS:
            where = tensors[outs[0]].name if outs else "?"
            raise InputError(f"op {name} (#{k}, output tensor '{where}') is not supported by the C engine; "
                             f"supported: {', '.join(SUPPORTED_OPS)} (use --engine tflm)")
        ops.append(Op(k, name, ins, outs, _options(op)))
    g = Graph(tensors, ops, [int(i) for i in sg.inputs], [int(i) for i in sg.outputs])
    if len(g.inputs) != 1 or len(g.outputs) < 1:
        raise InputError(f"the C engine needs one input and at least one output, found {len(g.inputs)} and "
                         f"{len(g.outputs)}")
    _check_types(g)
    return g


def _check_types(g: Graph) -> None:
    """Activations int8 with per-tensor quantization; weights int8, biases int32."""
    for op in g.ops:
        for role, idx in [("input", i) for i in op.inputs] + [("output", o) for o in op.outputs]:
            if idx < 0:
                continue
            t = g.t(idx)
            if t.data is not None:
                continue
            if t.dtype != "INT8":
                refuse(op, t, f"{role} type {t.dtype.lower()} (the C engine runs int8 activations only)")
            if t.scale is None or len(t.scale) != 1:
                refuse(op, t, f"{role} without per-tensor int8 quantization")


def refuse(op: Op, tensor: Tensor | None, what: str):
    where = f", tensor '{tensor.name}'" if tensor is not None else ""
    raise InputError(f"op {op.kind} (#{op.index}{where}): unsupported {what}; use --engine tflm for this model")
