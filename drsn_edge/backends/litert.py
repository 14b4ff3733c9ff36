"""LiteRT backend (the `host` profile): the int8 .tflite run by LiteRT (TensorFlow Lite) on this machine."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .base import Backend, BuildContext, BuildOutput, RunnerBase
from .tflite import Int8Options as Options
from .tflite import Int8RunnerBase


def build(ctx: BuildContext) -> BuildOutput:
    from ..guard_export import tflite_guard
    from .tflite import calibration_details, int8_tflite, write_tflite

    q, graph = int8_tflite(ctx, guard_taps=True)
    guard = tflite_guard(ctx.bundle, q, graph, ctx.calib_x, source="litert")  # LiteRT's own int8 taps
    name = write_tflite(ctx, q, graph, "litert", guard=guard)
    return BuildOutput(artifact=name, details={"op_counts": graph["op_counts"], "bytes": len(q),
                                                 **calibration_details(graph)})


class LiteRTRunner(Int8RunnerBase, RunnerBase):
    """LiteRT in this process (XNNPACK where it takes the graph, LiteRT's own kernels otherwise). The logits
    are the subgraph's first output and the guard's taps the ones after it, found by tensor index."""

    def __init__(self, tflite_bytes: bytes, name: str = "litert (int8)", op_modules: list[str] | None = None,
                 guard: dict | None = None):
        RunnerBase.__init__(self)
        from .tflite import _interpreter, output_details

        self.name = name
        self.model = bytes(tflite_bytes)
        self.op_modules = op_modules  # layer name of each op (the build's sidecar), for profile_ops
        self.interp = _interpreter(tflite_bytes)
        outs = output_details(self.interp, self.model)
        self.inp, self.out = self.interp.get_input_details()[0], outs[0]
        self.batch = int(self.inp["shape"][0])
        self.shape = [int(v) for v in self.inp["shape"]]
        self._setup_io(self.inp["quantization"], self.out["quantization"], self.inp["dtype"])
        if guard and len(outs) != 1 + len(guard["outputs"]):
            raise InputError(f"the guard of this .tflite names {len(guard['outputs'])} tap outputs but the model has "
                             f"{len(outs) - 1}; rebuild it")
        self._setup_guard(guard)
        self._taps = [int(o["index"]) for o in outs[1:]]

    def _infer_one(self, x):
        self.interp.set_tensor(self.inp["index"], self._quantize(x.reshape(self.shape)))
        self.interp.invoke()
        if self._guard_fn is not None:
            self._score_taps([np.array(self.interp.get_tensor(i)).reshape(self.batch, -1) for i in self._taps])
        return self._dequantize(np.array(self.interp.get_tensor(self.out["index"])).reshape(self.batch, -1))

    def profile_ops(self, x: np.ndarray, repeats: int = 100, warmup: int = 20) -> dict:
        return profile_isolated(self.model, repeats, warmup, self.op_modules)


def _median_invoke_us(model: bytes, repeats: int, warmup: int) -> float:
    import time

    from .tflite import _interpreter

    interp = _interpreter(model)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    for _ in range(warmup):
        interp.invoke()
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        interp.invoke()
        t.append(time.perf_counter() - t0)
    return float(np.median(t)) * 1e6


def profile_isolated(model: bytes, repeats: int = 100, warmup: int = 20, modules: list[str] | None = None) -> dict:
    """Per-op times of a .tflite, each op run alone as a one-op model by the same LiteRT kernels (the
    Python LiteRT interpreter has no op profiler). The cheapest op's time stands for the cost of one
    invoke() and is taken off every op. Isolation loses what XNNPACK gains across ops in the whole graph
    (fusion, cache reuse), so the rows are the ops' relative weight; the whole graph's own time is the
    measured total."""
    from .tflite import op_table, single_op_model

    table = op_table(model)
    times = [_median_invoke_us(single_op_model(model, r["index"]), repeats, warmup) for r in table]
    floor = min(times) if times else 0.0
    mods = modules if modules and len(modules) == len(table) else [f"op {r['index']}" for r in table]
    rows = [{"name": f"{r['index']}:{r['op_type']}", "module": m, "op_type": r["op_type"], "macs": r["macs"],
             "time_us": max(t - floor, 0.0)} for r, t, m in zip(table, times, mods)]
    return {"rows": rows, "total_us": _median_invoke_us(model, repeats, warmup), "runs": repeats,
            "invoke_floor_us": floor,
            "method": "LiteRT, each op timed alone (median over runs, less the cheapest op's invoke cost)"}


def runner(build, device=None):
    if device is not None and getattr(device, "transport", "local") != "local":
        raise InputError(f"{build.target} builds run with LiteRT on this machine; check them with --device local")
    return LiteRTRunner(build.artifact.read_bytes(), op_modules=build.sidecar.get("op_modules"),
                        guard=build.sidecar.get("guard"))


BACKEND = Backend(name="litert", description="LiteRT (TensorFlow Lite) int8 on this machine", Options=Options,
                  build=build, runner=runner, suffixes=(".tflite",))
