"""Generate the float32 host engine for a float ONNX graph: one C file with the weights, a static buffer
per stored tensor and `drsn_f32_infer`, which calls the kernels of csrc/drsn_f32_kernels.h with literal
shapes and runs the fused elementwise loops written out here (see f32graph.py for what is fused).

A graph with more outputs than the logits (the domain guard's taps) fills one output buffer: the logits, then
each further output in graph order (drsn_f32_taps_size values in all); without them the file declares no
drsn_f32_taps_size and is what it was before taps existed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import write_bytes, write_json
from .f32graph import F32Graph, Kernel, read_f32_graph

CSRC = Path(__file__).with_name("csrc")
KERNELS_H = "drsn_f32_kernels.h"
MODEL_C = "drsn_f32_model.c"
META = "drsn_f32_engine.json"  # kernels, MACs and layer names (for the profiler)
PAD = 16  # DRSN_F32_PAD in the kernels header
RED = 16  # partial sums per reduction (one vector register of floats on AVX-512)


def _lit(v) -> str:
    """A float32 value as an exact C literal (hexadecimal float)."""
    f = float(np.float32(v))
    if not np.isfinite(f):
        raise InputError("the float host engine found a weight that is not finite; retrain or re-export the model")
    return f"{f.hex()}f"


def plan_slots(g: F32Graph) -> dict[str, str]:
    """A static buffer for each stored tensor, shared by tensors of the same [C, L] whose lives do not
    overlap: the working set stays in the first-level cache. Only the same shape shares a buffer, so the
    zero pads around each row (never written) stay zero."""
    outs = [k.params.get("outs", [k.out]) for k in g.kernels]
    last = {}
    for i, k in enumerate(g.kernels):
        for t in k.inputs:
            last[t] = i
    for t in [g.output] + [t for _, t in g.extra]:
        last[t] = len(g.kernels)
    slots, free, n = {}, {}, 0
    for i, k in enumerate(g.kernels):
        for t in outs[i]:
            pool = free.setdefault(g.shapes[t], [])
            if pool:
                slots[t] = pool.pop()
            else:
                slots[t], n = f"b_{n}", n + 1
        for t in dict.fromkeys(k.inputs + outs[i]):  # in order: the same buffers on every run
            if t in slots and last.get(t, i) <= i:
                free.setdefault(g.shapes[t], []).append(slots[t])
    return slots


class _Emit:
    def __init__(self, g: F32Graph):
        self.g = g
        self.decls: list[str] = []
        self.body: list[str] = []
        self.slots = plan_slots(g)
        self.bufs: dict[str, int] = {}  # buffer → floats
        self.const_names: dict[str, str] = {}
        self.scratch = 4

    # -------------------------------------------------------------------------------- storage
    def const(self, values, name: str) -> str:
        vals = np.asarray(values, np.float32).reshape(-1)
        lines = [", ".join(_lit(v) for v in vals[i:i + 8]) for i in range(0, len(vals), 8)]
        self.decls.append(f"static const float {name}[{max(len(vals), 1)}] = {{\n  " + ",\n  ".join(lines or ["0"])
                          + "\n};\n")
        return name

    def tensor_const(self, t: str) -> str:
        if t not in self.const_names:
            self.const_names[t] = self.const(self.g.consts[t], f"k_{len(self.const_names)}")
        return self.const_names[t]

    def buf(self, t: str) -> str:
        name = self.slots[t]
        if name not in self.bufs:
            c, length = self.g.shapes[t]
            self.bufs[name] = n = c * (length + 2 * PAD) if length > 1 else c
            self.decls.append(f"static float {name}[{n}] __attribute__((aligned(64))); /* {c}x{length} */\n")
        return name

    def row(self, t: str, c: str) -> str:
        """Address of the first value of row c of a stored tensor."""
        _, length = self.g.shapes[t]
        return f"{self.buf(t)} + ({c}) * {length + 2 * PAD} + {PAD}" if length > 1 else f"{self.buf(t)} + ({c})"

    # -------------------------------------------------------------------------------- expressions
    def leaf(self, t: str, it: tuple[int, int]) -> str:
        from .f32graph import _const_view

        cs, ls = _const_view(np.asarray(self.g.consts[t])) if t in self.g.consts else self.g.shapes[t]
        if cs not in (1, it[0]) or ls not in (1, it[1]):
            raise InputError(f"tensor '{t}' of shape {cs}×{ls} does not broadcast to {it[0]}×{it[1]}")
        row = "c" if cs > 1 else "0"
        col = "t" if ls > 1 else "0"
        if t in self.g.consts:
            return f"{self.tensor_const(t)}[{row} * {ls} + {col}]"
        return f"{self.buf(t)}[{row} * {ls + 2 * PAD} + {PAD} + t]" if ls > 1 else f"{self.buf(t)}[{row}]"

    def stmts(self, nodes: list, it: tuple[int, int], stop=None) -> tuple[list[str], str, dict]:
        """One statement per node of a loop body; (statements, the last value, tensor → value)."""
        r = self.g.reader
        names: dict[str, str] = {}
        lines = []
        for k, n in enumerate(nodes if stop is None else nodes[:stop]):
            a = [names.get(r.real(i)) or self.leaf(r.real(i), it) for i in n.input if i]
            lines.append(f"const float v{k} = {self.op(n, a)};")
            names[n.output[0]] = f"v{k}"
        return lines, f"v{len(lines) - 1}", names

    def op(self, n, a: list[str]) -> str:
        t = n.op_type
        if t == "Conv":  # depthwise 1×1: per-channel affine
            return f"{a[1]} * {a[0]}" + (f" + {a[2]}" if len(a) > 2 else "")
        if t in ("Max", "Min"):
            e, cmp = a[0], ">" if t == "Max" else "<"
            for b in a[1:]:
                e = f"(({e}) {cmp} ({b}) ? ({e}) : ({b}))"
            return e
        return {"Relu": lambda: f"{a[0]} > 0.0f ? {a[0]} : 0.0f", "Neg": lambda: f"-{a[0]}",
                "Add": lambda: f"{a[0]} + {a[1]}", "Sub": lambda: f"{a[0]} - {a[1]}",
                "Mul": lambda: f"{a[0]} * {a[1]}", "Div": lambda: f"{a[0]} / {a[1]}",
                "Sigmoid": lambda: f"1.0f / (1.0f + expf(-{a[0]}))", "Abs": lambda: f"fabsf({a[0]})"}[t]()

    # -------------------------------------------------------------------------------- kernels
    def kernel(self, i: int, k: Kernel) -> None:
        getattr(self, f"k_{k.kind}")(k)
        self.body[-1] = f"  DRSN_K_BEGIN({i});\n{self.body[-1]}\n  DRSN_K_END({i}); /* {k.op_type} {k.name} */"

    def k_input(self, k: Kernel) -> None:
        c, length = self.g.shapes[k.out]
        self.body.append(f"  for (int c = 0; c < {c}; c++) memcpy({self.row(k.out, 'c')}, in + c * {length}, "
                         f"{length} * sizeof(float));")

    def k_conv(self, k: Kernel) -> None:
        q = k.params
        w = self.const(q["w"], f"w_{len(self.decls)}")
        b = self.const(q["b"], f"bias_{len(self.decls)}") if q["b"] is not None else "0"
        (c_in, l_in), (_, l_out) = self.g.shapes[k.inputs[0]], self.g.shapes[k.out]
        if q["s"] > 1:
            ppad = (q["p"] + q["s"] - 1) // q["s"] + 1
            self.scratch = max(self.scratch, c_in * q["s"] * (q["len"] + 2 * ppad + (q["k"] + q["s"] - 1) // q["s"]))
        self.body.append(f"  drsn_f32_conv({q['co']}, {q['ci']}, {q['k']}, {q['s']}, {q['p']}, {q['len']}, {w}, {b}, "
                         f"{q.get('relu', 0)}, {self.buf(k.inputs[0])}, {l_in + 2 * PAD}, {self.buf(k.out)}, "
                         f"{l_out + 2 * PAD}, scratch);")

    def k_fc(self, k: Kernel) -> None:
        q = k.params
        w = self.const(q["w"], f"w_{len(self.decls)}")
        b = self.const(q["b"], f"bias_{len(self.decls)}") if q["b"] is not None else "0"
        self.body.append(f"  drsn_f32_fc({q['no']}, {q['ni']}, {w}, {b}, {q.get('relu', 0)}, {self.buf(k.inputs[0])}, "
                         f"{self.buf(k.out)});")

    def k_eltwise(self, k: Kernel) -> None:
        c, length = k.params["iter"]
        lines, _, names = self.stmts(k.nodes, (c, length))
        for t in k.params.get("outs", [k.out]):
            dst = f"{self.buf(t)}[c * {length + 2 * PAD} + {PAD} + t]" if length > 1 else f"{self.buf(t)}[c]"
            lines.append(f"{dst} = {names[t]};")
        body = "\n      ".join(lines)
        self.body.append(f"  for (int c = 0; c < {c}; c++)\n    for (int t = 0; t < {length}; t++) {{\n"
                         f"      {body}\n    }}")

    def k_mean(self, k: Kernel) -> None:
        c, length = k.params["iter"]
        lines, last, _ = self.stmts(k.nodes, (c, length), stop=-1)
        if not lines:
            lines, last = [], self.leaf(self.g.reader.real(k.nodes[-1].input[0]), (c, length))
        body = " ".join(lines)
        if k.params["axis"] == "c":
            dst = self.row(k.out, "0")
            self.body.append(f"  for (int t = 0; t < {length}; t++) {{\n    float sum = 0.0f;\n"
                             f"    for (int c = 0; c < {c}; c++) {{ {body} sum += {last}; }}\n"
                             f"    ({dst})[t] = sum / {float(c)!r}f;\n  }}")
            return
        vend = length - length % RED
        self.body.append(
            f"  for (int c = 0; c < {c}; c++) {{\n    float acc[{RED}] = {{0}}, sum = 0.0f;\n"
            f"    for (int t0 = 0; t0 < {vend}; t0 += {RED})\n      for (int j = 0; j < {RED}; j++) {{\n"
            f"        const int t = t0 + j; {body} acc[j] += {last};\n      }}\n"
            f"    for (int j = 0; j < {RED}; j++) sum += acc[j];\n"
            f"    for (int t = {vend}; t < {length}; t++) {{ {body} sum += {last}; }}\n"
            f"    {self.buf(k.out)}[c] = sum / {float(length)!r}f;\n  }}")

    def k_subsample(self, k: Kernel) -> None:
        (c, length), (_, l_in) = self.g.shapes[k.out], self.g.shapes[k.inputs[0]]
        if length == 1 or l_in == 1:
            raise InputError(f"the float host engine subsamples along time only ({k.name})")
        self.body.append(f"  drsn_f32_subsample({c}, {length}, {k.params['s']}, {self.buf(k.inputs[0])}, "
                         f"{l_in + 2 * PAD}, {self.buf(k.out)}, {length + 2 * PAD});")

    def k_concat(self, k: Kernel) -> None:
        from .f32graph import _const_view

        _, length = self.g.shapes[k.out]
        at, parts = 0, []
        for t in k.inputs:
            if t in self.g.consts:
                cs, ls = _const_view(np.asarray(self.g.consts[t]))
                vals = np.broadcast_to(np.asarray(self.g.consts[t], np.float32).reshape(cs, ls), (cs, length))
                src = None if not vals.any() else self.const(vals, f"k_cat_{len(self.decls)}")
            else:
                cs, src = self.g.shapes[t][0], None
            for c in range(cs):
                dst = self.row(k.out, str(at + c))
                if t not in self.g.consts:
                    parts.append(f"memcpy({dst}, {self.row(t, str(c))}, {length} * sizeof(float));")
                elif src is None:
                    parts.append(f"memset({dst}, 0, {length} * sizeof(float));")
                else:
                    parts.append(f"memcpy({dst}, {src} + {c * length}, {length} * sizeof(float));")
            at += cs
        self.body.append("  " + "\n  ".join(parts))


def _model_c(em: _Emit, n_kernels: int, taps: list[tuple[str, int]]) -> str:
    g = em.g
    size = sum(n for _, n in taps)
    layout = "".join(f"\n *   {n:4d} {name}" for name, n in taps)
    out_doc = (" logits,\n * then drsn_f32_taps_size tap values, output by output:" + layout + "\n *" if taps
               else " logits.\n *")
    return ("/* generated by drsn-edge: the float32 host engine (weights, buffers, drsn_f32_infer) */\n"
            "#include <math.h>\n#include <string.h>\n"
            f"#define DRSN_F32_NUM_KERNELS {n_kernels}\n#include \"{KERNELS_H}\"\n\n"
            f"const int drsn_f32_num_kernels = {n_kernels};\nconst int drsn_f32_input_size = "
            f"{int(np.prod(g.in_shape))};\nconst int drsn_f32_output_size = {g.out_size};\n"
            + (f"const int drsn_f32_taps_size = {size};\n" if taps else "")
            + f"static float scratch[{em.scratch}] __attribute__((aligned(64), unused));\n\n" + "".join(em.decls)
            + f"\n/* One window: `in` holds drsn_f32_input_size floats, `out` receives drsn_f32_output_size{out_doc}"
            " Not reentrant (static buffers). Returns 0. */\n"
            "int drsn_f32_infer(const float *in, float *out) {\n" + "\n".join(em.body) + "\n  return 0;\n}\n")


def _module(k: Kernel, node_module) -> str:
    """The layer a fused kernel belongs to: the one most of its nodes come from (the first on a tie)."""
    mods = [node_module(n.name) for n in k.nodes]
    return max(mods, key=mods.count) if mods else "stem"


def generate_f32(onnx_bytes: bytes, out_dir: Path) -> dict:
    """Write the float host engine for a float ONNX graph into out_dir; return what was written."""
    from ..layers import onnx_node_module

    g = read_f32_graph(onnx_bytes)
    em = _Emit(g)
    for i, k in enumerate(g.kernels):
        em.kernel(i, k)
    at, taps = 0, []
    for name, t in [("", g.output)] + g.extra:
        c, length = g.shapes[t]
        if name and length == 1:  # a vector (the taps): one copy
            em.body.append(f"  memcpy(out + {at}, {em.buf(t)}, {c} * sizeof(float)); /* {name} */")
        else:
            dst = f"out + {at} + c * {length}" if at else f"out + c * {length}"
            em.body.append(f"  for (int c = 0; c < {c}; c++) memcpy({dst}, {em.row(t, 'c')}, {length} * sizeof(float));")
        taps += [(name, c * length)] if name else []
        at += c * length
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(out_dir / MODEL_C, _model_c(em, len(g.kernels), taps).encode())
    write_bytes(out_dir / KERNELS_H, (CSRC / KERNELS_H).read_bytes())
    meta = {"kernels": [{"name": k.name, "op_type": k.op_type, "kind": k.kind, "macs": int(k.macs),
                         "module": _module(k, onnx_node_module), "nodes": [n.name for n in k.nodes]}
                        for k in g.kernels],
            "onnx_nodes": len(g.reader.nodes), "input_size": int(np.prod(g.in_shape)), "output_size": g.out_size,
            "macs": int(sum(k.macs for k in g.kernels)),
            "taps": [{"name": name, "size": n} for name, n in taps], "taps_size": int(sum(n for _, n in taps)),
            "buffer_bytes": 4 * int(sum(em.bufs.values()))}
    write_json(out_dir / META, meta)
    return meta
