"""The TFLite Micro firmware bundle compiles for its cores, with and without a domain guard.

TFLite Micro's own sources cannot be fetched here, so `main.cc` is compiled with the real arm-none-eabi-g++
against stand-in headers (tests/firmware/tflm_standin/) that declare exactly the TFLite Micro API it uses, with
the public tflite-micro tree's signatures. That proves the harness calls that API with the right names,
argument counts and types, reads tensor fields that exist, and is valid C++17 for the core and flags of each
target, warning-free; the bundle's C files (protocol, guard score, board glue) compile with the real
cross-compiler as they are. It does not prove that a given tflite-micro release still has those signatures, that
the firmware links, or how it runs on a board: `test_bundle_builds_with_real_tflite_micro` does the real build
when TFLM_DIR names a tflite-micro checkout.

main.cc's own logic also runs here: built for this machine with fake_runtime.cc in place of TFLite Micro's
interpreter (outputs that are known slices of the input), it is driven over the serial protocol on its
stdin/stdout. (That TFLite Micro's real tap outputs give the host's score is tests/test_build_mcu.py's part.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from drsn_edge.firmware.bundle import CPU, RESOLVER, write_bundle

STANDIN = Path(__file__).with_name("tflm_standin")
CROSS = pytest.mark.skipif(not (shutil.which("arm-none-eabi-g++") and shutil.which("arm-none-eabi-gcc")),
                           reason="needs apt packages gcc-arm-none-eabi libstdc++-arm-none-eabi-newlib")
WARN = ("-O2", "-Wall", "-Wextra", "-Werror")
TAP_DIMS = (4, 8, 3)
OPS = ["CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED"]


def guard_fixture(dims=TAP_DIMS, classes=3, seed=0) -> dict:
    """A sidecar-shaped guard (guard_export.tflite_guard's layout) on random features: three int8 tap outputs
    of 4, 8 and 3 values with their own scale and zero point."""
    from drsn_edge.guard import fit
    from drsn_edge.guard_export import guard_meta

    rng = np.random.default_rng(seed)
    d = sum(dims)
    g = fit(rng.standard_normal((90, d)), np.arange(90) % classes, rng.standard_normal((30, d)), quantile=0.9,
            classes=classes)
    g.taps, g.tap_dims = [f"tap{i}" for i in range(len(dims))], list(dims)
    outs = [{"shape": [1, n], "dtype": "int8", "scale": 0.02 * (i + 1), "zero_point": 3 * i - 5, "tap": g.taps[i]}
            for i, n in enumerate(dims)]
    return {**g.to_json(), **guard_meta(g), "outputs": outs}


def make_bundle(folder: Path, target_name: str, guard: dict | None) -> Path:
    """write_bundle for a target with a made-up 1 KiB model (compiling needs no real flatbuffer)."""
    from drsn_edge.guard_export import guard_const_bytes
    from drsn_edge.targets import get_target

    target = get_target(target_name)
    folder.mkdir(parents=True, exist_ok=True)
    io = {"input": {"shape": [1, 1, 1, 512], "scale": 0.05, "zero_point": 0, "elements": 512},
          "output": {"shape": [1, 10], "scale": 0.125, "zero_point": -3, "elements": 10}, "window": 512, "fs": 12800.0}
    gb = guard_const_bytes(guard["dim"], guard["classes"]) if guard else 0
    memory = {"model_bytes": 1024, "runtime_code_bytes": 200 * 1024, "guard_bytes": gb,
              "flash_bytes": 1024 + 200 * 1024 + gb, "flash_budget_bytes": target.flash_bytes, "ram_bytes": 40000,
              "ram_budget_bytes": target.ram_budget_bytes}
    write_bundle(folder, target, bytes(range(256)) * 4, OPS, 30000, io, [f"c{i}" for i in range(10)], memory, guard)
    return folder


def mcu_targets() -> list[str]:
    from drsn_edge.targets import all_targets

    return sorted(n for n, t in all_targets().items()
                  if t.family == "mcu" and CPU.get(t.hardware.get("cpu", ""), ("",))[0])


def _cc(args: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False)


def compile_bundle(fw: Path, cpu: str, out: Path) -> None:
    """Every source of the bundle to an object file with the target's compiler flags (main.cc against the
    stand-in TFLite Micro headers)."""
    flags = CPU[cpu][0].split()
    counter = re.search(r"\+<(board_\w+\.c)>", (fw / "platformio.ini").read_text()).group(1)
    for src in ("main.cc", "model_data.cc"):
        r = _cc(["arm-none-eabi-g++", *flags, "-std=c++17", *WARN, "-DTF_LITE_STATIC_MEMORY", "-I.", f"-I{STANDIN}",
                 "-c", src, "-o", out / f"{src}.o"], fw)
        assert r.returncode == 0, f"{src}: {r.stderr}"
    for src in ("drsn_proto.c", "drsn_guard.c", "board.c", counter):
        r = _cc(["arm-none-eabi-gcc", *flags, "-std=c99", *WARN, "-I.", "-c", src, "-o", out / f"{src}.o"], fw)
        assert r.returncode == 0, f"{src}: {r.stderr}"


def test_standin_resolver_declares_every_op_the_bundle_registers():
    text = (STANDIN / "tensorflow/lite/micro/micro_mutable_op_resolver.h").read_text()
    assert set(re.findall(r"TfLiteStatus (Add\w+)\(\);", text)) == set(RESOLVER.values())


@CROSS
@pytest.mark.parametrize("guarded", [True, False], ids=["guard", "no-guard"])
@pytest.mark.parametrize("target_name", mcu_targets())
def test_bundle_compiles_for_the_target(target_name, guarded, tmp_path):
    from drsn_edge.targets import get_target

    fw = make_bundle(tmp_path / "fw", target_name, guard_fixture() if guarded else None)
    head = (fw / "drsn_guard.h").read_text()
    assert f"#define DRSN_GUARD_DIM {sum(TAP_DIMS) if guarded else 0}\n" in head
    compile_bundle(fw, get_target(target_name).hardware["cpu"], tmp_path)
    nm = subprocess.run(["arm-none-eabi-nm", "-C", "--undefined-only", tmp_path / "main.cc.o"], capture_output=True,
                        text=True, check=True).stdout
    # what the harness needs from TFLite Micro and from the guard: the output count and each tap's element count,
    # and the score, only in a bundle with a guard (without one, main.cc reports −1 and scores nothing)
    assert "tflite::MicroInterpreter::outputs_size() const" in nm
    assert ("tflite::ElementCount(TfLiteIntArray const&)" in nm) and ("drsn_guard_score" in nm) == guarded


@CROSS
def test_a_wrong_tflm_call_fails_the_compile(tmp_path):
    """The check can fail: a method TFLite Micro does not have, or a tensor field it does not have, is an error."""
    fw = make_bundle(tmp_path / "fw", "stm32h743", guard_fixture())
    main = (fw / "main.cc").read_text()
    for wrong in (main.replace("interpreter->outputs_size()", "interpreter->output_count()"),
                  main.replace("tap->data.int8[j]", "tap->data.i8[j]"),
                  main.replace("tflite::ElementCount(*tap->dims)", "tflite::ElementCount(tap->dims)")):
        assert wrong != main
        (fw / "main.cc").write_text(wrong)
        r = _cc(["arm-none-eabi-g++", *CPU["cortex-m7"][0].split(), "-std=c++17", *WARN, "-I.", f"-I{STANDIN}",
                 "-fsyntax-only", "main.cc"], fw)
        assert r.returncode != 0 and "error" in r.stderr


@CROSS
@pytest.mark.skipif(not shutil.which("cmake"), reason="needs apt package cmake")
def test_cmake_project_compiles_the_bundle_sources(tmp_path):
    """The bundle's CMake project, configured for arm-none-eabi-gcc with TFLM_DIR at the stand-in headers (so no
    TFLite Micro source is globbed): every object of the firmware's own sources compiles with the project's flags,
    drsn_guard.c among them. Linking needs the real TFLite Micro (see the next test)."""
    fw = make_bundle(tmp_path / "fw", "stm32h743", guard_fixture())
    build = tmp_path / "build"
    r = _cc(["cmake", "-S", fw, "-B", build, "-G", "Unix Makefiles", f"-DTFLM_DIR={STANDIN}",
             *_cross_cmake_args()], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    objects = ["main.cc.obj", "model_data.cc.obj", "drsn_proto.c.obj", "drsn_guard.c.obj", "board.c.obj",
               "board_dwt.c.obj"]
    r = _cc(["make", "-C", build, "-f", "CMakeFiles/drsn_fw.elf.dir/build.make",
             *[f"CMakeFiles/drsn_fw.elf.dir/{o}" for o in objects]], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert all((build / "CMakeFiles/drsn_fw.elf.dir" / o).is_file() for o in objects)
    flags = (build / "CMakeFiles/drsn_fw.elf.dir/flags.make").read_text()
    assert "-mcpu=cortex-m7" in flags and "-DTF_LITE_STATIC_MEMORY" in flags


def _cross_cmake_args() -> list[str]:
    return ["-DCMAKE_SYSTEM_NAME=Generic", "-DCMAKE_SYSTEM_PROCESSOR=arm", "-DCMAKE_C_COMPILER=arm-none-eabi-gcc",
            "-DCMAKE_CXX_COMPILER=arm-none-eabi-g++", "-DCMAKE_ASM_COMPILER=arm-none-eabi-gcc",
            "-DCMAKE_TRY_COMPILE_TARGET_TYPE=STATIC_LIBRARY"]


@pytest.mark.slow
@CROSS
@pytest.mark.skipif(not os.environ.get("TFLM_DIR"),
                    reason="set TFLM_DIR to a tflite-micro checkout with its third-party headers downloaded "
                           "(no machine here can fetch it): builds the bundle against the real TFLite Micro")
def test_bundle_builds_with_real_tflite_micro(tmp_path):
    """The whole firmware (TFLite Micro, main.cc, the guard, the protocol, the board glue) compiles and links for
    the STM32H743's Cortex-M7 through the bundle's CMake project: the real API, not the stand-in. Whether it runs
    is for a board (or an emulator with a UART board file) to show."""
    fw = make_bundle(tmp_path / "fw", "stm32h743", guard_fixture())
    build = tmp_path / "build"
    r = _cc(["cmake", "-S", fw, "-B", build, f"-DTFLM_DIR={os.environ['TFLM_DIR']}", *_cross_cmake_args()], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _cc(["cmake", "--build", build, "-j", "2"], tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    nm = subprocess.run(["arm-none-eabi-nm", build / "drsn_fw.elf"], capture_output=True, text=True, check=True).stdout
    assert " drsn_guard_score" in nm and " main" in nm


# ------------------------------------------------------------------------------------ main.cc running on the host
def build_host_firmware(fw: Path, out: Path, tap_dims) -> Path:
    """main.cc with the bundle's protocol, guard and board_host_pty.c (the protocol on stdin/stdout), linked with
    fake_runtime.cc in place of TFLite Micro, for this machine."""
    from drsn_edge.firmware.cfirmware import TEMPLATES

    n_ops = int(re.search(r"MicroMutableOpResolver<(\d+)>", (fw / "main.cc").read_text()).group(1))
    resolver = out / "fake_resolver.cc"  # the Add* methods main.cc calls, for its resolver size
    resolver.write_text('#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\nnamespace tflite {\n'
                        + "".join(f"template <unsigned int N> TfLiteStatus MicroMutableOpResolver<N>::{m}() "
                                  "{ return kTfLiteOk; }\n" for m in sorted(set(RESOLVER.values())))
                        + f"template class MicroMutableOpResolver<{n_ops}>;\n}}\n")
    objs = []
    for src, lang in ((fw / "drsn_proto.c", "c"), (fw / "drsn_guard.c", "c"), (TEMPLATES / "board_host_pty.c", "c"),
                      (fw / "main.cc", "c++"), (fw / "model_data.cc", "c++"), (resolver, "c++"),
                      (STANDIN / "fake_runtime.cc", "c++")):
        obj = out / f"{src.name}.o"
        std = ["gcc", "-std=c99", "-D_GNU_SOURCE"] if lang == "c" else ["g++", "-std=c++17"]
        r = _cc([*std, *WARN, "-DFAKE_INPUT_LEN=512", "-DFAKE_LOGITS=10",
                 f"-DFAKE_TAP_DIMS={','.join(map(str, tap_dims))}", f"-I{fw}", f"-I{STANDIN}", f"-I{TEMPLATES}",
                 "-c", src, "-o", obj], out)
        assert r.returncode == 0, f"{src.name}: {r.stderr}"
        objs.append(obj)
    r = _cc(["g++", *objs, "-o", out / "drsn_fw"], out)
    assert r.returncode == 0, r.stderr
    return out / "drsn_fw"


class HostBoard:
    """The host firmware speaking the protocol on its stdin/stdout (pipes keep what it sends before the host
    reads, such as an ERROR at start-up; a pseudo-terminal opened later would drop it), through SerialClient."""

    timeout = 0  # SerialClient waits on fileno() with select, then reads what has arrived

    def __init__(self, exe: Path):
        from drsn_edge.firmware.protocol import SerialClient

        self.proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.name = "the host firmware"
        self.client = SerialClient(self, timeout_s=5.0, retries=0)

    def fileno(self) -> int:
        return self.proc.stdout.fileno()

    def read(self, n: int) -> bytes:
        try:
            return os.read(self.fileno(), n)
        except BlockingIOError:
            return b""

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)

    def close(self):
        self.proc.kill()
        self.proc.wait()


def _guard_lib(fw: Path, out: Path):
    import ctypes

    lib = out / "libguard.so"
    subprocess.run(["gcc", "-std=c99", "-O2", "-shared", "-fPIC", "-o", lib, fw / "drsn_guard.c"], check=True)
    fn = ctypes.CDLL(str(lib)).drsn_guard_score
    fn.argtypes, fn.restype = [ctypes.c_void_p], ctypes.c_float
    return fn


HOST_CC = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("g++")), reason="needs apt packages gcc g++")


@HOST_CC
def test_main_cc_scores_the_concatenated_taps(tmp_path):
    """main.cc itself, run on this machine with fake_runtime.cc standing in for TFLite Micro's interpreter (a
    "model" whose outputs are known slices of the input): INFO carries the guard's size and threshold; each RESULT
    carries the logits and the score drsn_guard_score gives for the tap outputs 1..3 concatenated in order, with
    the flags drsn_proto.c derives from it. What this shows is main.cc's own logic (copying, order, INFO, the
    count, the call), not TFLite Micro's kernels: those are the other tests' and the real build's part."""
    from drsn_edge.guard_export import guard_score_ref

    guard = guard_fixture()
    fw = make_bundle(tmp_path / "fw", "stm32h743", guard)
    board = HostBoard(build_host_firmware(fw, tmp_path, TAP_DIMS))
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (12, 512)).astype(np.int8)
    x[6:, :256] = rng.integers(-3, 4, (6, 256))  # taps near the zero points: other scores, some in domain
    try:
        info = board.client.get_info()
        assert (info.guard_dim, info.guard_threshold) == (15, np.float32(guard["threshold"]))
        results = [board.client.infer_int8(w) + (board.client.last_guard,) for w in x]
    finally:
        board.close()
    taps = np.concatenate([x[:, 64:68], x[:, 128:136], x[:, 192:195]], axis=1)  # outputs 1, 2, 3 of the fake model
    score_fn = _guard_lib(fw, tmp_path)
    device = np.array([score_fn(np.ascontiguousarray(t).ctypes.data) for t in taps], np.float32)
    for (logits, counts, g), w, s in zip(results, x, device):
        assert np.array_equal(logits, w[:10]) and counts >= 0
        assert g.scored and g.score == s and g.in_domain == (s <= np.float32(guard["threshold"]))
    ref = guard_score_ref(guard, taps)
    np.testing.assert_allclose(device, ref, rtol=1e-5)  # float32 sums of at most 15 products vs float64
    ok = np.array([g.in_domain for *_, g in results])
    assert ok.any() and not ok.all(), ref


@HOST_CC
@pytest.mark.parametrize("guarded, tap_dims, error", [
    (True, (4, 8, 4), "guard taps do not match drsn_guard.h"),  # one value more than drsn_guard.h's 15
    (True, (4, 8), "guard taps do not match drsn_guard.h"),     # a tap missing
    (False, (4,), "guard taps do not match drsn_guard.h"),      # taps, but a firmware without a guard
    (False, (), None),                                          # neither: answers "not scored"
])
def test_main_cc_checks_the_taps_at_start_up(tmp_path, guarded, tap_dims, error):
    """A model whose tap outputs do not add up to DRSN_GUARD_DIM (drsn_guard.c of another build) is refused at
    start-up with ERROR 5, before any request is served; a firmware and model without a guard answer
    flags 0 / score −1."""
    from drsn_edge.errors import DeviceError

    fw = make_bundle(tmp_path / "fw", "nrf52840", guard_fixture() if guarded else None)
    board = HostBoard(build_host_firmware(fw, tmp_path, tap_dims))
    try:
        if error:
            with pytest.raises(DeviceError, match=f"device error 5 on .*: {error}"):
                board.client.get_info()
        else:
            assert board.client.get_info().guard_dim == 0
            board.client.infer_int8(np.ones(512, np.int8))
            g = board.client.last_guard
            assert (g.scored, g.in_domain, g.score) == (False, False, -1.0)
    finally:
        board.close()
