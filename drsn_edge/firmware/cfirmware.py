"""Firmware around the generated C engine (`drsn_infer()` in drsn_model.c / drsn_kernels.c): main_c.c with the
serial protocol and one board file, and two builds of it that run here: a Cortex-M ELF for QEMU's MPS2
boards (arm-none-eabi-gcc + picolibc, flash/RAM read back from the ELF) and a host process that serves the
protocol on a pseudo-terminal. Real boards take the same sources into their vendor toolchain (see the
board files)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckFailedError, InputError, MissingDependencyError
from ..fileio import atomic_path
from .bundle import CPU, TEMPLATES

COMMON = ("main_c.c", "drsn_proto.c")
HEADERS = ("drsn_board.h", "drsn_proto.h")
# the profiling firmware: per-kernel tick totals behind the PROFILE request (boards with board_ticks())
PROFILE_SOURCES = ("drsn_prof.c",)
PROFILE_HEADERS = ("drsn_prof.h",)
PROFILE_FLAGS = ("-DDRSN_PROFILING", '-DDRSN_HOOKS_HEADER="drsn_prof.h"', '-DDRSN_FW_NAME="drsn-edge c engine (profile)"')
PROFILE_BOARDS = ("qemu-mps2",)
# board family -> board file (UART, counter, reset; each documents clock and flashing)
BOARDS = {
    "qemu-mps2": "board_qemu_mps2.c",
    "host": "board_host_pty.c",
    "stm32": "board_stm32.c",
    "nrf52": "board_nrf52.c",
    "rp2040": "board_rp2040.c",
    "esp32": "board_esp32.c",
}


@dataclass(frozen=True)
class QemuBoard:
    """Where board_qemu_mps2.c finds things on a QEMU machine (the Armv8-M boards boot secure: secure aliases)."""

    uart0: int
    sysclk_hz: int
    code: int  # base of the memory the image runs from ("flash")
    data: int  # base of the data memory


_MPS2 = QemuBoard(0x40004000, 25_000_000, 0x00000000, 0x20000000)  # 4 MB code SSRAM, 4 MB data SSRAM
QEMU_BOARDS = {
    "mps2-an385": _MPS2, "mps2-an386": _MPS2, "mps2-an500": _MPS2,
    "mps2-an505": QemuBoard(0x50200000, 20_000_000, 0x10000000, 0x38000000),  # Cortex-M33: SSRAM1, SSRAM2/3
    "mps3-an547": QemuBoard(0x59303000, 32_000_000, 0x10000000, 0x30000000),  # Cortex-M55: ITCM, DTCM
}
_APT = "apt-get install gcc-arm-none-eabi picolibc-arm-none-eabi"


def board_for_target(target) -> str:
    """The board family whose board file serves a target: QEMU machines, then by the target's name."""
    machine = (target.device or {}).get("machine") or target.hardware.get("qemu_machine")
    if machine:
        return "qemu-mps2"
    for prefix, board in (("stm32", "stm32"), ("nrf52", "nrf52"), ("rp2040", "rp2040"), ("esp32", "esp32")):
        if target.name.startswith(prefix):
            return board
    if target.family == "host":
        return "host"
    raise InputError(f"no board file for {target.name}: copy the closest board_*.c (UART, counter, reset) and "
                     f"adapt it; known families: {', '.join(BOARDS)}")


def firmware_sources(board: str) -> list[Path]:
    """The firmware's own C files for a board family (without the engine)."""
    if board not in BOARDS:
        raise InputError(f"unknown board family '{board}': use one of {', '.join(BOARDS)}")
    return [TEMPLATES / n for n in (*COMMON, BOARDS[board])]


def copy_firmware_sources(out_dir: str | Path, board: str) -> list[str]:
    """Copy main_c.c, the protocol, the board header and the board file into a firmware folder."""
    out_dir = Path(out_dir)
    names = []
    extra = [*PROFILE_SOURCES, *PROFILE_HEADERS] if board in PROFILE_BOARDS else []
    for src in [*firmware_sources(board), *(TEMPLATES / h for h in (*HEADERS, *extra))]:
        shutil.copyfile(src, out_dir / src.name)
        names.append(src.name)
    return names


def engine_sources(engine_dir: str | Path) -> list[Path]:
    engine_dir = Path(engine_dir)
    firmware = set(COMMON) | set(BOARDS.values()) | set(PROFILE_SOURCES)  # a firmware folder holds both
    srcs = [p for p in sorted(engine_dir.glob("*.c")) if p.name not in firmware]
    if not (engine_dir / "drsn_model.h").is_file() or not srcs:
        raise InputError(f"'{engine_dir}' holds no generated C engine (drsn_model.h and .c files)")
    return srcs


def _compile(cmd: list[str], what: str) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        lines = ([ln for ln in p.stderr.splitlines() if ("error:" in ln or "undefined reference" in ln
                                                          or "multiple definition" in ln) and "collect2" not in ln]
                 or p.stderr.splitlines() or ["?"])
        if "overflowed" in p.stderr:
            raise CheckFailedError(f"{what} does not fit the target's memory: {lines[0].strip()}")
        raise CheckFailedError(f"{what} failed to compile: {lines[0].strip()}")


def build_host(engine_dir: str | Path, out: str | Path, cc: str | None = None, extra_flags=()) -> Path:
    """Build the firmware for this machine (board_host_pty.c): a process that speaks the protocol on
    stdin/stdout, or on a new pseudo-terminal with DRSN_UART=pty."""
    cc = cc or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise MissingDependencyError("no C compiler for the host build of the firmware; install gcc")
    srcs = [*firmware_sources("host"), *engine_sources(engine_dir)]
    out = Path(out)
    with atomic_path(out, suffix="") as tmp:
        _compile([cc, "-std=c99", "-O2", "-fwrapv", "-Wall", "-Werror", "-D_GNU_SOURCE", *extra_flags, f"-I{TEMPLATES}",
                  f"-I{engine_dir}", *map(str, srcs), "-o", str(tmp)], "the host firmware")
    out.chmod(0o755)
    return out


def arm_flags(cpu: str) -> list[str]:
    if cpu not in CPU or not CPU[cpu][0]:
        raise InputError(f"no Cortex-M compiler flags for cpu '{cpu}'")
    return CPU[cpu][0].split()


def build_qemu_elf(engine_dir: str | Path, target, out_elf: str | Path, extra_flags=(), profile: bool = False) -> dict:
    """Build the firmware for a QEMU target (board_qemu_mps2.c on the target's machine) with arm-none-eabi-gcc
    and picolibc; the linker refuses an image over the target's flash or RAM. Returns {flash_bytes, ram_bytes,
    sections}. `profile`: the profiling firmware (the same sources plus drsn_prof.c, the kernel markers on,
    answers PROFILE); the normal firmware is built without any of it."""
    gcc = shutil.which("arm-none-eabi-gcc")
    if not gcc:
        raise MissingDependencyError(f"arm-none-eabi-gcc is not installed; run: {_APT}")
    machine = (target.device or {}).get("machine") or target.hardware.get("qemu_machine")
    if machine not in QEMU_BOARDS:
        raise InputError(f"{target.name} is not an emulated board this firmware knows (machine {machine!r}); "
                         f"use a target on one of {', '.join(QEMU_BOARDS)}")
    board = QEMU_BOARDS[machine]
    flash, ram = target.flash_bytes, target.ram_bytes
    srcs = [*firmware_sources("qemu-mps2"), *engine_sources(engine_dir)]
    if profile:
        srcs += [TEMPLATES / s for s in PROFILE_SOURCES]
        extra_flags = (*PROFILE_FLAGS, *extra_flags)
    out_elf = Path(out_elf)
    with atomic_path(out_elf, suffix=".elf") as tmp:
        _compile([gcc, *arm_flags(target.hardware.get("cpu", "")), "-O2", "-fwrapv", "-std=c99", "-Wall", "-ffunction-sections",
                  "-fdata-sections", f"-DMPS2_UART0={board.uart0:#x}u", f"-DMPS2_SYSCLK_HZ={board.sysclk_hz}u",
                  *extra_flags, "--specs=picolibc.specs", "--oslib=semihost", "--crt0=semihost",
                  f"-I{TEMPLATES}", f"-I{engine_dir}", *map(str, srcs), "-Wl,--gc-sections",
                  f"-Wl,--defsym=__flash={board.code:#x}", f"-Wl,--defsym=__flash_size={flash:#x}",
                  f"-Wl,--defsym=__ram={board.data:#x}", f"-Wl,--defsym=__ram_size={ram:#x}", "-o", str(tmp)],
                 f"the firmware for {target.name}")
        memory = elf_memory(tmp, board.data)
    return memory


FIT_RAM_BASE = 0x20000000


def build_fit_elf(engine_dir: str | Path, target, out_elf: str | Path, extra_flags=()) -> dict:
    """Link the firmware with the target's own board file for its core, the linker limited to the target's
    flash and to the RAM budget drsn-edge may use (`ram_share` of its RAM): the image that would not fit is
    refused by the linker, and flash and RAM are read from the image that does. (The flashable image comes
    from the vendor toolchain with the board's memory map; code and data sizes are the same.)"""
    gcc = shutil.which("arm-none-eabi-gcc")
    if not gcc:
        raise MissingDependencyError(f"arm-none-eabi-gcc is not installed; run: {_APT}")
    srcs = [*firmware_sources(board_for_target(target)), *engine_sources(engine_dir)]
    out_elf = Path(out_elf)
    with atomic_path(out_elf, suffix=".elf") as tmp:
        _compile([gcc, *arm_flags(target.hardware.get("cpu", "")), "-O2", "-fwrapv", "-std=c99", "-Wall", "-ffunction-sections",
                  "-fdata-sections", *extra_flags, "--specs=picolibc.specs", "--oslib=semihost", "--crt0=semihost",
                  f"-I{TEMPLATES}", f"-I{engine_dir}", *map(str, srcs), "-Wl,--gc-sections",
                  "-Wl,--defsym=__flash=0x0", f"-Wl,--defsym=__flash_size={target.flash_bytes:#x}",
                  f"-Wl,--defsym=__ram={FIT_RAM_BASE:#x}", f"-Wl,--defsym=__ram_size={target.ram_budget_bytes:#x}",
                  "-o", str(tmp)], f"the firmware for {target.name}")
        memory = elf_memory(tmp, FIT_RAM_BASE)
    return memory


_SECTION_RE = re.compile(r"^(\.\S+)\s+(\d+)\s+(\d+)\s*$")


def elf_memory(elf: str | Path, ram_start: int) -> dict:
    """Flash and RAM of a linked image from its section table (`arm-none-eabi-size -A`): flash = every
    section below the data memory's base plus the initial values of .data; RAM = every section from that
    base on (data, bss, stack). (On every supported machine the data memory lies above the code memory.)"""
    size = shutil.which("arm-none-eabi-size")
    if not size:
        raise MissingDependencyError(f"arm-none-eabi-size is not installed; run: {_APT}")
    text = subprocess.run([size, "-A", "-d", str(elf)], capture_output=True, text=True, check=True).stdout
    sections, flash, ram = {}, 0, 0
    for line in text.splitlines():
        m = _SECTION_RE.match(line.strip())
        if not m or m.group(1).startswith((".ARM.attributes", ".comment", ".debug", ".stab")):
            continue
        name, n, addr = m.group(1), int(m.group(2)), int(m.group(3))
        sections[name] = n
        if addr < ram_start:
            flash += n
        else:
            ram += n
            if name in (".data", ".tdata"):
                flash += n
    return {"flash_bytes": flash, "ram_bytes": ram, "sections": sections}
