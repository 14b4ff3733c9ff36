"""The stand-in engine of tests/firmware/standin/ (drsn_model.c) in numpy, and its test hooks."""

from pathlib import Path

import numpy as np

STANDIN_DIR = Path(__file__).with_name("standin")
N_IN, N_OUT, IN_SCALE, IN_ZP, OUT_SCALE, OUT_ZP, CRC = 2048, 10, 0.05, 0, 0.125, -3, 0x5A17C0DE
RESET, HANG, NOISE = (127, 127, 127), (-128, -128, -128), (100, -100, 100)

_W = ((7 * np.arange(N_IN)[None, :] + 13 * np.arange(N_OUT)[:, None]) % 255 - 127).astype(np.int64)


def standin_logits(x_q: np.ndarray) -> np.ndarray:
    """int8 [N, 2048] -> int8 [N, 10]: clamp((x . w_k >> 10) - 3)."""
    acc = np.asarray(x_q, np.int64).reshape(-1, N_IN) @ _W.T
    return np.clip((acc >> 10) + OUT_ZP, -128, 127).astype(np.int8)


def windows(n: int, seed: int = 0) -> np.ndarray:
    """Random int8 windows that never start with a test hook."""
    x = np.random.default_rng(seed).integers(-60, 60, (n, N_IN)).astype(np.int8)
    return x


def hook(which) -> np.ndarray:
    x = np.zeros(N_IN, np.int8)
    x[:3] = which
    return x


def expected(**changes):
    from drsn_edge.devices.mcu import Expected

    fields = dict(input_len=N_IN, output_len=N_OUT, input_scale=IN_SCALE, input_zp=IN_ZP, output_scale=OUT_SCALE,
                  output_zp=OUT_ZP, model_crc=CRC)
    fields.update(changes)
    return Expected(**fields)
