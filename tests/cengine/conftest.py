import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tflite_micro")


def _cache() -> Path:
    from drsn_edge.cengine.host import cache_dir

    return cache_dir()


@pytest.fixture(scope="session")
def shipped_int8():
    """(int8 .tflite bytes, normalized calibration windows) of the shipped model, built the way
    `build --target <mcu>` builds it; cached on disk by the hashes of the model, the calibration set and
    the converter module."""
    from drsn_edge.backends import tflite as tfl_module
    from drsn_edge.calibration import default_calibration_path
    from drsn_edge.evaluate import resolve_model

    _, model_path = resolve_model(None)
    key = hashlib.sha256(Path(model_path).read_bytes() + default_calibration_path().read_bytes()
                         + Path(tfl_module.__file__).read_bytes()).hexdigest()[:16]  # model, data, converter
    folder = _cache() / f"shipped-{key}"
    q_path, x_path = folder / "model.int8.tflite", folder / "calib_x.npy"
    if not (q_path.exists() and x_path.exists()):
        from drsn_edge.backends import tflite as tfl
        from drsn_edge.calibration import model_and_calibration
        from drsn_edge.fileio import write_bytes

        bundle, _, _, _, _, cx = model_and_calibration(None, None)
        q = tfl.strip_names(tfl.quantize_int8(tfl.float_tflite(bundle.model, bundle.window), cx))
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".calib.{os.getpid()}.npy"
        np.save(tmp, cx)
        os.replace(tmp, x_path)
        write_bytes(q_path, q)
    return q_path.read_bytes(), np.load(x_path)


def quantize_windows(q: bytes, x: np.ndarray) -> np.ndarray:
    from drsn_edge.backends.tflite import model_io, quantize_input

    inp, _ = model_io(q)
    return quantize_input(x.reshape(len(x), -1), inp["scale"], inp["zero_point"])
