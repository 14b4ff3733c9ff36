"""Layer names and MACs of the deploy graph, shared by every runtime's profiler hook.

The deploy graph's ops are named after the torch module that produced them: ONNX node names carry the
export scope (`/units/units.3/shrink/fc2/Conv`), litert-torch names each tensor after its module path
(`…DeployNet/…Sequential_units/…DeployUnit_3/…Threshold_shrink/…Conv2d_fc2;2`). Both map back to the
model's own dotted names (`units.3.shrink.fc2`). Blocks: `stem`, `units.N` (one per residual unit) and
`head`; an op inside `units.N.shrink` belongs to the shrinkage (soft-threshold) branch."""

from __future__ import annotations

import re

_UNIT = re.compile(r"^units\.(\d+)")


def onnx_node_module(node_name: str) -> str:
    """`/units/units.3/shrink/fc2/Conv` → `units.3.shrink.fc2`; a root-level node → "" (no module)."""
    segs = [s for s in node_name.split("/") if s][:-1]  # the last segment is the op's own name
    path: list[str] = []
    for seg in segs:
        if "." in seg:  # a container child is named by its full dotted path
            path = seg.split(".")
        else:
            path.append(seg)
    return ".".join(path)


_CONTAINERS = ("Sequential", "DeployUnit", "DeployNet")


def _tflite_piece(piece: str) -> tuple[list[str], bool]:
    """(module path, whether it ends in a layer rather than a container) of one scope."""
    path, leaf = [], False
    for seg in piece.split("/")[1:]:  # the first segment is the root module's class
        cls_attr = seg.rsplit(".", 1)[-1]  # `torch.nn.modules.conv.Conv2d_fc2` → `Conv2d_fc2`
        if "_" in cls_attr:
            cls, attr = cls_attr.split("_", 1)
            path.append(attr)
            leaf = cls not in _CONTAINERS
    return path, leaf


def tflite_tensor_module(tensor_name: str) -> str:
    """The module path in a litert-torch tensor name. A tensor that several scopes share is named by
    all of them (`;`-joined): a scope ending in a layer wins over a container, then the deepest."""
    best, best_key = [], (False, 0)
    for piece in tensor_name.split(";"):
        if "/" in piece:
            p, leaf = _tflite_piece(piece)
            if (leaf, len(p)) > best_key:
                best, best_key = p, (leaf, len(p))
    return ".".join(best)


def block_of(module: str, after_units: bool = False) -> str:
    """`stem`, `units.N` or `head` for a module path; a root-level op goes to the stem before the units
    and to the head after them."""
    m = _UNIT.match(module)
    if m:
        return f"units.{m.group(1)}"
    if module.startswith("op "):  # a .tflite built before its sidecar named the layers
        return "unmapped"
    if module.startswith("stem"):
        return "stem"
    if module == "guard" or module.startswith("guard."):  # the exported domain guard's taps and score
        return "guard"
    if module:
        return "head"
    return "head" if after_units else "stem"


def block_rank(block: str) -> tuple[int, int]:
    """Order of the blocks in a report: stem, the units in order, head, the domain guard, anything else."""
    m = _UNIT.match(block)
    if m:
        return 1, int(m.group(1))
    return {"stem": (0, 0), "head": (2, 0), "guard": (3, 0)}.get(block, (4, 0))


def in_shrinkage(module: str) -> bool:
    parts = module.split(".")
    return len(parts) >= 3 and parts[0] == "units" and parts[2] == "shrink"


def _unit_index(module: str) -> int | None:
    m = _UNIT.match(module)
    return int(m.group(1)) if m else None


def assign_modules(names: list[str]) -> list[str]:
    """Give every op of an execution-ordered list a place: a root-level ("") op goes to the stem before
    the first unit and to the head after; an op named after an earlier unit than the one already
    running (a scope that a shared tensor's name kept) stays in the running block."""
    out: list[str] = []
    seen_unit, current, in_head = False, -1, False
    for n in names:
        if block_of(n) == "guard":  # the guard's ops run where their taps are ready, in no block's order
            out.append(n)
            continue
        idx = _unit_index(n)
        if idx is not None and (idx < current or in_head):
            n = out[-1] if out else n
        elif idx is not None:
            current, seen_unit = idx, True
        elif n and not n.startswith("stem"):
            in_head = True
        if not n:
            n = block_of("", seen_unit)
            in_head = in_head or seen_unit
        out.append(n)
    return out


def conv_macs(out_numel: int, in_channels_per_group: int, kernel_elems: int) -> int:
    return int(out_numel) * int(in_channels_per_group) * int(kernel_elems)


# a TensorRT layer name carries the ONNX node names it was built from: alone (`/units/units.3/shrink/fc2/Conv`),
# fused (`/a/Conv + /a/Relu`), in a pointwise fusion (`PWN(/a/Sigmoid, /a/Mul)`), as a region
# (`{ForeignNode[/a/Abs.../a/Sub_1]}`), after a reformat (`Reformatting CopyNode for Input Tensor 0 to /a/Conv`),
# or as a weight (`units.0.conv1.weight_DequantizeLinear`)
_TRT_NODE = re.compile(r"(?<![\w.])/[\w.\-/]+")
_TRT_WEIGHT = re.compile(r"(?<![\w./])([A-Za-z_]\w*(?:\.\w+)*)\.(?:weight|bias)(?![A-Za-z0-9])")
_MAC_OPS = re.compile(r"^(Conv|Gemm|MatMul|QLinearConv)(_\d+)?$")


def trt_layer_nodes(layer: str) -> list[str]:
    """The ONNX node names inside a TensorRT layer name, in order (a region's `first...last` gives both)."""
    return _TRT_NODE.findall(layer.replace("...", " "))


def trt_layer_modules(layer: str) -> list[str]:
    """The model's module paths a TensorRT layer covers, in order (first: the layer's own place)."""
    mods = [onnx_node_module(n) for n in trt_layer_nodes(layer)] + [m.group(1) for m in _TRT_WEIGHT.finditer(layer)]
    return list(dict.fromkeys(m for m in mods if m))


def trt_layer_op_type(layer: str) -> str:
    """What a TensorRT layer runs, from its name: the ONNX ops it fused (`Conv+Relu`), a reformat, or a
    fused region (Myelin's ForeignNode)."""
    if layer.startswith("Reformatting"):
        return "Reformat"
    if "ForeignNode" in layer:
        return "ForeignNode"
    ops = [re.sub(r"_\d+$", "", n.rsplit("/", 1)[-1]) for n in trt_layer_nodes(layer)]
    ops = [o.rsplit("_", 1)[-1] if o.endswith(("QuantizeLinear", "DequantizeLinear")) else o for o in ops]
    return "+".join(dict.fromkeys(ops)) or layer.split("_")[-1] or "?"


def trt_mac_nodes(layer: str) -> list[str]:
    """The modules of the convolutions / matrix products a TensorRT layer runs (their MACs are its own; a
    reformat only names the layer it feeds)."""
    if layer.startswith("Reformatting"):
        return []
    return [onnx_node_module(n) for n in trt_layer_nodes(layer) if _MAC_OPS.match(n.rsplit("/", 1)[-1])]
