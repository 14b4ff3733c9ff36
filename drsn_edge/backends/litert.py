"""LiteRT backend (the `host` profile): the int8 .tflite run by LiteRT (TensorFlow Lite) on this machine."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .base import Backend, BuildContext, BuildOutput, RunnerBase
from .tflite import Int8Options as Options
from .tflite import Int8RunnerBase


def build(ctx: BuildContext) -> BuildOutput:
    from .tflite import int8_tflite, write_tflite

    q, graph = int8_tflite(ctx)
    name = write_tflite(ctx, q, graph, "litert")
    return BuildOutput(artifact=name, details={"op_counts": graph["op_counts"], "bytes": len(q)})


class LiteRTRunner(Int8RunnerBase, RunnerBase):
    """LiteRT in this process (XNNPACK where it takes the graph, LiteRT's own kernels otherwise)."""

    def __init__(self, tflite_bytes: bytes, name: str = "litert (int8)"):
        RunnerBase.__init__(self)
        from .tflite import _interpreter

        self.name = name
        self.interp = _interpreter(tflite_bytes)
        self.inp, self.out = self.interp.get_input_details()[0], self.interp.get_output_details()[0]
        self.batch = int(self.inp["shape"][0])
        self.shape = [int(v) for v in self.inp["shape"]]
        self._setup_io(self.inp["quantization"], self.out["quantization"], self.inp["dtype"])

    def _infer_one(self, x):
        self.interp.set_tensor(self.inp["index"], self._quantize(x.reshape(self.shape)))
        self.interp.invoke()
        return self._dequantize(np.array(self.interp.get_tensor(self.out["index"])).reshape(self.batch, -1))


def runner(build, device=None):
    if device is not None and getattr(device, "transport", "local") != "local":
        raise InputError(f"{build.target} builds run with LiteRT on this machine; check them with --device local")
    return LiteRTRunner(build.artifact.read_bytes())


BACKEND = Backend(name="litert", description="LiteRT (TensorFlow Lite) int8 on this machine", Options=Options,
                  build=build, runner=runner, suffixes=(".tflite",))
