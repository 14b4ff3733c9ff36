"""The firmware bundle for a microcontroller target: the int8 model as an aligned C array, the TFLite
Micro harness with an op resolver holding exactly the ops the model uses, the domain guard's score
(drsn_guard.c, on the model's tap outputs), the serial protocol, board glue with the right cycle counter,
CMake and PlatformIO projects, and a README."""

from __future__ import annotations

import math
import shutil
import zlib
from fractions import Fraction
from pathlib import Path

from .. import __version__

TEMPLATES = Path(__file__).with_name("templates")
ARENA_MARGIN = 0.10

# TFLite builtin op → MicroMutableOpResolver method
RESOLVER = {
    "CONV_2D": "AddConv2D", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "FULLY_CONNECTED": "AddFullyConnected",
    "RELU": "AddRelu", "ADD": "AddAdd", "SUB": "AddSub", "MUL": "AddMul", "MAXIMUM": "AddMaximum",
    "MINIMUM": "AddMinimum", "MEAN": "AddMean", "LOGISTIC": "AddLogistic", "AVERAGE_POOL_2D": "AddAveragePool2D",
    "CONCATENATION": "AddConcatenation", "RESHAPE": "AddReshape", "QUANTIZE": "AddQuantize",
    "DEQUANTIZE": "AddDequantize", "PAD": "AddPad", "SQUEEZE": "AddSqueeze", "EXPAND_DIMS": "AddExpandDims",
    "TRANSPOSE": "AddTranspose", "SOFTMAX": "AddSoftmax", "ABS": "AddAbs", "NEG": "AddNeg",
    "STRIDED_SLICE": "AddStridedSlice", "SUM": "AddSum", "MAX_POOL_2D": "AddMaxPool2D",
}

# cpu → compiler flags, counter source
CPU = {
    "cortex-m7": ("-mcpu=cortex-m7 -mthumb -mfloat-abi=hard -mfpu=fpv5-d16", "board_dwt.c"),
    "cortex-m4": ("-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16", "board_dwt.c"),
    "cortex-m33": ("-mcpu=cortex-m33 -mthumb -mfloat-abi=hard -mfpu=fpv5-sp-d16", "board_dwt.c"),
    "cortex-m55": ("-mcpu=cortex-m55 -mthumb -mfloat-abi=hard", "board_dwt.c"),  # FPU and MVE implied by the cpu
    "cortex-m0plus": ("-mcpu=cortex-m0plus -mthumb -mfloat-abi=soft", "board_systick.c"),
    "xtensa-lx7": ("", "board_ccount.c"),
}

# target → PlatformIO platform, board, framework, TFLite Micro library for that framework
PLATFORMIO = {
    "stm32h743": ("ststm32", "nucleo_h743zi", "arduino", "https://github.com/tensorflow/tflite-micro-arduino-examples"),
    "stm32f746": ("ststm32", "disco_f746ng", "arduino", "https://github.com/tensorflow/tflite-micro-arduino-examples"),
    "nrf52840": ("nordicnrf52", "nrf52840_dk", "arduino", "https://github.com/tensorflow/tflite-micro-arduino-examples"),
    "rp2040": ("raspberrypi", "pico", "arduino", "https://github.com/raspberrypi/pico-tflmicro"),
    "esp32s3": ("espressif32", "esp32-s3-devkitc-1", "espidf", "https://github.com/espressif/esp-tflite-micro"),
}


def c_array(data: bytes, name: str) -> str:
    lines = []
    for i in range(0, len(data), 16):
        lines.append("  " + ", ".join(f"0x{b:02x}" for b in data[i : i + 16]) + ",")
    return (f'#include "model_data.h"\n\n// {len(data)} bytes, 16-byte aligned as TFLite Micro requires\n'
            f"alignas(16) const unsigned char {name}[] = {{\n" + "\n".join(lines) + f"\n}};\n"
            f"const unsigned int {name}_len = {len(data)};\n")


def arena_with_margin(measured: int) -> int:
    """The measured arena plus ARENA_MARGIN, rounded up to TFLM's 16-byte alignment, in exact arithmetic
    (1600 B + 10 % is 1760 B; in floats it is 1760.0000000000002, which would round up to 1776 B)."""
    need = math.ceil(int(measured) * (1 + Fraction(str(ARENA_MARGIN))))
    return -(-need // 16) * 16


def _fill(text: str, values: dict) -> str:
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", str(v))
    return text


def write_bundle(folder: Path, target, tflite: bytes, ops: list[str], arena_measured: int, io: dict,
                 class_names: list[str], memory: dict, guard: dict | None = None) -> dict:
    """Write the firmware project into `folder`; returns the list of files. `guard`: the sidecar's domain guard
    (guard_export.tflite_guard: its taps are the model's outputs 1..n); None: the firmware reports no guard."""
    from ..guard_export import guard_c_sources

    cpu = target.hardware.get("cpu", "cortex-m4")
    flags, counter_src = CPU.get(cpu, CPU["cortex-m4"])
    pio = PLATFORMIO.get(target.name, ("ststm32", "genericSTM32F407VGT6", "arduino",
                                       "https://github.com/tensorflow/tflite-micro-arduino-examples"))
    unknown = [op for op in ops if op not in RESOLVER]
    if unknown:  # guarded earlier by the runtime op check; keep the bundle honest regardless
        raise ValueError(f"no TFLite Micro resolver entry for {unknown}")
    emulated = bool(target.hardware.get("qemu_machine"))
    values = {
        "TARGET": target.name, "VERSION": __version__, "CPU": cpu, "CPU_FLAGS": flags,
        "BOARD_COUNTER_SRC": counter_src, "ARENA_MEASURED": arena_measured,
        "ARENA_MARGIN_PCT": int(ARENA_MARGIN * 100), "ARENA_SIZE": arena_with_margin(arena_measured),
        "INPUT_LEN": int(io["input"]["elements"]), "OUTPUT_LEN": int(io["output"]["elements"]),
        "INPUT_SCALE": repr(float(io["input"]["scale"])), "INPUT_ZP": int(io["input"]["zero_point"]),
        "OUTPUT_SCALE": repr(float(io["output"]["scale"])), "OUTPUT_ZP": int(io["output"]["zero_point"]),
        "CLOCK_HZ": int(float(target.hardware.get("clock_mhz", 0)) * 1_000_000),
        "MODEL_CRC": f"{zlib.crc32(tflite) & 0xFFFFFFFF:08x}", "NAME": f"drsn-edge {target.name}",
        "N_OPS": len(ops), "RESOLVER_LINES": "\n".join(f"  resolver.{RESOLVER[op]}();" for op in ops),
        "COUNTER_IS_INSTRUCTIONS": 1 if emulated else 0,
        "PIO_PLATFORM": pio[0], "PIO_BOARD": pio[1], "PIO_FRAMEWORK": pio[2], "PIO_TFLM_LIB": pio[3],
    }
    folder = Path(folder)
    files = []
    for name in ("main.cc", "board.h", "board.c", "CMakeLists.txt", "platformio.ini"):
        (folder / name).write_text(_fill((TEMPLATES / name).read_text(), values))
        files.append(name)
    for name in ("drsn_proto.h", "drsn_proto.c", counter_src):
        shutil.copyfile(TEMPLATES / name, folder / name)
        files.append(name)
    (folder / "model_data.h").write_text(
        "#pragma once\nextern const unsigned char g_drsn_model[];\nextern const unsigned int g_drsn_model_len;\n")
    (folder / "model_data.cc").write_text(c_array(tflite, "g_drsn_model"))
    files += ["model_data.h", "model_data.cc"]
    for name, text in guard_c_sources(guard).items():
        (folder / name).write_text(text)
        files.append(name)
    (folder / "README.md").write_text(readme(target, values, ops, class_names, memory, io, guard))
    files.append("README.md")
    return {"files": files, "arena_bytes": values["ARENA_SIZE"]}


def readme(target, v: dict, ops: list[str], class_names: list[str], memory: dict, io: dict,
           guard: dict | None = None) -> str:
    return f"""# drsn-edge firmware bundle — {target.name}

{target.description}

Generated by drsn-edge {v['VERSION']}. The model is a fully int8 TFLite flatbuffer (`model.int8.tflite`,
also compiled in as `model_data.cc`), run by TensorFlow Lite Micro with an op resolver holding exactly
the {len(ops)} ops it uses: {', '.join(ops)}.

## Memory
| | bytes | budget |
|---|---|---|
| model (flash) | {memory['model_bytes']} | |
| runtime code (estimate) | {memory['runtime_code_bytes']} | |
| domain guard constants (flash) | {memory.get('guard_bytes', 0)} | |
| flash total | {memory['flash_bytes']} | {memory['flash_budget_bytes']} |
| tensor arena (measured {v['ARENA_MEASURED']} + {v['ARENA_MARGIN_PCT']} %) | {v['ARENA_SIZE']} | |
| RAM total (arena + I/O + protocol buffers + guard taps + stack) | {memory['ram_bytes']} | {memory['ram_budget_bytes']} |

## Input and output
- Input: {v['INPUT_LEN']} int8 values = one window of {io['window']} samples at {io['fs']:g} Hz, z-scored per
  window (subtract the mean, divide by the standard deviation), then quantized with scale {v['INPUT_SCALE']}
  and zero point {v['INPUT_ZP']}: `q = clamp(round(x / scale) + zp, -128, 127)`.
- Output: {v['OUTPUT_LEN']} int8 logits (scale {v['OUTPUT_SCALE']}, zero point {v['OUTPUT_ZP']}) for the classes
  {', '.join(class_names)}.

## Serial protocol
`drsn_proto.c` speaks the drsn-edge protocol on the UART (115200 8N1): frames `A5 5A | ver | type |
seq | len | payload | CRC-16/CCITT`; INFO returns the shapes, quantization, arena size, clock and
model CRC; INFER takes one int8 window and answers RESULT with the logits, the
{'instruction' if v['COUNTER_IS_INSTRUCTIONS'] else 'cycle'} count of the inference and the domain guard (below). The device sends a
boot frame at start-up, so the host notices a reset.

{guard_readme(guard, memory)}
## Build
- PlatformIO: `pio run -e {target.name}` (`platformio.ini`; board `{v['PIO_BOARD']}`).
- CMake + arm-none-eabi-gcc: `cmake -B build -DTFLM_DIR=/path/to/tflite-micro -DCMAKE_TOOLCHAIN_FILE=...`
  (flags `{v['CPU_FLAGS']}`).
Fill in the three UART hooks in `board.c` for your board; the cycle counter is in `{v['BOARD_COUNTER_SRC']}`.
"""


def _level_line(guard: dict) -> str:
    lvl = guard.get("level")
    if not lvl:
        return ""
    return (f"\n- **Level**: the raw window's standard deviation (before the z-score, in the training data's units) is in"
            f"\n  domain within `DRSN_GUARD_LEVEL_LO` … `DRSN_GUARD_LEVEL_HI` = {float(lvl['lo']):.4g} … {float(lvl['hi']):.4g}."
            f"\n  Check it where your code reads the sensor: a disconnected sensor's noise normalizes to what a"
            f"\n  healthy machine looks like, and only its level tells them apart.")


def guard_readme(guard: dict | None, memory: dict) -> str:
    """The bundle README's section on the domain guard: what RESULT's flags and score mean, the threshold, the
    taps, what it costs."""
    if not guard:
        return """## Domain guard
This model has no domain guard: INFO reports `guard_dim` 0 and every RESULT has guard flags 0 (not scored) and
score −1 (`drsn_guard.c` is the stub). Fit one with `drsn-edge guard fit MODEL --data TRAIN.npz -o MODEL` and
build again to have the board tell when a window is unlike the training data.
"""
    d, k = int(guard["dim"]), int(guard["classes"])
    rows = "\n".join(f"| {i + 1} | `{o['tap']}` | {math.prod(o['shape'][1:])} | {float(o['scale']):.6g} | "
                     f"{int(o['zero_point'])} |" for i, o in enumerate(guard["outputs"]))
    return f"""## Domain guard
The board tells whether a window is like the data the model was trained on. The model's outputs after the
logits are the guard's taps (int8, in this order); `main.cc` copies them after each inference into one buffer
of `DRSN_GUARD_DIM` = {d} values and `drsn_guard.c` scores it in float: the squared Mahalanobis distance to the
nearest of the {k} class means, `min_k |W f − m_k|²` with `f = (q − zero point) · scale` per value.

| output | tap | values | scale | zero point |
|---|---|---|---|---|
{rows}

- **In domain** when the score is at most the threshold `DRSN_GUARD_THRESHOLD` = {float(guard['threshold']):.6g}
  (the {100 * float(guard['quantile']):g} % quantile of held-out in-domain windows, refitted to TFLite Micro's
  int8 taps on the calibration windows).
- **RESULT**: after the logits, a flags byte (bit 0: scored, bit 1: in domain) and the score (f32). Flags 1
  (scored, not in domain) mean the window is unlike the training data: treat its class as unknown, not as a
  fault. INFO reports `guard_dim` = {d} and the threshold. Flat and clipped windows are checked by the host on
  the windows it sends, not here.{_level_line(guard)}
- **Cost**: the cycle count of RESULT covers the network only; the score is {d * (d + 1) // 2 + k * d}
  multiply-adds in float after it. Flash: {memory.get('guard_bytes', 0)} bytes of constants (float32: scale and zero
  point per value, W upper triangular packed, {d * (d + 1) // 2} values, and the whitened means, {k * d}) plus the
  code; RAM: {d} bytes for the taps and {8 * d} bytes of stack.
- **Start-up check**: when the model's tap outputs do not add up to {d} int8 values (a `drsn_guard.c` from
  another build), the firmware sends ERROR 5 "guard taps do not match drsn_guard.h" and halts.
"""
