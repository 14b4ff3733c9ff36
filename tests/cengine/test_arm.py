"""The same generated C cross-compiled for Cortex-M cores with arm-none-eabi-gcc + picolibc; flash
and RAM read from the linked ELF; the M4 build run on QEMU gives the host's output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from drsn_edge.cengine import HostEngine, arm_compile, generate
from drsn_edge.errors import CheckFailedError

from .conftest import quantize_windows

pytestmark = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs gcc-arm-none-eabi")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "cengine_fw"
CORES = {"cortex-m0plus": None, "cortex-m4": "fpv4-sp-d16", "cortex-m7": "fpv5-d16", "cortex-m33": "fpv5-sp-d16"}


@pytest.fixture(scope="module")
def engine_dir(shipped_int8, tmp_path_factory):
    q, cx = shipped_int8
    folder = tmp_path_factory.mktemp("arm")
    generate(q, folder / "c")  # dsp=None: the SIMD path wherever the core has the DSP extension
    xq = quantize_windows(q, cx[:1])
    y = HostEngine(folder / "c").run_raw(xq)[0]
    (folder / "bench_data.h").write_text(
        f"static const int8_t bench_in[{xq.size}] = {{{', '.join(map(str, xq[0]))}}};\n"
        f"static const int8_t bench_expected[{y.size}] = {{{', '.join(map(str, y))}}};\n")
    return folder


def _simd_instructions(elf: str) -> int:
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", elf], check=True, capture_output=True, text=True).stdout
    return sum(line.split("\t")[2].startswith(("smlad", "sxtb16")) for line in dis.splitlines()
               if line.count("\t") >= 2)


@pytest.mark.parametrize("cpu", list(CORES))
def test_compiles_for_each_core_with_measured_sizes(engine_dir, cpu):
    r = arm_compile(engine_dir / "c", cpu, CORES[cpu], [BENCH / "bench_main.c"], engine_dir / f"{cpu}.elf",
                    flash_bytes=1 << 20, ram_bytes=256 << 10, include_dirs=[str(engine_dir), str(BENCH)])
    header = (engine_dir / "c" / "drsn_model.h").read_text()
    arena = int(header.split("#define DRSN_ARENA_BYTES ")[1].split()[0])
    eng = r["engine"]
    assert eng["bss"] == arena                        # the static plan is the engine's only RAM
    assert eng["data"] == 0
    assert r["sections"][".bss"] >= arena and r["ram_bytes"] >= arena + r["sections"].get(".stack", 0)
    assert r["flash_bytes"] >= eng["text"] + eng["rodata"]
    assert 0 < eng["stack_estimate_bytes"] < 1024
    simd = _simd_instructions(r["elf"])
    assert (simd > 0) == (cpu != "cortex-m0plus"), f"{cpu}: {simd} SMLAD/SXTB16 instructions"


def test_linker_refuses_a_firmware_that_does_not_fit(engine_dir):
    with pytest.raises(CheckFailedError, match="does not fit: .*overflowed by"):
        arm_compile(engine_dir / "c", "cortex-m4", CORES["cortex-m4"], [BENCH / "bench_main.c"],
                    engine_dir / "small.elf", flash_bytes=16 << 10, ram_bytes=256 << 10,
                    include_dirs=[str(engine_dir), str(BENCH)])


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="needs qemu-system-arm")
@pytest.mark.parametrize("cpu,machine", [("cortex-m4", "mps2-an386"), ("cortex-m7", "mps2-an500")])
def test_runs_on_qemu_with_the_host_output(engine_dir, cpu, machine):
    r = arm_compile(engine_dir / "c", cpu, CORES[cpu], [BENCH / "bench_main.c"], engine_dir / f"q{cpu}.elf",
                    flash_bytes=4 << 20, ram_bytes=4 << 20, include_dirs=[str(engine_dir), str(BENCH)])
    p = subprocess.run(["qemu-system-arm", "-M", machine, "-nographic", "-monitor", "none", "-icount", "shift=0",
                        "-semihosting-config", "enable=on,target=native", "-kernel", r["elf"]],
                       check=False, capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "OUT match" in out, out[-500:]
    ticks = int(out.split("TICKS ")[1].split()[0])
    assert ticks > 0
    np.testing.assert_equal(int(out.split("CAL ")[1].split()[1]), 131073)
