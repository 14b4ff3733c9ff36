"""The kernels of a generated C engine, in call order, as the profiler needs them: label (`CONV_2D#5`, the
index `i` of DRSN_KERNEL_BEGIN(i)), the .tflite ops each one runs, op type, MACs. Derived from the .tflite
by the same lowering the generator used (read_graph + lower are deterministic), so a build folder's
artifact gives its engine's kernel list without regenerating anything."""

from __future__ import annotations

from .graph import Graph, read_graph
from .lower import lower

_DATA_MOVES = ("RESHAPE", "TRANSPOSE")


def _lut_ops(g: Graph, out: int, src: int) -> list[int]:
    """The element-wise ops folded into a lookup table: walk back from its output tensor to its source."""
    found, todo, seen = [], [out], set()
    while todo:
        t = todo.pop()
        if t == src or t in seen:
            continue
        seen.add(t)
        op = g.producer(t)
        if op is None:
            continue
        found.append(op.index)
        todo += [i for i in op.inputs if i >= 0 and g.t(i).data is None]
    return sorted(found)


def kernel_table(tflite_bytes: bytes, op_modules: list[str] | None = None) -> list[dict]:
    """One row per kernel call of drsn_infer: index, label, kind, ops (.tflite op indices), op_type, MACs and
    the module (the model's own layer name, from the build's `op_modules`; `op N` without them)."""
    from .codegen import SINGLE_ROUNDING

    g = read_graph(tflite_bytes)
    low = lower(g, SINGLE_ROUNDING)
    rows = []
    for i, n in enumerate(low.nodes):
        ops = list(n.ops) if n.ops else _lut_ops(g, n.output, n.inputs[0])
        kinds = [g.ops[o].kind for o in ops if g.ops[o].kind not in _DATA_MOVES]
        op_type = f"LUT({'+'.join(kinds)})" if n.kind == "lut" else (kinds[-1] if kinds else n.label.split("#")[0])
        last = ops[-1] if ops else None
        if last is not None and op_modules and len(op_modules) == len(g.ops):
            module = op_modules[last]
        else:
            module = f"op {last}"
        rows.append({"index": i, "label": n.label, "kind": n.kind, "ops": ops, "op_type": op_type,
                     "macs": int(n.macs), "module": module})
    return rows
