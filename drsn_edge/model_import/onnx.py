"""The float deploy-form ONNX graph that `drsn-edge export` writes, unfolded back into the registry model."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np

from ..errors import CheckFailedError, InputError
from ._common import BN_EPS, _NOT_DEPLOY

# --------------------------------------------------------------------------------------------------
# ONNX deploy form


def _label(node) -> str:
    return f"'{node.name}' ({node.op_type})" if node.name else f"{node.op_type} node producing '{node.output[0]}'"


class _DeployGraph:
    """Walks the deploy-form graph; every node and initializer it accepts is marked as used."""

    def __init__(self, model, src):
        from onnx import external_data_helper, helper, numpy_helper

        self.src, self.g, self.helper = src, model.graph, helper
        self.init, self.alias, self.const = {}, {}, {}
        self.used_init, self.visited = set(), set()
        for t in self.g.initializer:
            if external_data_helper.uses_external_data(t):
                raise InputError(f"'{src}' keeps initializer '{t.name}' in an external data file; "
                                 "save the ONNX with all weights inside it")
            self.init[t.name] = t
        self.nodes = list(self.g.node)
        self.producer, self.consumers = {}, collections.defaultdict(list)
        for i, n in enumerate(self.nodes):
            for o in n.output:
                self.producer[o] = i
            for x in n.input:
                if x:
                    self.consumers[x].append(i)
        for i, n in enumerate(self.nodes):
            if n.op_type == "Constant" and len(n.output) == 1:
                self.const[n.output[0]] = i
            elif n.op_type == "Identity" and len(n.input) == 1 and self._is_const(n.input[0]):
                self.alias[n.output[0]] = (n.input[0], i)
        self.numpy_helper = numpy_helper

    # ---- constants
    def _is_const(self, name):
        return name in self.init or name in self.const or name in self.alias

    def const_value(self, name, what, node=None) -> np.ndarray:
        seen = 0
        while name in self.alias:
            base, i = self.alias[name]
            self.visited.add(i)
            name = base
            seen += 1
            if seen > len(self.nodes):
                break
        if name in self.init:
            self.used_init.add(name)
            arr = self.numpy_helper.to_array(self.init[name])
        elif name in self.const:
            i = self.const[name]
            self.visited.add(i)
            attrs = self.attrs(self.nodes[i])
            if "value" not in attrs:
                raise InputError(f"'{self.src}': unsupported ONNX node {_label(self.nodes[i])}; {_NOT_DEPLOY}")
            arr = self.numpy_helper.to_array(attrs["value"])
        else:
            where = f" of {_label(node)}" if node is not None else ""
            raise InputError(f"'{self.src}': {what}{where} is computed, not a stored constant; {_NOT_DEPLOY}")
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
            if not np.isfinite(arr).all():
                raise InputError(f"'{self.src}' has non-finite values in initializer '{name}'")
        return arr

    def attrs(self, node) -> dict:
        out = {}
        for a in node.attribute:
            v = self.helper.get_attribute_value(a)
            out[a.name] = v.decode() if isinstance(v, bytes) else v
        return out

    # ---- walking
    def fail(self, tensor, expected):
        cons = [self.nodes[i] for i in self.consumers.get(tensor, []) if i not in self.visited]
        if cons:
            raise InputError(f"'{self.src}': unsupported ONNX node {_label(cons[0])} where {expected} was expected; "
                             f"{_NOT_DEPLOY}")
        raise InputError(f"'{self.src}': tensor '{tensor}' is not followed by {expected}; {_NOT_DEPLOY}")

    def take(self, tensor, op, expected, inputs=None, pred=None):
        """The one unvisited consumer of `tensor` with `op` (and exactly `inputs` / passing `pred`)."""
        found = []
        for i in self.consumers.get(tensor, []):
            n = self.nodes[i]
            if i in self.visited or n.op_type != op or i in found:
                continue
            if inputs is not None and list(n.input) != list(inputs):
                continue
            if pred is not None and not pred(n):
                continue
            found.append(i)
        if len(found) != 1:
            if len(found) > 1:
                raise InputError(f"'{self.src}': unsupported ONNX node {_label(self.nodes[found[1]])}: a second "
                                 f"{expected}; {_NOT_DEPLOY}")
            self.fail(tensor, expected)
        i = found[0]
        n = self.nodes[i]
        if len(n.output) != 1:
            raise InputError(f"'{self.src}': unsupported ONNX node {_label(n)} (extra outputs); {_NOT_DEPLOY}")
        self.visited.add(i)
        return n

    def axes(self, node, default=None) -> list[int]:
        a = self.attrs(node)
        if "axes" in a:
            return list(a["axes"])
        if len(node.input) > 1 and node.input[1]:
            return [int(v) for v in np.asarray(self.const_value(node.input[1], "axes", node)).ravel()]
        if default is not None:
            return default
        raise InputError(f"'{self.src}': {_label(node)} has no axes; {_NOT_DEPLOY}")

    def reduce_mean(self, node, axes, keepdims):
        got = sorted(a % 4 for a in self.axes(node))
        a = self.attrs(node)
        if got != sorted(axes) or int(a.get("keepdims", 1)) != keepdims or int(a.get("noop_with_empty_axes", 0)):
            raise InputError(f"'{self.src}': unsupported ONNX node {_label(node)} (averages over axes {got}, "
                             f"expected {sorted(axes)}); {_NOT_DEPLOY}")

    def conv(self, node, data, *, depthwise=False, kernel=None, point=False):
        """(W [O, I, 1, k], bias or None, stride) of a deploy-form 2-D conv, all attributes checked."""
        if node.input[0] != data or len(node.input) < 2:
            self.fail(data, "a convolution")
        w = self.const_value(node.input[1], "the weight", node)
        b = self.const_value(node.input[2], "the bias", node) if len(node.input) > 2 and node.input[2] else None
        a = self.attrs(node)

        def bad(why):
            raise InputError(f"'{self.src}': unsupported ONNX node {_label(node)} ({why}); {_NOT_DEPLOY}")

        if w.ndim != 4 or w.shape[2] != 1 or w.dtype != np.float32:
            bad(f"weight shape {list(w.shape)}")
        if b is not None and (b.shape != (w.shape[0],) or b.dtype != np.float32):
            bad(f"bias shape {list(b.shape)}")
        if a.get("auto_pad", "NOTSET") != "NOTSET":
            bad("auto_pad")
        if list(a.get("dilations", [1, 1])) != [1, 1]:
            bad("dilation")
        k = w.shape[3]
        if list(a.get("kernel_shape", [1, k])) != [1, k]:
            bad("kernel_shape")
        strides = list(a.get("strides", [1, 1]))
        pad = 0 if point else k // 2
        if list(a.get("pads", [0, 0, 0, 0])) != [0, pad, 0, pad] or strides[0] != 1 or strides[1] not in (1, 2):
            bad(f"pads {list(a.get('pads', []))} / strides {strides}")
        group = int(a.get("group", 1))
        if depthwise:
            if w.shape[1:] != (1, 1, 1) or group != w.shape[0] or b is None or strides != [1, 1]:
                bad("not a per-channel affine")
        else:
            if group != 1:
                bad(f"group {group}")
            if point and (k != 1 or strides != [1, 1]):
                bad("not a 1×1 convolution")
            if kernel is not None and k != kernel:
                bad(f"kernel {k}, the stem has {kernel}")
        return w, b, strides[1]

    def out(self, node):
        return node.output[0]

    def is_depthwise(self, node, channels):
        if node.op_type != "Conv" or len(node.input) < 3 or not self._is_const(node.input[1]):
            return False
        a = self.attrs(node)
        shape = self._const_shape(node.input[1])
        return shape is not None and tuple(shape) == (channels, 1, 1, 1) and int(a.get("group", 1)) == channels

    def _const_shape(self, name):
        while name in self.alias:
            name = self.alias[name][0]
        if name in self.init:
            return tuple(self.init[name].dims)
        return None


def _load_onnx(src):
    from ..deps import onnx as _onnx

    onnx = _onnx()
    raw = Path(src).read_bytes()
    try:
        model = onnx.load_model_from_string(raw)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors
        raise InputError(f"'{src}' is neither an ONNX model nor a PyTorch/TorchScript file "
                         f"({type(exc).__name__}); check the file") from None
    if not len(model.graph.node) or not len(model.graph.output):
        raise InputError(f"'{src}' is not a usable ONNX model (empty graph); check the file")
    return raw, model


def _read_stem(w, x, src, state):
    unsq = w.take(x, "Unsqueeze", "Unsqueeze (the 2-D view of the input)")
    if [a % 4 for a in w.axes(unsq)] != [2]:
        raise InputError(f"'{src}': unsupported ONNX node {_label(unsq)} (axes); {_NOT_DEPLOY}")
    stem = w.take(w.out(unsq), "Conv", "the stem convolution")
    sw, sb, ss = w.conv(stem, w.out(unsq))
    if ss != 2 or (sb is not None and np.any(sb != 0)):
        raise InputError(f"'{src}': unsupported ONNX node {_label(stem)} (the stem has stride 2 and no bias); "
                         f"{_NOT_DEPLOY}")
    state["stem.weight"] = sw[:, :, 0, :]
    return w.out(stem), sw.shape[0], sw.shape[3]


def _read_unit(w, h, ch, kernel, i, state, src):
    """One residual unit from its pre-activation affine on; None (and the final BN stored) at the head."""
    dw = w.take(h, "Conv", f"a per-channel affine on {ch} channels (BN)",
                pred=lambda n, c=ch, t=h: n.input[0] == t and w.is_depthwise(n, c))
    s, b, _ = w.conv(dw, h, depthwise=True)
    relu = w.take(w.out(dw), "Relu", "Relu")
    nxt = [w.nodes[j] for j in w.consumers.get(w.out(relu), []) if j not in w.visited]
    if len(nxt) == 1 and nxt[0].op_type == "ReduceMean":
        _put_bn(state, "bn", s[:, 0, 0, 0], b)
        return None, relu
    conv1 = w.take(w.out(relu), "Conv", "conv1 (with BN2 folded)")
    w1, b1, st = w.conv(conv1, w.out(relu), kernel=kernel)
    if w1.shape[1] != ch:
        raise InputError(f"'{src}': unsupported ONNX node {_label(conv1)} (input channels); {_NOT_DEPLOY}")
    co = w1.shape[0]
    r1 = w.take(w.out(conv1), "Relu", "Relu")
    conv2 = w.take(w.out(r1), "Conv", "conv2")
    w2, b2, st2 = w.conv(conv2, w.out(r1), kernel=kernel)
    if st2 != 1 or w2.shape[:2] != (co, co) or (b2 is not None and np.any(b2 != 0)):
        raise InputError(f"'{src}': unsupported ONNX node {_label(conv2)} (conv2 has stride 1, {co}→{co} "
                         f"channels and no bias); {_NOT_DEPLOY}")
    p = f"units.{i}"
    _put_bn(state, f"{p}.bn1", s[:, 0, 0, 0], b)
    state[f"{p}.conv1.weight"] = w1[:, :, 0, :]
    _put_bn(state, f"{p}.bn2", np.ones(co, np.float32), b1 if b1 is not None else np.zeros(co, np.float32))
    state[f"{p}.conv2.weight"] = w2[:, :, 0, :]
    r = w.out(conv2)
    shrink = None
    if any(w.nodes[j].op_type == "Neg" for j in w.consumers.get(r, []) if j not in w.visited):
        r, shrink = _shrink(w, r, co, state, p)
    # residual shortcut: Add(branch, [Concat(] [AveragePool(] h [)] [, zeros)])
    adds = [w.nodes[j] for j in w.consumers.get(r, []) if j not in w.visited and w.nodes[j].op_type == "Add"]
    if not adds:
        return {"h": r, "ch": co, "stride": st, "shrink": shrink, "residual": False}, relu
    add = w.take(r, "Add", "the residual Add")
    if len(add.input) != 2:
        w.fail(r, "the residual Add")
    _shortcut(w, add.input[1] if add.input[0] == r else add.input[0], h, st, ch, co, add)
    return {"h": w.out(add), "ch": co, "stride": st, "shrink": shrink, "residual": True}, relu


def _read_head(w, relu, ch, state, g, src) -> None:
    rm = w.take(w.out(relu), "ReduceMean", "global average pooling")
    w.reduce_mean(rm, [2, 3], 0)
    gemm = w.take(w.out(rm), "Gemm", "the classifier (Gemm)")
    if gemm.input[0] != w.out(rm) or len(gemm.input) != 3:
        w.fail(w.out(rm), "the classifier (Gemm with bias)")
    a = w.attrs(gemm)
    fw = w.const_value(gemm.input[1], "the classifier weight", gemm)
    fb = w.const_value(gemm.input[2], "the classifier bias", gemm)
    if int(a.get("transB", 0)) == 0:
        fw = fw.T
    if (float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0 or int(a.get("transA", 0))
            or fw.ndim != 2 or fw.shape[1] != ch or fb.shape != (fw.shape[0],)):
        raise InputError(f"'{src}': unsupported ONNX node {_label(gemm)} (classifier); {_NOT_DEPLOY}")
    if w.out(gemm) != g.output[0].name:
        w.fail(w.out(gemm), "the graph output")
    state["fc.weight"], state["fc.bias"] = np.ascontiguousarray(fw), fb


def _arch_of(w, g, units, src) -> str:
    """Every node and initializer must belong to the deploy form; one unit kind throughout."""
    for j, n in enumerate(w.nodes):
        if j not in w.visited:
            raise InputError(f"'{src}': unsupported ONNX node {_label(n)}; {_NOT_DEPLOY}")
    for t in g.initializer:
        if t.name not in w.used_init:
            raise InputError(f"'{src}': initializer '{t.name}' is not used by the deploy form; {_NOT_DEPLOY}")
    shrinks, residuals = {u["shrink"] for u in units}, {u["residual"] for u in units}
    if len(shrinks) != 1 or len(residuals) != 1:
        raise InputError(f"'{src}' mixes unit kinds (threshold / residual); the registry models use one kind "
                         f"throughout; {_NOT_DEPLOY}")
    shrink, residual = shrinks.pop(), residuals.pop()
    if shrink and not residual:
        raise InputError(f"'{src}' has threshold units without shortcuts, which no registry model has")
    return f"drsn-{shrink}" if shrink else ("resnet" if residual else "convnet")


def _from_onnx(src) -> dict:
    raw, model = _load_onnx(src)
    g = model.graph
    meta = _onnx_meta(model, src)
    w = _DeployGraph(model, src)
    inputs = [i for i in g.input if i.name not in w.init]
    if len(inputs) != 1 or len(g.output) != 1:
        raise InputError(f"'{src}' has {len(inputs)} inputs and {len(g.output)} outputs; the deploy form has one "
                         f"of each; {_NOT_DEPLOY}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    graph_window = dims[2] if len(dims) == 3 and dims[2] else None
    state = {}
    h, ch, kernel = _read_stem(w, inputs[0].name, src, state)
    units = []
    while True:
        unit, relu = _read_unit(w, h, ch, kernel, len(units), state, src)
        if unit is None:
            break
        units.append(unit)
        h, ch = unit["h"], unit["ch"]
    if not units:
        raise InputError(f"'{src}' has no residual units; {_NOT_DEPLOY}")
    _read_head(w, relu, ch, state, g, src)
    arch = _arch_of(w, g, units, src)

    import torch

    tensors = {k: torch.from_numpy(np.array(v, copy=True, order="C")) for k, v in state.items()}
    batch = dims[0] if dims and dims[0] else 1

    def verify(model):
        return _verify_onnx(raw, model, batch, dims[1] if len(dims) == 3 and dims[1] else 1, graph_window, src)

    return {"state": tensors, "meta": meta, "arch": arch, "window": graph_window,
            "strides": [u["stride"] for u in units], "verify": verify if graph_window else None}


def _put_bn(state, prefix, scale, shift):
    """A BatchNorm1d whose eval output is exactly scale·x + shift (running_var + eps == 1 in float32)."""
    n = scale.shape[0]
    state[f"{prefix}.weight"] = np.asarray(scale, np.float32)
    state[f"{prefix}.bias"] = np.asarray(shift, np.float32)
    state[f"{prefix}.running_mean"] = np.zeros(n, np.float32)
    state[f"{prefix}.running_var"] = np.full(n, np.float32(1.0) - np.float32(BN_EPS), np.float32)
    state[f"{prefix}.num_batches_tracked"] = np.zeros((), np.int64)


def _shrink(w, r, co, state, p):
    """Parse the soft-threshold block after conv2 output `r`; returns (output tensor, 'cw' | 'cs')."""
    src = w.src
    neg = w.take(r, "Neg", "Neg (−x)")
    nx = w.out(neg)
    mx = w.take(r, "Max", "Max(x, −x)", pred=lambda n: sorted(n.input) == sorted([r, nx]) and len(n.input) == 2)
    gap = w.take(w.out(mx), "ReduceMean", "mean |x|")
    w.reduce_mean(gap, [3], 1)
    g = w.out(gap)
    fc1 = w.take(g, "Conv", "threshold fc1 (with its BN folded)", pred=lambda n: n.input[0] == g)
    w1, b1, _ = w.conv(fc1, g, point=True)
    relu = w.take(w.out(fc1), "Relu", "Relu")
    fc2 = w.take(w.out(relu), "Conv", "threshold fc2")
    w2, b2, _ = w.conv(fc2, w.out(relu), point=True)
    if w1.shape[:2] != (co, co) or b1 is None or w2.shape[1] != co or w2.shape[0] not in (1, co) or b2 is None:
        raise InputError(f"'{src}': unsupported ONNX node {_label(fc1 if w1.shape[:2] != (co, co) else fc2)} "
                         f"(threshold layer shapes); {_NOT_DEPLOY}")
    sig = w.take(w.out(fc2), "Sigmoid", "Sigmoid")
    s = w.out(sig)
    mul = w.take(s, "Mul", "α · mean|x|", pred=lambda n: len(n.input) == 2)
    other = mul.input[1] if mul.input[0] == s else mul.input[0]
    if other == g:
        kind = "cw"
    else:
        pi = w.producer.get(other)
        node = w.nodes[pi] if pi is not None else None
        if node is None or node.op_type != "ReduceMean" or node.input[0] != g or pi in w.visited:
            w.fail(s, "α · mean|x|")
        w.visited.add(pi)
        w.reduce_mean(node, [1], 1)
        kind = "cs"
    if (kind == "cw") != (w2.shape[0] == co) and co != 1:
        raise InputError(f"'{src}': unsupported ONNX node {_label(fc2)} ({w2.shape[0]} outputs does not match a "
                         f"{'channel-wise' if kind == 'cw' else 'channel-shared'} threshold); {_NOT_DEPLOY}")
    tau = w.out(mul)
    s1 = w.take(tau, "Sub", "x − τ", inputs=[r, tau])
    s2 = w.take(tau, "Sub", "−x − τ", inputs=[nx, tau])
    ra = w.take(w.out(s1), "Relu", "Relu")
    rb = w.take(w.out(s2), "Relu", "Relu")
    s3 = w.take(w.out(ra), "Sub", "relu(x − τ) − relu(−x − τ)", inputs=[w.out(ra), w.out(rb)])
    state[f"{p}.threshold.fc1.weight"] = w1[:, :, 0, 0]
    state[f"{p}.threshold.fc1.bias"] = np.zeros(co, np.float32)
    _put_bn(state, f"{p}.threshold.bn", np.ones(co, np.float32), b1)
    state[f"{p}.threshold.fc2.weight"] = w2[:, :, 0, 0]
    state[f"{p}.threshold.fc2.bias"] = b2
    return w.out(s3), kind


def _shortcut(w, t, h, stride, c_in, c_out, add):
    """Check that tensor `t` is the unit input `h`, subsampled by `stride`, zero-padded to `c_out`."""
    src = w.src

    def bad(node, why):
        raise InputError(f"'{src}': unsupported ONNX node {_label(node)} ({why}); {_NOT_DEPLOY}")

    def producer(name):
        i = w.producer.get(name)
        if i is None or i in w.visited:
            bad(add, "the shortcut is not the unit input")
        w.visited.add(i)
        return w.nodes[i]

    if c_out != c_in:
        cat = producer(t)
        if cat.op_type != "Concat" or len(cat.input) != 2 or int(w.attrs(cat).get("axis", 0)) % 4 != 1:
            bad(cat, "expected Concat of the shortcut and zero channels")
        zeros = w.const_value(cat.input[1], "the padding channels", cat)
        if zeros.ndim != 4 or zeros.shape[1] != c_out - c_in or np.any(zeros != 0):
            bad(cat, "the padding channels are not zeros")
        t = cat.input[0]
    if stride != 1:
        pool = producer(t)
        a = w.attrs(pool)
        if (pool.op_type != "AveragePool" or list(a.get("kernel_shape", [])) != [1, 1]
                or list(a.get("strides", [1, 1])) != [1, stride] or any(a.get("pads", [0, 0, 0, 0]))
                or int(a.get("ceil_mode", 0)) or a.get("auto_pad", "NOTSET") != "NOTSET"):
            bad(pool, f"expected AveragePool of size 1, stride {stride}")
        t = pool.input[0]
    if t != h:
        bad(add, "the shortcut is not the unit input")


def _onnx_meta(model, src) -> dict:
    props = {p.key: p.value for p in model.metadata_props}
    meta = {}
    try:
        if "drsn_edge.class_names" in props:
            meta["class_names"] = json.loads(props["drsn_edge.class_names"])
        if "drsn_edge.fs" in props:
            meta["fs"] = float(props["drsn_edge.fs"])
        if "drsn_edge.window" in props:
            meta["window"] = int(float(props["drsn_edge.window"]))
        if "drsn_edge.config" in props:
            cfg = json.loads(props["drsn_edge.config"])
            if isinstance(cfg, dict):
                meta["config"] = cfg
    except ValueError as exc:
        raise InputError(f"'{src}' has unreadable drsn_edge metadata ({exc}); pass fs, window and class_names "
                         "instead after removing the metadata") from None
    if "drsn_edge.normalization" in props:
        meta["normalization"] = props["drsn_edge.normalization"]
    if "drsn_edge.arch" in props:
        meta["arch"] = props["drsn_edge.arch"]
    return meta


def _verify_onnx(raw, model, batch, channels, window, src) -> dict | None:
    """Run the ONNX graph and the rebuilt model on one random batch; they must agree."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import torch

    x = np.random.default_rng(0).standard_normal((batch, channels, window)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(raw, opts, providers=["CPUExecutionProvider"])
        ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    except Exception as exc:  # noqa: BLE001 - the graph itself does not run
        raise InputError(f"'{src}' does not run in ONNX Runtime ({type(exc).__name__}); check the file") from None
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    diff = float(np.abs(got.astype(np.float64) - ref).max())
    tol = 1e-4 * (1.0 + float(np.abs(ref).max()))
    if not diff <= tol:
        raise CheckFailedError(f"the imported model differs from '{src}' by {diff:.3g} (tolerance {tol:.3g}); "
                               "please report this graph")
    return {"max_abs_diff": diff, "tolerance": tol}
