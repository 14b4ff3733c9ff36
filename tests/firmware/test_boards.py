"""The real-board files compile for their cores with arm-none-eabi-gcc (-Wall -Wextra -Werror), together with
main_c.c and the protocol, and each documents its UART, clock, counter and how to flash it. (ESP32's file
needs ESP-IDF's Xtensa toolchain, which no machine here has: it is only checked for its documentation.)"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from drsn_edge.firmware.bundle import CPU
from drsn_edge.firmware.cfirmware import BOARDS, TEMPLATES

from .standin_ref import STANDIN_DIR

CORTEX_M = {"stm32": "cortex-m7", "nrf52": "cortex-m4", "rp2040": "cortex-m0plus", "qemu-mps2": "cortex-m7"}


@pytest.mark.skipif(not shutil.which("arm-none-eabi-gcc"), reason="needs apt package gcc-arm-none-eabi")
@pytest.mark.parametrize("board", list(CORTEX_M))
def test_board_file_compiles_with_the_firmware(board, tmp_path):
    for src in (BOARDS[board], "main_c.c", "drsn_proto.c"):
        subprocess.run(["arm-none-eabi-gcc", *CPU[CORTEX_M[board]][0].split(), "-std=c99", "-O2", "-Wall", "-Wextra",
                        "-Werror", f"-I{TEMPLATES}", f"-I{STANDIN_DIR}", "-c", str(TEMPLATES / src),
                        "-o", str(tmp_path / (src + ".o"))], check=True)


@pytest.mark.parametrize("board", ["stm32", "nrf52", "rp2040", "esp32"])
def test_board_file_documents_uart_clock_counter_and_flashing(board):
    head = (TEMPLATES / BOARDS[board]).read_text().split("*/", 1)[0]
    for word in ("UART:", "Clock:", "Counter:", "Build:", "Flash:", "115200", "serial://"):
        assert word in head, f"{BOARDS[board]} does not document {word}"
