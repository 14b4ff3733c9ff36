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

CORTEX_M = [("stm32", "cortex-m7", ()), ("stm32", "cortex-m7", ("-DSTM32F7",)), ("nrf52", "cortex-m4", ()),
            ("rp2040", "cortex-m0plus", ()), ("qemu-mps2", "cortex-m7", ()), ("qemu-mps2", "cortex-m55", ())]


@pytest.mark.skipif(not shutil.which("arm-none-eabi-gcc"), reason="needs apt package gcc-arm-none-eabi")
@pytest.mark.parametrize("board, cpu, defines", CORTEX_M)
def test_board_file_compiles_with_the_firmware(board, cpu, defines, tmp_path):
    for src in (BOARDS[board], "main_c.c", "drsn_proto.c"):
        subprocess.run(["arm-none-eabi-gcc", *CPU[cpu][0].split(), *defines, "-std=c99", "-O2", "-Wall", "-Wextra",
                        "-Werror", f"-I{TEMPLATES}", f"-I{STANDIN_DIR}", "-c", str(TEMPLATES / src),
                        "-o", str(tmp_path / (src + ".o"))], check=True)


@pytest.mark.parametrize("board", ["stm32", "nrf52", "rp2040", "esp32"])
def test_board_file_documents_uart_clock_counter_and_flashing(board):
    head = (TEMPLATES / BOARDS[board]).read_text().split("*/", 1)[0]
    for word in ("UART:", "Clock:", "Counter:", "Build:", "Flash:", "115200", "serial://"):
        assert word in head, f"{BOARDS[board]} does not document {word}"


def test_board_for_every_shipped_mcu_target():
    from drsn_edge.firmware.cfirmware import board_for_target
    from drsn_edge.targets import all_targets

    got = {n: board_for_target(t) for n, t in all_targets().items() if t.family == "mcu"}
    assert got == {"stm32h743": "stm32", "stm32f746": "stm32", "nrf52840": "nrf52", "rp2040": "rp2040",
                   "esp32s3": "esp32", "qemu-m4": "qemu-mps2", "qemu-m7": "qemu-mps2", "qemu-m33": "qemu-mps2",
                   "qemu-m55": "qemu-mps2"}


def test_copy_firmware_sources(tmp_path):
    from drsn_edge.firmware.cfirmware import copy_firmware_sources

    names = copy_firmware_sources(tmp_path, "stm32")
    assert sorted(names) == ["board_stm32.c", "drsn_board.h", "drsn_proto.c", "drsn_proto.h", "main_c.c"]
    assert (tmp_path / "main_c.c").read_text() == (TEMPLATES / "main_c.c").read_text()
