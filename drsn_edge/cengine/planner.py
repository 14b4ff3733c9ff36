"""Static memory plan: every runtime tensor gets an offset in one arena. Buffers whose lifetimes
(first write .. last read, in kernel order) do not overlap share bytes; an element-wise kernel
writes in place over an input that dies there. Greedy placement, largest buffer first (the
strategy of TFLM's GreedyMemoryPlanner)."""

from __future__ import annotations

from dataclasses import dataclass

ALIGN = 4


@dataclass
class Plan:
    offsets: dict[int, int]        # tensor -> arena offset (the graph input is not in the arena)
    scratch: dict[int, int]        # node index -> arena offset of its int32 scratch
    arena_bytes: int
    inplace: list[int]             # node indices that run in place


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan(nodes, sizes: dict[int, int], graph_input: int, graph_output, consts) -> Plan:
    """nodes: lowered Nodes (inputs/outputs already resolved through aliases); graph_output: a tensor or several
    (the logits and the guard's taps), all alive until the end."""
    outputs = {graph_output} if isinstance(graph_output, int) else set(graph_output)
    owner: dict[int, int] = {}            # tensor -> buffer id (the tensor that owns the bytes)
    start: dict[int, int] = {}
    end: dict[int, int] = {}
    size: dict[int, int] = {}
    inplace_nodes = []

    def last_read(t: int, after: int) -> int:
        reads = [i for i, n in enumerate(nodes) if t in n.inputs and i >= after]
        return max(reads) if reads else after

    for i, n in enumerate(nodes):
        reused = None
        for pos in n.inplace:
            src = n.inputs[pos]
            if src == graph_input or src in consts or src not in owner:
                continue
            buf = owner[src]
            if size[buf] == sizes[n.output] and end[buf] == i and n.inputs.count(src) == 1:
                reused = buf
                break
        if reused is not None:
            owner[n.output] = reused
            inplace_nodes.append(i)
        else:
            owner[n.output] = n.output
            start[n.output], size[n.output] = i, sizes[n.output]
            end[n.output] = i
        buf = owner[n.output]
        end[buf] = max(end[buf], len(nodes) if n.output in outputs else last_read(n.output, i))

    items = [(size[b], start[b], end[b], ("t", b)) for b in size]
    items += [(n.scratch, i, i, ("s", i)) for i, n in enumerate(nodes) if n.scratch]
    items.sort(key=lambda it: (-it[0], it[1]))
    placed: list[tuple[int, int, int, int]] = []   # (offset, size, start, end)
    where: dict = {}
    for sz, s, e, key in items:
        off = 0
        for o, osz, os_, oe in sorted(placed):
            if oe < s or os_ > e:
                continue
            if off + _align(sz) <= o:
                break
            off = max(off, _align(o + osz))
        placed.append((off, sz, s, e))
        where[key] = off
    offsets = {t: where[("t", b)] for t, b in owner.items()}
    scratch = {i: where[("s", i)] for i, n in enumerate(nodes) if n.scratch}
    arena = max((_align(o + sz) for o, sz, _, _ in placed), default=0)
    return Plan(offsets, scratch, arena, inplace_nodes)
