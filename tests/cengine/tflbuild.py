"""Craft small int8 .tflite models with the flatbuffer object API (for op-by-op tests against
TFLite Micro), and run raw int8 windows through TFLM."""

from __future__ import annotations

import numpy as np

from drsn_edge.backends.tflite import _schema, write_model

_TYPES = {"INT8": 9, "INT32": 2}


class Builder:
    def __init__(self):
        s = _schema()
        self.s = s
        self.tensors, self.ops, self.codes = [], [], []
        self.buffers = [s.BufferT()]

    def tensor(self, shape, dtype="INT8", scale=None, zp=None, data=None, axis=0) -> int:
        s = self.s
        t = s.TensorT()
        t.shape = list(shape)
        t.type = _TYPES[dtype]
        t.name = f"t{len(self.tensors)}".encode()
        t.buffer = 0
        if data is not None:
            buf = s.BufferT()
            buf.data = np.ascontiguousarray(np.asarray(data, {"INT8": np.int8, "INT32": np.int32}[dtype])
                                            .reshape(shape)).view(np.uint8).reshape(-1).tolist()
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        if scale is not None:
            q = s.QuantizationParametersT()
            q.scale = [float(v) for v in np.atleast_1d(scale)]
            q.zeroPoint = [int(v) for v in np.atleast_1d(zp if zp is not None else 0)]
            if len(q.zeroPoint) != len(q.scale):
                q.zeroPoint = q.zeroPoint * len(q.scale)
            q.quantizedDimension = axis
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, name: str, inputs, outputs, options: str | None = None, **fields):
        s = self.s
        code = getattr(s.BuiltinOperator, name)
        if code not in self.codes:
            self.codes.append(code)
        o = s.OperatorT()
        o.opcodeIndex = self.codes.index(code)
        o.inputs, o.outputs = list(inputs), list(outputs)
        if options:
            opt = getattr(s, options + "T")()
            for k, v in fields.items():
                setattr(opt, k, v)
            o.builtinOptionsType = getattr(s.BuiltinOptions, options)
            o.builtinOptions = opt
        self.ops.append(o)

    def build(self, inputs, outputs) -> bytes:
        s = self.s
        m = s.ModelT()
        m.version = 3
        m.operatorCodes = []
        for c in self.codes:
            oc = s.OperatorCodeT()
            oc.builtinCode = c
            oc.deprecatedBuiltinCode = min(c, 127)
            oc.version = 1
            m.operatorCodes.append(oc)
        sg = s.SubGraphT()
        sg.tensors, sg.operators = self.tensors, self.ops
        sg.inputs, sg.outputs = list(inputs), list(outputs)
        m.subgraphs = [sg]
        m.buffers = self.buffers
        m.description = b"drsn-edge test model"
        return write_model(m)


def tflm_raw(tflite_bytes: bytes, xq: np.ndarray) -> np.ndarray:
    """Run raw int8 windows [N, L] through the TFLite Micro interpreter; int8 outputs [N, C]."""
    from drsn_edge.backends.tflm import tflm_interpreter

    it = tflm_interpreter(tflite_bytes)
    d = it.get_input_details(0)
    out = []
    for row in np.asarray(xq, np.int8).reshape(len(xq), -1):
        it.set_input(row.reshape(d["shape"]), 0)
        it.invoke()
        out.append(np.array(it.get_output(0)).reshape(-1).copy())
    return np.stack(out)


def all_int8(n: int, seed: int = 0) -> np.ndarray:
    """n int8 values covering -128..127 (each value at least once when n >= 256), shuffled."""
    rng = np.random.default_rng(seed)
    v = np.resize(np.arange(-128, 128), n)
    return rng.permutation(v).astype(np.int8)
