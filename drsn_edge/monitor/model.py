"""The model the monitor runs: a build folder / artifact (int8) or a .drsn bundle (float, PyTorch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError


@dataclass
class MonitorModel:
    name: str                 # the runner, e.g. "onnxruntime (int8 QDQ)"
    source: str               # the artifact or bundle path
    class_names: list[str]
    fs: float
    window: int
    normalization: str
    infer: Callable[[np.ndarray], np.ndarray]  # float32 [N,1,L] normalized → float32 logits [N,C]
    close: Callable[[], None]


def load_model(path: str | None) -> MonitorModel:
    """A .drsn bundle runs in PyTorch (float); anything else is a build folder or an artifact in one."""
    if path is None:
        from ..bundle import default_model_path

        path = str(default_model_path())
    p = Path(path)
    if p.suffix == ".drsn":
        return _bundle_model(p)
    return _build_model(p)


def _bundle_model(p: Path) -> MonitorModel:
    from ..bundle import load_bundle
    from ..deps import torch

    t = torch()
    bundle = load_bundle(p)
    net = bundle.model.eval()

    def infer(x):
        with t.inference_mode():
            return net(t.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

    return MonitorModel("pytorch eager (float32)", str(p), bundle.class_names, bundle.fs, bundle.window,
                        bundle.normalization, infer, lambda: None)


def _build_model(p: Path) -> MonitorModel:
    if not p.exists():
        raise InputError(f"'{p}' does not exist; pass a build folder (drsn-edge build --target host) or a .drsn model")
    try:
        from ..backends.base import load_build
    except ImportError:  # until the backend contract is in: a QDQ ONNX or int8 .tflite with its sidecar
        return _temporary_build_model(p)
    build = load_build(p)
    runner = build.runner()
    runner.activate()
    return MonitorModel(runner.name, str(build.artifact), build.class_names, build.fs, build.window,
                        build.normalization, runner.infer, runner.deactivate)


def _temporary_build_model(p: Path) -> MonitorModel:
    from ..fileio import read_json

    if p.is_dir():
        found = sorted(p.glob("*.int8.onnx")) + sorted(p.glob("*.int8.tflite"))
        if not found:
            raise InputError(f"'{p}' holds no model.int8.onnx or model.int8.tflite; build it with drsn-edge build")
        p = found[0]
    if not p.is_file() or not p.with_suffix(".json").is_file():
        raise InputError(f"'{p}' is not an artifact with its sidecar; build it with drsn-edge build")
    side = read_json(p.with_suffix(".json"))
    if p.suffix == ".onnx":
        from ..export import ort_session, run_ort

        sess = ort_session(p.read_bytes())
        batch = sess.get_inputs()[0].shape[0]
        batch = batch if isinstance(batch, int) else 1
        infer, name = (lambda x: run_ort(sess, x, batch)), "onnxruntime (int8 QDQ)"
    else:
        from ..backends.tflite import litert_run

        data = p.read_bytes()
        infer, name = (lambda x: litert_run(data, x)), "litert (int8)"
    norm = (side.get("input") or {}).get("normalization", "zscore")
    return MonitorModel(name, str(p), list(side["class_names"]), float(side["fs"]), int(side["window"]), norm,
                        infer, lambda: None)
