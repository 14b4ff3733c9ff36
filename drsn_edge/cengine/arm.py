"""Cross-compile the generated C engine (plus a caller's firmware sources) for a Cortex-M core with
arm-none-eabi-gcc and picolibc, and measure flash and RAM from the linked ELF (not estimates)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from ..errors import CheckFailedError, InputError, MissingDependencyError

FLASH_BASE = 0x0
RAM_BASE = 0x20000000
ENGINE_SOURCES = ("drsn_model.c", "drsn_kernels.c")
_NOT_LOADED = (".comment", ".ARM.attributes", ".debug", ".stab", ".note", ".ident")
INSTALL_HINT = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi picolibc-arm-none-eabi"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingDependencyError(f"{name} not found; install the Arm toolchain: {INSTALL_HINT}")
    return path


def cpu_flags(cpu: str, fpu: str | None) -> list[str]:
    if not re.fullmatch(r"cortex-m[0-9a-z+.]+", cpu or ""):
        raise InputError(f"unknown Cortex-M core '{cpu}' (e.g. cortex-m0plus, cortex-m4, cortex-m7, cortex-m33)")
    if fpu in (None, "", "none", "soft"):
        return [f"-mcpu={cpu}", "-mthumb", "-mfloat-abi=soft"]
    return [f"-mcpu={cpu}", "-mthumb", "-mfloat-abi=hard", f"-mfpu={fpu}"]


def _run(cmd: list[str], what: str) -> str:
    p = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if p.returncode != 0:
        err = p.stderr.strip()
        over = re.search(r"region `(\w+)' overflowed by (\d+) bytes", err)
        if over:
            raise CheckFailedError(f"the firmware does not fit: {over.group(1)} overflowed by {over.group(2)} bytes")
        first = next((ln for ln in err.splitlines() if "error" in ln.lower()), err[:300])
        raise InputError(f"{what} failed: {first}")
    return p.stdout


def section_sizes(elf: Path) -> list[tuple[str, int, int]]:
    """(name, size, address) of the loaded sections of an ELF, from arm-none-eabi-size -A."""
    out = _run([_tool("arm-none-eabi-size"), "-A", str(elf)], "arm-none-eabi-size")
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if (len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit()
                and not parts[0].startswith(_NOT_LOADED) and int(parts[1])):
            rows.append((parts[0], int(parts[1]), int(parts[2])))
    return rows


def memory_use(sections: list[tuple[str, int, int]]) -> tuple[int, int]:
    """Flash = everything placed in flash plus the initial values of .data; RAM = .data, .bss,
    the stack and the heap sections reserved by the linker script."""
    flash = ram = 0
    for name, size, addr in sections:
        if addr >= RAM_BASE:
            ram += size
            if name.startswith((".data", ".tdata")):
                flash += size
        else:
            flash += size
    return flash, ram


def _object_sizes(objs: list[Path]) -> dict:
    totals = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
    for o in objs:
        out = _run([_tool("arm-none-eabi-size"), "-A", str(o)], "arm-none-eabi-size")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) != 3 or not parts[1].isdigit():
                continue
            for key in totals:
                if parts[0] == f".{key}" or parts[0].startswith(f".{key}."):
                    totals[key] += int(parts[1])
    return totals


def _stack_estimate(su_files: list[Path]) -> int:
    """drsn_infer's frame plus the deepest kernel frame (-fstack-usage; kernels call no kernels)."""
    frames = {}
    for su in su_files:
        for line in su.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1].strip().isdigit():
                frames[parts[0].rsplit(":", 1)[-1]] = int(parts[1])
    kernels = [v for k, v in frames.items() if k.startswith("drsn_") and k != "drsn_infer"]
    return frames.get("drsn_infer", 0) + max(kernels, default=0)


def arm_compile(c_dir, cpu: str, fpu: str | None, extra_sources, out_elf, flash_bytes: int, ram_bytes: int, *,
                opt: str = "-O2", defines=(), include_dirs=(), semihost: bool = True) -> dict:
    """Compile the engine in c_dir with extra_sources (e.g. a firmware main) into out_elf for `cpu`,
    linked into a flash_bytes / ram_bytes memory map (the linker refuses what does not fit).
    Returns the measured flash and RAM of the ELF and the engine's own share."""
    gcc = _tool("arm-none-eabi-gcc")
    c_dir, out_elf = Path(c_dir), Path(out_elf)
    sources = [c_dir / s for s in ENGINE_SOURCES] + [Path(s) for s in (extra_sources or ())]
    for s in sources:
        if not s.exists():
            raise InputError(f"source file {s} does not exist")
    build = out_elf.with_name(out_elf.stem + ".obj")
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    flags = cpu_flags(cpu, fpu) + [opt, "-fwrapv", "-std=c99", "-Wall", "-ffunction-sections", "-fdata-sections",
                                   "--specs=picolibc.specs", "-I", str(c_dir)]
    flags += [f"-I{d}" for d in include_dirs] + [f"-D{d}" for d in defines]
    objs = []
    for i, src in enumerate(sources):
        obj = build / f"{i:02d}_{src.stem}.o"
        _run([gcc, *flags, "-fstack-usage", "-c", str(src), "-o", str(obj)], f"compiling {src.name} for {cpu}")
        objs.append(obj)
    link = [gcc, *flags, *(["--oslib=semihost", "--crt0=semihost"] if semihost else []), "-Wl,--gc-sections",
            f"-Wl,--defsym=__flash=0x{FLASH_BASE:x}", f"-Wl,--defsym=__flash_size={int(flash_bytes)}",
            f"-Wl,--defsym=__ram=0x{RAM_BASE:x}", f"-Wl,--defsym=__ram_size={int(ram_bytes)}",
            f"-Wl,-Map={out_elf.with_suffix('.map')}", *map(str, objs), "-o", str(out_elf)]
    out_elf.parent.mkdir(parents=True, exist_ok=True)
    _run(link, f"linking {out_elf.name}")
    sections = section_sizes(out_elf)
    flash, ram = memory_use(sections)
    engine = _object_sizes(objs[:len(ENGINE_SOURCES)])
    return {"flash_bytes": flash, "ram_bytes": ram, "elf": str(out_elf), "map": str(out_elf.with_suffix(".map")),
            "cpu": cpu, "fpu": fpu, "sections": {n: s for n, s, _ in sections},
            "engine": {**engine, "flash_bytes": engine["text"] + engine["rodata"] + engine["data"],
                       "stack_estimate_bytes": _stack_estimate(sorted(build.glob("*.su"))[:len(ENGINE_SOURCES)])}}


def toolchain_available() -> bool:
    return all(shutil.which(t) for t in ("arm-none-eabi-gcc", "arm-none-eabi-size"))
