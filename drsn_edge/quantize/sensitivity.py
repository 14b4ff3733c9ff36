"""Per-layer-group quantization sensitivity and the smallest float fallback that meets a drop target.

Groups follow the network: the stem, each residual (shrinkage) unit, and the head. `only` quantizes
one group (all others float); `leave_out` quantizes everything except one group. The mixed-precision
search leaves groups in float, most sensitive first, until the accuracy drop meets the target; those
groups run in FP16 on TensorRT and are recorded in the artifact sidecar.
"""

from __future__ import annotations

import re
from typing import Callable

import onnx


def node_groups(float_bytes: bytes) -> dict[str, list[str]]:
    """Node names of the deploy-form ONNX, by layer group (stem, unitN, head)."""
    groups: dict[str, list[str]] = {}
    for node in onnx.load_from_string(float_bytes).graph.node:
        m = re.match(r"/units/units\.(\d+)/", node.name)
        if m:
            g = f"unit{int(m.group(1))}"
        elif node.name.startswith("/stem/"):
            g = "stem"
        else:
            g = "head"
        groups.setdefault(g, []).append(node.name)
    return groups


def analyse(groups: dict[str, list[str]], drop_with_float: Callable[[list[str]], float], progress=None) -> list[dict]:
    """drop_with_float(float_group_names) → accuracy drop in pp. Returns rows ranked by sensitivity."""
    names = list(groups)
    rows = []
    for i, g in enumerate(names):
        only = drop_with_float([h for h in names if h != g])
        leave_out = drop_with_float([g])
        rows.append({"group": g, "nodes": len(groups[g]), "only_this_int8_drop_pp": only,
                     "all_but_this_int8_drop_pp": leave_out})
        if progress:
            progress(i + 1, len(names))
    full = drop_with_float([])
    for r in rows:
        r["gain_if_float_pp"] = full - r["all_but_this_int8_drop_pp"]
    rows.sort(key=lambda r: (-r["only_this_int8_drop_pp"], -r["gain_if_float_pp"]))
    return rows


def auto_mixed(ranked: list[dict], drop_with_float: Callable[[list[str]], float], max_drop_pp: float) -> dict:
    """Greedy: keep the most sensitive groups in float until the drop meets the target."""
    chosen: list[str] = []
    drop = drop_with_float([])
    trail = [{"float_groups": [], "drop_pp": drop}]
    order = sorted(ranked, key=lambda r: -max(r["gain_if_float_pp"], r["only_this_int8_drop_pp"]))
    for r in order:
        if drop <= max_drop_pp:
            break
        chosen.append(r["group"])
        drop = drop_with_float(list(chosen))
        trail.append({"float_groups": list(chosen), "drop_pp": drop})
    return {"float_groups": chosen, "drop_pp": drop, "met": drop <= max_drop_pp, "trail": trail}
