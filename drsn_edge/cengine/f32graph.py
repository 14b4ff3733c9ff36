"""Read a float ONNX graph (the build's own fp32 export, batch 1) into kernels for the float host engine.

Every tensor is viewed as [C, L] (channels × time; L = 1 for per-channel vectors). Layout ops (Unsqueeze,
Reshape, …) are views. Kernels:
- conv: a convolution along time (group 1), with a following ReLU folded in;
- fc: Gemm, or a 1×1 convolution on [C, 1] tensors (the threshold branch), ReLU folded in;
- eltwise: one loop over [C, L] computing a whole chain of elementwise ops (ReLU, Neg, Add, Sub, Mul, Max,
  Min, Sigmoid, Abs and depthwise 1×1 convolutions = per-channel affines). An elementwise result is kept in
  a buffer only where something else needs it (a convolution, a reduction of another shape, a broadcast,
  the output); elsewhere it is computed inside its consumer's loop, e.g. the soft threshold
  relu(x − τ) − relu(−x − τ) and the residual sum form one pass;
- mean: ReduceMean over time (or channels) with its elementwise input computed in the same loop (|x|);
- subsample (AveragePool of size 1), concat (channels, constants included), input (copy into a padded row).
Anything else is refused with the op and node named.

The first graph output is the main one (the logits); further outputs (the domain guard's taps, guard.<tap>)
are kept in buffers of their own until the end and copied after it. A kernel that only makes such an
output runs right after what it reads, so its input's buffer is not held longer than the main path needs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

ELTWISE = {"Relu", "Neg", "Add", "Sub", "Mul", "Div", "Max", "Min", "Sigmoid", "Abs"}
VIEWS = {"Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity"}
MAX_TAP = 16  # taps reach at most this far outside a row (the zero pads of the kernels)


@dataclass
class Kernel:
    kind: str                      # input | conv | fc | eltwise | mean | subsample | concat
    out: str                       # the tensor it writes
    nodes: list                    # the ONNX nodes it computes (first: the one it is named after)
    inputs: list[str]              # tensors it reads from buffers
    params: dict = field(default_factory=dict)
    macs: int = 0

    @property
    def name(self) -> str:
        return self.nodes[0].name if self.nodes else self.out

    @property
    def op_type(self) -> str:
        return "+".join(n.op_type for n in self.nodes) or "Copy"


@dataclass
class F32Graph:
    shapes: dict[str, tuple[int, int]]   # tensor → (C, L)
    consts: dict[str, np.ndarray]
    kernels: list[Kernel]
    input: str
    output: str
    in_shape: tuple[int, ...]
    out_size: int
    extra: list[tuple[str, str]] = field(default_factory=list)  # (output name, tensor) after the main output


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _refuse(node, what: str):
    raise InputError(f"the float host engine cannot run {node.op_type} node '{node.name}': {what}")


def _view(dims: list[int], name: str) -> tuple[int, int]:
    if not dims or dims[0] != 1 or any(d <= 0 for d in dims):
        raise InputError(f"tensor '{name}' has shape {dims}; the float host engine runs batch-1 static shapes")
    rest = list(dims[1:])
    if len(rest) == 1:
        return rest[0], 1
    if len(rest) == 2:
        return rest[0], rest[1]
    if len(rest) == 3 and rest[1] == 1:
        return rest[0], rest[2]
    raise InputError(f"tensor '{name}' has shape {dims}; the float host engine takes [1, C, L] or [1, C, 1, L]")


class _Reader:
    def __init__(self, model_bytes: bytes):
        import onnx
        from onnx import numpy_helper

        m = onnx.shape_inference.infer_shapes(onnx.load_from_string(bytes(model_bytes)))
        g = m.graph
        self.g = g
        self.consts = {i.name: numpy_helper.to_array(i).astype(np.float32, copy=False) if i.data_type == 1
                       else numpy_helper.to_array(i) for i in g.initializer}
        self.dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                     for v in list(g.input) + list(g.value_info) + list(g.output)}
        self.alias: dict[str, str] = {}
        self.nodes = []
        for n in g.node:
            if n.op_type == "Constant":
                self.consts[n.output[0]] = numpy_helper.to_array(_attrs(n)["value"])
            elif n.op_type in VIEWS:
                self.alias[n.output[0]] = self.real(n.input[0])
                self._same_view(n)
            else:
                self.nodes.append(n)
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(self.real(i), []).append(n)

    def _same_view(self, n) -> None:
        """A layout op is a view only when it keeps the [C, L] shape (no flattening of time into channels)."""
        src, dst = self.dims.get(self.alias[n.output[0]]), self.dims.get(n.output[0])
        if src and dst and src != dst and _view(src, n.input[0]) != _view(dst, n.output[0]):
            _refuse(n, f"it turns {src} into {dst} (only layout ops that keep [C, L] are views)")

    def real(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def shape(self, name: str) -> tuple[int, int]:
        name = self.real(name)
        if name in self.consts:
            c = np.asarray(self.consts[name])
            return _const_view(c)
        if name not in self.dims:
            raise InputError(f"tensor '{name}' has no inferred shape; export the model with static shapes")
        return _view(self.dims[name], name)


def _const_view(c: np.ndarray) -> tuple[int, int]:
    """A constant's [C, L] view: leading ones dropped, then [C, 1, L], [C, L] or [C] (a per-channel vector)."""
    if c.size == 1:
        return 1, 1
    dims = list(c.shape)
    while dims[0] == 1 and len(dims) > 2:
        dims = dims[1:]
    if len(dims) == 3 and dims[1] == 1:
        return dims[0], dims[2]
    if len(dims) <= 2:
        return dims[0], dims[1] if len(dims) == 2 else 1
    return int(np.prod(dims[:-1])), dims[-1]


def _is_affine(r: _Reader, n) -> bool:
    """A depthwise 1×1 convolution: a per-channel affine (the folded pre-activation batch norms)."""
    if n.op_type != "Conv" or len(n.input) < 2 or n.input[1] not in r.consts:
        return False
    w, a = r.consts[n.input[1]], _attrs(n)
    return int(a.get("group", 1)) == w.shape[0] > 1 and w.size == w.shape[0]


def _elementwise(r: _Reader, n) -> bool:
    return n.op_type in ELTWISE or _is_affine(r, n)


def _reduce_axis(r: _Reader, n) -> str:
    """'t' (mean over time) or 'c' (over channels) for a ReduceMean node."""
    a = _attrs(n)
    axes = a.get("axes")
    if axes is None and len(n.input) > 1:
        axes = [int(v) for v in np.asarray(r.consts.get(r.real(n.input[1]), [])).reshape(-1)]
    dims = r.dims.get(r.real(n.input[0])) or []
    rank = len(dims)
    if not axes or not rank:
        _refuse(n, "the reduced axes are not known")
    axes = {int(v) % rank for v in axes}
    wide = {i for i in range(2, rank) if dims[i] > 1}
    if axes == {1}:
        return "c"
    if 1 not in axes and 0 not in axes and wide <= axes:
        return "t"
    _refuse(n, f"mean over axes {sorted(axes)} of a {dims} tensor (over time or channels only)")


def _conv_params(r: _Reader, n) -> dict:
    a = _attrs(n)
    w = r.consts.get(r.real(n.input[1]))
    if w is None:
        _refuse(n, "its weights are not constant")
    if int(a.get("group", 1)) != 1:
        _refuse(n, f"group {a.get('group')} (group 1 and depthwise 1×1 only)")
    if w.ndim == 4 and w.shape[2] != 1 or w.ndim not in (3, 4) or any(d != 1 for d in a.get("dilations", [1])):
        _refuse(n, f"weights {list(w.shape)} (a 1-D or 1×k kernel without dilation)")
    pads = list(a.get("pads", [0] * (2 * (w.ndim - 2))))
    half = len(pads) // 2
    p, p_end = pads[half - 1], pads[-1]
    s = int(list(a.get("strides", [1]))[-1])
    co, ci, k = w.shape[0], w.shape[1], w.shape[-1]
    c_in, l_in = r.shape(n.input[0])
    c_out, l_out = r.shape(n.output[0])
    if c_in != ci or c_out != co or (w.ndim == 4 and any(pads[i] for i in (0, half))):
        _refuse(n, f"input {c_in}×{l_in} does not fit weights {list(w.shape)} and pads {pads}")
    bias = r.consts.get(r.real(n.input[2])) if len(n.input) > 2 and n.input[2] else None
    return {"co": co, "ci": ci, "k": k, "s": s, "p": p, "p_end": p_end, "len": l_out, "l_in": l_in,
            "w": w.reshape(co, ci * k), "b": bias}


def _fc_params(r: _Reader, n) -> dict:
    if n.op_type == "Conv":
        q = _conv_params(r, n)
        if q["k"] != 1 or q["len"] != 1 or q["s"] != 1:
            _refuse(n, "a 1×1 convolution on a [C, 1] tensor was expected")
        return {"no": q["co"], "ni": q["ci"], "w": q["w"], "b": q["b"]}
    a = _attrs(n)
    w = r.consts.get(r.real(n.input[1]))
    if w is None or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
        _refuse(n, "constant weights with alpha = beta = 1 are needed")
    w = w if a.get("transB", 0) else w.T
    b = r.consts.get(r.real(n.input[2])) if len(n.input) > 2 and n.input[2] else None
    return {"no": w.shape[0], "ni": w.shape[1], "w": w, "b": None if b is None else b.reshape(-1)}


def _heavy_kernel(r: _Reader, n) -> Kernel:
    ins = [r.real(n.input[0])]
    if n.op_type == "Conv" and r.shape(n.input[0])[1] > 1:
        q = _conv_params(r, n)
        reach = max(q["p"], q["p_end"] + q["s"], q["s"] * ((q["p"] + q["s"] - 1) // q["s"] + 2 + q["k"]))
        if reach > MAX_TAP:
            _refuse(n, f"kernel {q['k']}, stride {q['s']}, padding {q['p']} reach past the {MAX_TAP}-float pads")
        return Kernel("conv", n.output[0], [n], ins, q, q["co"] * q["ci"] * q["k"] * q["len"])
    if n.op_type in ("Conv", "Gemm"):
        q = _fc_params(r, n)
        return Kernel("fc", n.output[0], [n], ins, q, q["no"] * q["ni"])
    if n.op_type == "AveragePool":
        a = _attrs(n)
        if any(v != 1 for v in a.get("kernel_shape", [])) or any(a.get("pads", [0])):
            _refuse(n, "average pooling of size 1 without padding only (a strided subsample)")
        return Kernel("subsample", n.output[0], [n], ins, {"s": int(list(a.get("strides", [1]))[-1])})
    if n.op_type == "Concat":
        if _attrs(n).get("axis") != 1:
            _refuse(n, "concatenation along channels (axis 1) only")
        return Kernel("concat", n.output[0], [n], [r.real(i) for i in n.input])
    _refuse(n, f"not one of Conv, Gemm, ReduceMean, AveragePool, Concat, {', '.join(sorted(ELTWISE))}")


def _inline(r: _Reader, n, inlined: set, outputs: set) -> bool:
    """Whether an elementwise node's result is computed inside its consumers' loops instead of stored."""
    t = n.output[0]
    users = r.consumers.get(t, [])
    if t in outputs or not users:
        return False
    for u in users:
        if not (_elementwise(r, u) or u.op_type == "ReduceMean"):
            return False
        it = r.shape(u.input[0]) if u.op_type == "ReduceMean" else r.shape(u.output[0])
        if it != r.shape(t):
            return False
    own = all(r.real(i) not in inlined for i in n.input if i)
    return len(users) == 1 or own


def _expr_nodes(r: _Reader, roots: list[str], inlined: dict) -> list:
    """The inlined nodes a loop computes for `roots`, in graph order."""
    seen, stack = {}, list(roots)
    while stack:
        t = stack.pop()
        if t in inlined and t not in seen:
            seen[t] = inlined[t]
            stack.extend(r.real(i) for i in inlined[t].input if i)
    order = {id(n): k for k, n in enumerate(r.nodes)}
    return sorted(seen.values(), key=lambda n: order[id(n)])


def _fold_relu(r: _Reader, k: Kernel, outputs: set, skip: set) -> Kernel:
    users = r.consumers.get(k.out, [])
    if k.out not in outputs and len(users) == 1 and users[0].op_type == "Relu":
        skip.add(id(users[0]))
        k.nodes.append(users[0])
        k.params["relu"] = 1
        k.out = users[0].output[0]
    return k


def _merge_siblings(kernels: list[Kernel]) -> list[Kernel]:
    """An elementwise loop that reads the result of the loop just before it, over the same [C, L], runs in
    that loop (one pass writes both results), e.g. a unit's output and the next unit's affine + ReLU."""
    out: list[Kernel] = []
    for k in kernels:
        prev = out[-1] if out else None
        if (prev is not None and k.kind == prev.kind == "eltwise" and k.params["iter"] == prev.params["iter"]
                and prev.params.get("outs", [prev.out])[-1] in k.inputs):
            outs = prev.params.get("outs", [prev.out]) + [k.out]
            prev.nodes += k.nodes
            prev.params["outs"] = outs
            prev.inputs = sorted(set(prev.inputs) | (set(k.inputs) - set(outs)))
            continue
        out.append(k)
    return out


def _hoist(kernels: list[Kernel], extra: set) -> list[Kernel]:
    """Move each kernel that only makes extra outputs (nothing reads them) right after the last kernel that
    writes one of its inputs: e.g. the guard's mean |x| of the stem runs next to the stem, not after the head."""
    def made(k: Kernel) -> set:
        return set(k.params.get("outs", [k.out]))

    out = list(kernels)
    for k in [k for k in kernels if made(k) <= extra]:
        if any(made(k) & set(o.inputs) for o in out):
            continue
        out.remove(k)
        writers = [i for i, o in enumerate(out) if made(o) & set(k.inputs)]
        out.insert(max(writers, default=0) + 1, k)
    return out


def read_f32_graph(model_bytes: bytes) -> F32Graph:
    """Kernels for a float ONNX graph with one input and one or more outputs (the first is the main one);
    InputError names what cannot run."""
    r = _Reader(model_bytes)
    g = r.g
    if len(g.input) != 1 or not len(g.output):
        raise InputError("the float host engine needs one input and at least one output")
    if g.input[0].type.tensor_type.elem_type != 1:
        raise InputError("the float host engine takes a float32 input")
    inp, out = g.input[0].name, r.real(g.output[0].name)
    extra = [(o.name, r.real(o.name)) for o in g.output[1:]]
    if any(t in r.consts for _, t in extra):
        raise InputError("the float host engine cannot output a constant tensor")
    outputs = {out} | {t for _, t in extra}
    kernels = [Kernel("input", inp, [], [])]
    inlined: dict[str, object] = {}
    skip: set = set()
    for n in r.nodes:
        if id(n) in skip:
            continue
        if _elementwise(r, n):
            if _inline(r, n, set(inlined), outputs):
                inlined[n.output[0]] = n
                continue
            nodes = _expr_nodes(r, [r.real(i) for i in n.input if i], inlined) + [n]
            kernels.append(Kernel("eltwise", n.output[0], nodes, []))
        elif n.op_type == "ReduceMean":
            nodes = _expr_nodes(r, [r.real(n.input[0])], inlined) + [n]
            kernels.append(Kernel("mean", n.output[0], nodes, [], {"axis": _reduce_axis(r, n)}))
        else:
            kernels.append(_fold_relu(r, _heavy_kernel(r, n), outputs, skip))
    for k in kernels:
        if k.kind in ("eltwise", "mean"):
            made = {x.output[0] for x in k.nodes}
            k.inputs = sorted({r.real(i) for x in k.nodes for i in x.input if i} - made)
            k.params["iter"] = r.shape(k.nodes[-1].input[0]) if k.kind == "mean" else r.shape(k.out)
    shapes = {t: r.shape(t) for k in kernels for t in [k.out] + k.inputs if t not in r.consts}
    kernels = _merge_siblings(kernels)
    if extra:
        made = {t for k in kernels for t in k.params.get("outs", [k.out])}
        lost = [name for name, t in extra if t not in made]
        if lost:
            raise InputError(f"the graph's output '{lost[0]}' is computed by none of its nodes")
        kernels = _hoist(kernels, {t for _, t in extra})
        shapes.update({t: r.shape(t) for _, t in extra})
    shapes[inp] = _view(r.dims[inp], inp)
    graph = F32Graph(shapes, r.consts, kernels, inp, out, tuple(r.dims[inp]), int(np.prod(r.shape(out))), extra)
    graph.reader = r
    return graph
