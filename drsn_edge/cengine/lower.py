"""Lower the tflite graph to kernel calls with constant parameters. Folded at generation time:
RESHAPE (an alias of its input), PAD in front of a VALID convolution (becomes the convolution's own
padding: TFLM pads with the zero point and skips outside taps, both contribute zero), TRANSPOSE in
front of MEAN (the reduced axes are remapped) or one that moves only size-1 dimensions (an alias)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import quant
from .graph import Graph, Op, Tensor, refuse



def wrap_int32(v: np.ndarray) -> np.ndarray:
    """Fold a constant into an int32 accumulator the way the kernels add it: modulo 2^32 (two's complement).
    TFLite Micro accumulates in int32 too, so a folded bias that leaves the int32 range (a large bias next to
    the input offset times the weight sum) stays bit-exact when wrapped; the C is compiled with -fwrapv."""
    v = np.asarray(v, dtype=np.int64)
    return (((v + (1 << 31)) % (1 << 32)) - (1 << 31)).astype(np.int64)


@dataclass

class Node:
    kind: str                      # kernel: conv, dwconv, fc, addsub, mul, rescale, logistic, mean, ...
    ops: list[int]                 # source op indices
    label: str                     # e.g. "CONV_2D#5"
    inputs: list[int]              # runtime tensors read (tensor indices)
    output: int
    params: dict = field(default_factory=dict)    # scalar struct fields, in C order
    consts: dict = field(default_factory=dict)    # struct field -> (ctype, np.ndarray)
    inplace: list[int] = field(default_factory=list)  # input positions whose buffer may take the output
    scratch: int = 0               # bytes of int32 scratch
    macs: int = 0


@dataclass
class Lowered:
    nodes: list[Node]
    aliases: dict[int, int]        # tensor -> tensor whose buffer it shares (RESHAPE, no-op TRANSPOSE)
    consts: dict[int, np.ndarray]  # constant activation-like inputs (CONCATENATION / MUL / ADD operands)
    input: int
    output: int
    extra_outputs: list[int] = field(default_factory=list)  # the domain guard's tap outputs, after the logits


def _wc(t: Tensor, op: Op) -> tuple[int, int]:
    """(width, channels) of an NHWC tensor with N = H = 1."""
    s = t.shape
    if len(s) == 4 and s[0] == 1 and s[1] == 1:
        return s[2], s[3]
    if len(s) == 3 and s[0] == 1:
        return s[1], s[2]
    refuse(op, t, f"shape {list(s)} (1-D data [1, 1, W, C] expected)")


def _padding(op: Op, in_w: int, k: int, stride: int, out_w: int) -> int:
    if op.options.get("padding", 1) == 0:  # SAME
        total = max((out_w - 1) * stride + k - in_w, 0)
        return total // 2
    return 0


def _check_1d(op: Op, g: Graph, filt: Tensor):
    o = op.options
    if o.get("dilationWFactor", 1) != 1 or o.get("dilationHFactor", 1) != 1:
        refuse(op, filt, "dilation")
    if o.get("strideH", 1) != 1:
        refuse(op, filt, f"height stride {o.get('strideH')}")
    if filt.shape[1] != 1:
        refuse(op, filt, f"filter height {filt.shape[1]} (only 1-D filters)")


class Lowerer:
    def __init__(self, g: Graph, single_rounding: bool):
        self.g, self.single = g, single_rounding
        self.nodes: list[Node] = []
        self.aliases: dict[int, int] = {}
        self.consts: dict[int, np.ndarray] = {}
        self.folded_pad: dict[int, tuple[int, int]] = {}   # conv input tensor -> (pad-input tensor, before)
        self.folded_transpose: dict[int, tuple[int, list[int]]] = {}
        # element-wise functions of one int8 tensor, kept as tables until a kernel needs the values
        self.rep: dict[int, tuple[int, np.ndarray]] = {}
        self.pending: set[int] = set()

    # ---- helpers --------------------------------------------------------------------------------
    def src(self, t: int) -> int:
        while t in self.aliases:
            t = self.aliases[t]
        return t

    def act(self, op: Op, out: Tensor) -> tuple[int, int]:
        a = int(op.options.get("fusedActivationFunction", 0) or 0)
        if a not in (0, 1, 2, 3):
            refuse(op, out, f"fused activation {a}")
        return quant.activation_range(a, out.s, out.zp)

    def runtime(self, op: Op, t: int) -> int:
        """A runtime operand (materialized if it is still a table); constant int8 operands become
        const arrays."""
        tt = self.g.t(t)
        if tt.data is not None:
            if tt.dtype != "INT8":
                refuse(op, tt, f"constant operand of type {tt.dtype.lower()}")
            self.consts[t] = tt.data.astype(np.int8).reshape(-1)
        t = self.src(t)
        if t in self.pending:
            src, table = self.rep[t]
            self.pending.discard(t)
            self.add(Node("lut", [], f"LUT#{t}", [src], t, {"n": self.g.t(t).size}, {"table": ("int8_t", table)},
                          inplace=[0]))
        return t

    def table_of(self, t: int) -> tuple[int, np.ndarray]:
        """(source tensor, table) with value(t) = table[(uint8) value(source)]."""
        t = self.src(t)
        return self.rep[t] if t in self.pending else (t, quant.IDENTITY)

    def fold(self, out: int, src: int, table: np.ndarray):
        self.rep[out] = (src, table)
        self.pending.add(out)

    # ---- driver ---------------------------------------------------------------------------------
    def run(self) -> Lowered:
        for op in self.g.ops:
            getattr(self, "op_" + op.kind.lower())(op)
        for t in self.g.outputs:
            self.runtime(self.g.ops[-1], t)
        return Lowered(self.nodes, self.aliases, self.consts, self.g.inputs[0], self.src(self.g.outputs[0]),
                       [self.src(t) for t in self.g.outputs[1:]])

    def add(self, node: Node):
        self.nodes.append(node)

    # ---- data movement --------------------------------------------------------------------------
    def op_reshape(self, op: Op):
        self.aliases[op.outputs[0]] = op.inputs[0]

    def op_pad(self, op: Op):
        t_in, t_out = self.g.t(op.inputs[0]), self.g.t(op.outputs[0])
        pads = self.g.t(op.inputs[1]).data
        if pads is None or len(op.inputs) > 2:
            refuse(op, t_in, "PAD with runtime paddings or an explicit pad value")
        pads = np.asarray(pads).reshape(-1, 2)
        if len(pads) != 4 or np.any(pads[[0, 1, 3]]) or t_in.zp != t_out.zp or t_in.s != t_out.s:
            refuse(op, t_in, f"padding {pads.tolist()} (only width padding of 1-D data)")
        before, after = int(pads[2, 0]), int(pads[2, 1])
        users = self.g.consumers(op.outputs[0])
        if len(users) == 1 and users[0].kind in ("CONV_2D", "DEPTHWISE_CONV_2D") \
                and users[0].options.get("padding", 1) == 1 and op.outputs[0] not in self.g.outputs:
            self.folded_pad[op.outputs[0]] = (op.inputs[0], before)
            return
        w, c = _wc(t_in, op)
        self.add(Node("pad", [op.index], f"PAD#{op.index}", [self.runtime(op, op.inputs[0])], op.outputs[0],
                      {"in_w": w, "c": c, "before": before, "after": after, "value": t_in.zp}))

    def op_transpose(self, op: Op):
        t_in = self.g.t(op.inputs[0])
        perm = [int(v) for v in np.asarray(self.g.t(op.inputs[1]).data).reshape(-1)]
        moved = [p for p in perm if t_in.shape[p] != 1]
        if moved == sorted(moved):
            self.aliases[op.outputs[0]] = op.inputs[0]
            return
        users = self.g.consumers(op.outputs[0])
        if len(users) == 1 and users[0].kind == "MEAN" and op.outputs[0] not in self.g.outputs:
            self.folded_transpose[op.outputs[0]] = (self.src(op.inputs[0]), perm)
            return
        if len(perm) > 4:
            refuse(op, t_in, f"transpose of rank {len(perm)}")
        dims = [1] * (4 - len(perm)) + list(t_in.shape)
        perm4 = list(range(4 - len(perm))) + [p + 4 - len(perm) for p in perm]
        self.add(Node("transpose", [op.index], f"TRANSPOSE#{op.index}", [self.runtime(op, op.inputs[0])], op.outputs[0],
                      {"in_dims": dims, "perm": perm4}))

    def op_concatenation(self, op: Op):
        t_out = self.g.t(op.outputs[0])
        axis = int(op.options.get("axis", 0))
        axis = axis + len(t_out.shape) if axis < 0 else axis
        outer = int(np.prod(t_out.shape[:axis]))
        chunks = []
        for i in op.inputs:
            t = self.g.t(i)
            if t.s != t_out.s or t.zp != t_out.zp:
                refuse(op, t, "inputs quantized differently from the output (TFLM requires equal parameters)")
            chunks.append(int(np.prod(t.shape[axis:])))
        self.add(Node("concat", [op.index], f"CONCATENATION#{op.index}", [self.runtime(op, i) for i in op.inputs],
                      op.outputs[0], {"outer": outer, "chunks": chunks}))

    def op_quantize(self, op: Op):
        self._rescale(op, -128)

    # ---- element-wise ---------------------------------------------------------------------------
    def _rescale(self, op: Op, lo: int):
        """RELU and int8 -> int8 QUANTIZE: out = clamp(zp_out + MBQM(x - zp_in)); folded into a table."""
        t_in, t_out = self.g.t(op.inputs[0]), self.g.t(op.outputs[0])
        m, s = quant.quantize_multiplier(t_in.s / t_out.s, self.single)
        p = {"in_zp": t_in.zp, "out_zp": t_out.zp, "act_min": lo, "act_max": 127, "mult": m, "shift": s}
        src, table = self.table_of(op.inputs[0])
        self.fold(op.outputs[0], src, quant.rescale_table(table, p, self.single))

    def op_relu(self, op: Op):
        t_out = self.g.t(op.outputs[0])
        self._rescale(op, max(-128, t_out.zp + int(quant.tfl_round(0.0))))

    def op_logistic(self, op: Op):
        t_in, t_out = self.g.t(op.inputs[0]), self.g.t(op.outputs[0])
        if t_out.zp != -128:
            refuse(op, t_out, f"output zero point {t_out.zp} (TFLM's int8 LOGISTIC needs -128)")
        try:
            m, s, r = quant.logistic_params(t_in.s)
        except ValueError:
            refuse(op, t_in, f"input scale {t_in.s:g}")
        self.add(Node("logistic", [op.index], f"LOGISTIC#{op.index}", [self.runtime(op, op.inputs[0])], op.outputs[0],
                      {"n": t_out.size, "in_zp": t_in.zp, "radius": r, "mult": m, "shift": s}, inplace=[0]))

    def _bcast(self, op: Op, t: Tensor, out: Tensor) -> str:
        if t.size == out.size:
            return "none"
        if t.size == 1:
            return "scalar"
        if t.shape and t.shape[-1] == out.shape[-1] == t.size:
            return "chan"
        refuse(op, t, f"broadcast of shape {list(t.shape)} to {list(out.shape)}")

    def _binary(self, op: Op):
        a, b, out = (self.g.t(op.inputs[0]), self.g.t(op.inputs[1]), self.g.t(op.outputs[0]))
        ba, bb = self._bcast(op, a, out), self._bcast(op, b, out)
        if ba != "none" and bb != "none":
            refuse(op, a, "broadcast of both operands")
        code = {("none", "none"): 0, ("none", "chan"): 1, ("chan", "none"): 2, ("none", "scalar"): 3,
                ("scalar", "none"): 4}[(ba, bb)]
        inplace = [i for i, br in ((0, ba), (1, bb)) if br == "none"]
        lo, hi = self.act(op, out)
        chan = out.shape[-1] if out.shape else 1
        return a, b, out, code, inplace, lo, hi, chan

    def _same_source(self, op: Op, code: int):
        """The tables of both operands when they are functions of one tensor (else None)."""
        if code != 0 or any(self.g.t(i).data is not None for i in op.inputs[:2]):
            return None
        (sa, ta), (sb, tb) = self.table_of(op.inputs[0]), self.table_of(op.inputs[1])
        return (sa, ta, tb) if sa == sb else None

    def _side(self, op: Op, pos: int, small: bool):
        """A full-size operand still held as a table is read through its table (no materialization)."""
        t = op.inputs[pos]
        if not small and self.g.t(t).data is None and self.src(t) in self.pending:
            src, table = self.table_of(t)
            return src, ("int8_t", table)
        return self.runtime(op, t), None

    def op_add(self, op: Op, sign: int = 1):
        a, b, out, code, inplace, lo, hi, chan = self._binary(op)
        p = quant.addsub_params(a.s, b.s, out.s, quant.ADDSUB_FLOAT32[op.kind], self.single)
        params = {"n": out.size, "chan": chan, "a_off": -a.zp, "b_off": -b.zp, "out_zp": out.zp, "act_min": lo,
                  "act_max": hi, "left_shift": p["left_shift"], "sign": sign, "bcast": code,
                  "a_mult": p["a_mult"], "a_shift": p["a_shift"], "b_mult": p["b_mult"], "b_shift": p["b_shift"],
                  "out_mult": p["out_mult"], "out_shift": p["out_shift"]}
        same = self._same_source(op, code)
        if same is not None:
            self.fold(op.outputs[0], same[0], quant.addsub_table(same[1], same[2], params, self.single))
            return
        (ia, la), (ib, lb) = self._side(op, 0, code in (2, 4)), self._side(op, 1, code in (1, 3))
        consts = {k: v for k, v in (("a_lut", la), ("b_lut", lb)) if v is not None}
        inplace = [i for i in inplace if (la, lb)[i] is None]
        self.add(Node("addsub", [op.index], f"{op.kind}#{op.index}", [ia, ib], op.outputs[0], params, consts,
                      inplace=inplace, scratch=2048 if out.size >= 1024 else 0))

    def op_sub(self, op: Op):
        self.op_add(op, sign=-1)

    def op_mul(self, op: Op):
        a, b, out, code, inplace, lo, hi, chan = self._binary(op)
        m, s = quant.quantize_multiplier(a.s * b.s / out.s, self.single)
        params = {"n": out.size, "chan": chan, "a_off": -a.zp, "b_off": -b.zp, "out_zp": out.zp,
                  "act_min": lo, "act_max": hi, "bcast": code, "mult": m, "shift": s}
        same = self._same_source(op, code)
        if same is not None:
            self.fold(op.outputs[0], same[0], quant.mul_table(same[1], same[2], params, self.single))
            return
        for pos, scalar_code in ((1, 3), (0, 4)):
            c = self.g.t(op.inputs[pos])
            if code == scalar_code and c.data is not None:
                src, table = self.table_of(op.inputs[1 - pos])
                const = np.full(256, int(c.data.reshape(-1)[0]), np.int8)
                ta, tb = (table, const) if pos == 1 else (const, table)
                self.fold(op.outputs[0], src, quant.mul_table(ta, tb, params, self.single))
                return
        self.add(Node("mul", [op.index], f"MUL#{op.index}",
                      [self.runtime(op, op.inputs[0]), self.runtime(op, op.inputs[1])], op.outputs[0], params,
                      inplace=inplace))

    # ---- reductions and pooling -----------------------------------------------------------------
    def op_mean(self, op: Op):
        src, t_out = op.inputs[0], self.g.t(op.outputs[0])
        axes = [int(v) for v in np.asarray(self.g.t(op.inputs[1]).data).reshape(-1)]
        shape = list(self.g.t(src).shape)
        axes = sorted({a + len(shape) if a < 0 else a for a in axes})
        if src in self.folded_transpose:
            src, perm = self.folded_transpose[src]
            kept = [perm[j] for j in range(len(perm)) if j not in axes]
            axes = sorted(perm[a] for a in axes)
            shape = list(self.g.t(src).shape)
            kept_real = [k for k in kept if shape[k] != 1]
            if kept_real != sorted(kept_real):
                refuse(op, self.g.t(src), "MEAN after a TRANSPOSE that reorders the kept axes")
        t_in = self.g.t(src)
        real = [a for a in axes if shape[a] != 1]
        if real and any(shape[i] != 1 and i not in real for i in range(real[0], real[-1] + 1)):
            refuse(op, t_in, f"MEAN over non-adjacent axes {axes}")
        lo_ax, hi_ax = (real[0], real[-1]) if real else (0, -1)
        outer = int(np.prod(shape[:lo_ax])) if real else t_in.size
        reduce = int(np.prod([shape[a] for a in real])) if real else 1
        inner = int(np.prod(shape[hi_ax + 1:])) if real else 1
        m, s = quant.mean_multiplier(t_in.s, t_out.s, reduce, self.single)
        consts = {}
        if self.src(src) in self.pending:   # MEAN of a table of x: sum table[x]
            src, table = self.table_of(src)
            consts["lut"] = ("int8_t", table)
        self.add(Node("mean", [op.index], f"MEAN#{op.index}", [self.runtime(op, src)], op.outputs[0],
                      {"outer": outer, "reduce": reduce, "inner": inner, "in_zp": t_in.zp, "out_zp": t_out.zp,
                       "mult": m, "shift": s}, consts, scratch=4 * inner))

    def op_average_pool_2d(self, op: Op):
        t_in, t_out = self.g.t(op.inputs[0]), self.g.t(op.outputs[0])
        o = op.options
        if o.get("filterHeight", 1) != 1 or o.get("strideH", 1) != 1:
            refuse(op, t_in, "pooling window taller than 1")
        w, c = _wc(t_in, op)
        ow, _ = _wc(t_out, op)
        k, stride = int(o.get("filterWidth", 1)), int(o.get("strideW", 1))
        lo, hi = self.act(op, t_out)
        self.add(Node("avgpool", [op.index], f"AVERAGE_POOL_2D#{op.index}", [self.runtime(op, op.inputs[0])], op.outputs[0],
                      {"in_w": w, "c": c, "out_w": ow, "k": k, "stride": stride,
                       "pad": _padding(op, w, k, stride, ow), "act_min": lo, "act_max": hi}))

    # ---- convolutions ---------------------------------------------------------------------------
    def _conv_input(self, op: Op) -> tuple[int, int]:
        """(tensor giving the input's shape and quantization, padding folded from a PAD)."""
        t = op.inputs[0]
        if t in self.folded_pad:
            return self.folded_pad[t]
        return t, 0

    def _bias(self, op: Op, n: int) -> np.ndarray:
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            b = self.g.t(op.inputs[2])
            if b.dtype != "INT32" or b.data is None:
                refuse(op, b, f"bias of type {b.dtype.lower()}")
            return b.data.astype(np.int64).reshape(-1)
        return np.zeros(n, np.int64)

    def _weights(self, op: Op) -> Tensor:
        f = self.g.t(op.inputs[1])
        if f.dtype != "INT8" or f.data is None:
            refuse(op, f, f"weights of type {f.dtype.lower()}" + ("" if f.data is not None else " (not constant)"))
        if f.zero_point is not None and np.any(f.zero_point != 0):
            refuse(op, f, "weights with a nonzero zero point")
        return f

    def _conv_setup(self, op: Op):
        """Weights, input tensor (shape and quantization) and the parameters shared by both convolutions."""
        f = self._weights(op)
        _check_1d(op, self.g, f)
        src, pad_before = self._conv_input(op)
        t_in, t_out = self.g.t(src), self.g.t(op.outputs[0])
        w, c = _wc(t_in, op)
        ow, oc = _wc(t_out, op)
        k, stride = f.shape[2], int(op.options.get("strideW", 1))
        lo, hi = self.act(op, t_out)
        params = {"in_w": w, "in_c": c, "out_w": ow, "out_c": oc, "k": k, "stride": stride,
                  "pad": pad_before + _padding(op, w, k, stride, ow), "in_zp": t_in.zp, "out_zp": t_out.zp,
                  "act_min": lo, "act_max": hi}
        return f, src, t_in, t_out, params

    def _conv_node(self, op: Op, kind: str, src: int, t_in: Tensor, t_out: Tensor, f: Tensor, params: dict,
                   weights: np.ndarray, per_channel: np.ndarray, macs: int):
        """per_channel: the weights as [out_c][taps], for the folded bias."""
        oc = params["out_c"]
        bias = wrap_int32(self._bias(op, oc) - t_in.zp * per_channel.astype(np.int64).sum(axis=1))
        mult, shift = quant.conv_multipliers(t_in.s, f.scale, t_out.s, oc, self.single)
        self.add(Node(kind, [op.index], f"{op.kind}#{op.index}", [self.runtime(op, src)], op.outputs[0], params,
                      {"w": ("int8_t", weights.reshape(-1)), "bias": ("int32_t", bias),
                       "mult": ("int32_t", mult), "shift": ("int8_t", shift)}, macs=macs))

    def op_conv_2d(self, op: Op):
        f, src, t_in, t_out, p = self._conv_setup(op)
        if f.shape[3] != p["in_c"]:
            refuse(op, f, f"grouped convolution ({p['in_c']} input channels, filter depth {f.shape[3]})")
        wts = f.data.reshape(p["out_c"], -1)
        self._conv_node(op, "conv", src, t_in, t_out, f, p, wts, wts, p["out_w"] * wts.size)

    def op_depthwise_conv_2d(self, op: Op):
        f, src, t_in, t_out, p = self._conv_setup(op)
        c, oc, k = p["in_c"], p["out_c"], p["k"]
        if oc % c:
            refuse(op, f, f"depth multiplier ({c} -> {oc} channels)")
        by_channel = np.ascontiguousarray(f.data.reshape(k, oc).T)
        macs = p["out_w"] * oc * k
        if c == 1:  # one input channel: an ordinary convolution with weights [out_c][k][1]
            self._conv_node(op, "conv", src, t_in, t_out, f, p, by_channel, by_channel, macs)
            return
        p["depth_mult"] = oc // c
        self._conv_node(op, "dwconv", src, t_in, t_out, f, p, f.data, by_channel, macs)

    def op_fully_connected(self, op: Op):
        f = self._weights(op)
        t_in, t_out = self.g.t(op.inputs[0]), self.g.t(op.outputs[0])
        if op.options.get("weightsFormat", 0) != 0:
            refuse(op, f, "shuffled weights format")
        n_out, n_in = f.shape[0], int(np.prod(f.shape[1:]))
        if t_in.size % n_in or t_in.size != n_in:
            refuse(op, t_in, f"input of {t_in.size} values for {n_in} weights per output (batch > 1)")
        wts = f.data.reshape(n_out, n_in).astype(np.int64)
        bias = wrap_int32(self._bias(op, n_out) - t_in.zp * wts.astype(np.int64).sum(axis=1))
        per_channel = len(f.scale) > 1
        if per_channel:
            mult, shift = quant.conv_multipliers(t_in.s, f.scale, t_out.s, n_out, self.single)
        else:
            m, s = quant.fc_tensor_multiplier(t_in.s, float(f.scale[0]), t_out.s, self.single)
            mult, shift = np.array([m]), np.array([s])
        lo, hi = self.act(op, t_out)
        self.add(Node("fc", [op.index], f"FULLY_CONNECTED#{op.index}", [self.runtime(op, op.inputs[0])], op.outputs[0],
                      {"n_in": n_in, "n_out": n_out, "out_zp": t_out.zp, "act_min": lo, "act_max": hi},
                      {"w": ("int8_t", f.data.reshape(-1)), "bias": ("int32_t", bias),
                       "mult": ("int32_t", mult), "shift": ("int8_t", shift)}, macs=n_in * n_out))
        self.nodes[-1].params["per_channel"] = int(per_channel)


def lower(g: Graph, single_rounding: bool) -> Lowered:
    return Lowerer(g, single_rounding).run()
