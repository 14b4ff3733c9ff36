"""`drsn-edge build` for microcontroller targets (needs the tflite extra; skipped without it)."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("litert_torch", reason="the tflite extra (litert-torch) is not installed")
pytest.importorskip("ai_edge_quantizer", reason="the tflite extra (ai-edge-quantizer) is not installed")
pytest.importorskip("tflite_micro", reason="the tflite extra (tflite-micro) is not installed")

from .conftest import run_cli  # noqa: E402


@pytest.fixture(scope="module")
def mcu_build(tiny_model, tiny_calib, tmp_path_factory):
    out = tmp_path_factory.mktemp("mcu") / "h743"
    r = run_cli("build", tiny_model, "--target", "stm32h743", "--engine", "tflm", "--calib", tiny_calib, "-o", out,
                "--max-drop", "100", "--max-cell-drop", "100", "--json", timeout=600)
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


def test_bundle_contents(mcu_build):
    out, res = mcu_build
    assert sorted(p.name for p in out.iterdir()) == ["build.json", "firmware", "model.int8.json", "model.int8.tflite"]
    fw = out / "firmware"
    files = ["main.cc", "model_data.cc", "model_data.h", "drsn_proto.c", "drsn_proto.h", "drsn_guard.c", "drsn_guard.h",
             "board.h", "board.c", "board_dwt.c", "CMakeLists.txt", "platformio.ini", "README.md"]
    assert sorted(p.name for p in fw.iterdir()) == sorted(files + ["model.int8.tflite"])
    assert sorted(res["firmware_files"]) == sorted(f"firmware/{f}" for f in files)
    # the C array holds exactly the .tflite bytes, 16-byte aligned
    data = (out / "model.int8.tflite").read_bytes()
    arr = (fw / "model_data.cc").read_text()
    assert "alignas(16)" in arr and f"g_drsn_model_len = {len(data)};" in arr
    values = bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", arr))
    assert values == data
    # op resolver: exactly the ops the model uses
    main = (fw / "main.cc").read_text()
    adds = re.findall(r"resolver\.(Add\w+)\(\);", main)
    assert len(adds) == len(res["ops"]) and f"MicroMutableOpResolver<{len(res['ops'])}>" in main
    assert f"kArenaSize = {res['memory']['arena_bytes']};" in main
    assert "mcpu=cortex-m7" in (fw / "CMakeLists.txt").read_text()
    assert "{{" not in main + (fw / "README.md").read_text() + (fw / "platformio.ini").read_text()


def test_json_and_sidecar(mcu_build):
    out, res = mcu_build
    assert res["target"] == "stm32h743" and res["memory"]["fits"]
    mem = res["memory"]
    assert mem["flash_bytes"] == mem["model_bytes"] + mem["runtime_code_bytes"] + mem["guard_bytes"]
    from drsn_edge.firmware.bundle import arena_with_margin

    assert mem["arena_measured_bytes"] > 0 and mem["arena_bytes"] == arena_with_margin(mem["arena_measured_bytes"])
    assert mem["ram_budget_bytes"] == 512 * 1024
    acc = res["accuracy"]
    right_ref, right = round(acc["n"] * acc["reference_accuracy"]), round(acc["n"] * acc["accuracy"])
    assert acc["drop_pp"] == 100 * (right_ref - right) / acc["n"]  # exact: from window counts
    # LiteRT and TFLite Micro run the same int8 graph with kernels that may round a requantization one LSB
    # apart; such a difference flips top-1 only where two logits are within a few LSB, a rare window
    assert 0.9 <= res["litert_tflm_agreement"] <= 1
    side = json.loads((out / "model.int8.json").read_text())
    assert side["input"]["dtype"] == "int8" and side["output"]["dtype"] == "int8"
    assert side["tools"]["tflite-micro"] and side["memory"] == res["memory"]
    assert "DEQUANTIZE" not in res["ops"]


def test_model_that_does_not_fit_is_refused_with_numbers(tiny_model, tiny_calib, tmp_path):
    boards = tmp_path / "boards"
    boards.mkdir()
    (boards / "tiny-mcu.toml").write_text(
        'name = "tiny-mcu"\nfamily = "mcu"\nbackend = "tflm"\ndescription = "a board too small"\n'
        '[hardware]\ncpu = "cortex-m4"\nclock_mhz = 64\nflash_kb = 128\nram_kb = 32\n'
        '[device]\ntransport = "serial"\n[check]\nmax_latency_ms = 1000.0\n')
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("previous build")
    (out / "build.json").write_text("{}")  # marks the folder as an earlier build: it may be replaced
    r = run_cli("build", tiny_model, "--target", "tiny-mcu", "--engine", "tflm", "--targets-dir", boards, "--calib",
                tiny_calib, "-o", out, "--max-drop", "100", "--max-cell-drop", "100", timeout=600)
    assert r.returncode == 1, r.stderr
    assert "does not fit tiny-mcu" in r.stderr and "RAM" in r.stderr and "flash" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["build.json", "keep.txt"]


def test_unknown_target_suggests_names(tiny_model, tmp_path):
    r = run_cli("build", tiny_model, "--target", "stm32h74", "-o", tmp_path / "o")
    assert r.returncode == 2 and "did you mean stm32h743" in r.stderr
    assert not (tmp_path / "o").exists()


def test_broken_calibration_exit_2(tiny_model, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really")
    r = run_cli("build", tiny_model, "--target", "stm32h743", "--calib", bad, "-o", tmp_path / "o")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_auto_calibration_of_the_tflite_follows_the_rule(mcu_build):
    """The default (auto) measures global min/max and the percentile calibration on validation windows and keeps
    the one with the smallest worst-SNR drop; the build, its sidecar and its manifest say which."""
    from drsn_edge.quantize.auto import select

    out, res = mcu_build
    sel = res["method_selection"]
    assert [r["method"] for r in sel["table"]] == ["minmax", "percentile"]
    chosen = select(sel["table"], ("minmax", "percentile"))["method"]
    assert sel["chosen"] == chosen and res["method"].startswith(f"{chosen}: ")
    assert [r["chosen"] for r in sel["table"]] == [r["method"] == chosen for r in sel["table"]]
    assert sel["windows"] != res["evaluation"]["description"]  # chosen on other windows than those reported on
    side = json.loads((out / "model.int8.json").read_text())
    assert side["calibration"]["method"] == res["method"] and side["calibration"]["selection"] == sel


def test_an_explicit_tflite_method_is_used_as_given(tiny_model, tiny_calib):
    from types import SimpleNamespace

    from drsn_edge.backends.tflite import float_tflite, quantize_int8
    from drsn_edge.backends.tflite_calib import candidates, choose
    from drsn_edge.calibration import model_and_calibration

    ctx = SimpleNamespace(options=SimpleNamespace(method="percentile"))
    assert candidates(ctx) == {"percentile": 99.0}  # one calibration, nothing to choose
    assert choose(ctx, {"percentile": b"q"}) == (b"q", "percentile", None)
    assert candidates(SimpleNamespace(options=SimpleNamespace(method="auto"))) == {"minmax": None, "percentile": 99.0}
    bundle, *_, cx = model_and_calibration(tiny_model, tiny_calib)
    fb = float_tflite(bundle.model, bundle.window)
    assert quantize_int8(fb, cx, 99.0) != quantize_int8(fb, cx, None)  # the percentile clips: other scales


def test_bundle_scores_the_sidecars_guard(mcu_build):
    """drsn_guard.h/.c hold the sidecar's guard (refitted to TFLite Micro's taps); main.cc reports its size and
    threshold in INFO and scores the tap outputs; CMake and PlatformIO compile drsn_guard.c; the README and the
    memory fit count its constants."""
    from drsn_edge.guard_export import guard_c_sources, guard_const_bytes

    out, res = mcu_build
    fw, guard = out / "firmware", json.loads((out / "model.int8.json").read_text())["guard"]
    assert guard and guard["dim"] == sum(int(np.prod(o["shape"][1:])) for o in guard["outputs"])
    assert {n: (fw / n).read_text() for n in ("drsn_guard.h", "drsn_guard.c")} == guard_c_sources(guard)
    assert f"#define DRSN_GUARD_DIM {guard['dim']}\n" in (fw / "drsn_guard.h").read_text()
    lo, hi = (float(np.float32(guard["level"][k])) for k in ("lo", "hi"))  # for the board's own sensor code
    assert f"#define DRSN_GUARD_LEVEL_LO {lo!r}f\n#define DRSN_GUARD_LEVEL_HI {hi!r}f\n" in (fw / "drsn_guard.h").read_text()
    main = (fw / "main.cc").read_text()
    assert '#include "drsn_guard.h"' in main and "DRSN_GUARD_DIM, DRSN_GUARD_THRESHOLD};" in main
    assert "drsn_guard_score(guard_taps)" in main and "interpreter->output(i)" in main
    assert "drsn_guard.c" in (fw / "CMakeLists.txt").read_text()
    assert "+<drsn_guard.c>" in (fw / "platformio.ini").read_text()
    nbytes = guard_const_bytes(guard["dim"], guard["classes"])
    assert res["memory"]["guard_bytes"] == nbytes > 0
    readme = (fw / "README.md").read_text()
    assert "## Domain guard" in readme and f"Flash: {nbytes} bytes of constants" in readme
    assert all(f"`{t}`" in readme for t in guard["taps"])
    assert f"`DRSN_GUARD_LEVEL_HI` = {float(guard['level']['lo']):.4g} … {float(guard['level']['hi']):.4g}" in readme


def test_device_guard_score_equals_the_host_runners(mcu_build, tiny_data, tmp_path):
    """The bundle's drsn_guard.c, compiled natively and fed TFLite Micro's tap outputs (the interpreter's real
    kernels), scores windows as the host's TflmRunner does, and gives the same in-domain flags."""
    import ctypes

    from drsn_edge.backends import load_build
    from drsn_edge.backends.tflm import TflmRunner, tflm_outputs_raw
    from drsn_edge.data.dataset import load_dataset, normalize
    from drsn_edge.guard_export import guard_score_ref

    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("needs a C compiler (apt package gcc)")
    out, _ = mcu_build
    build = load_build(out)
    guard, q = build.sidecar["guard"], build.artifact.read_bytes()
    x = normalize(load_dataset(tiny_data).select_split("test").x[:12])
    x = np.concatenate([x, 3 * x[:4, :, ::-1]]).astype(np.float32)  # reversed and louder: unlike the training data
    outs = tflm_outputs_raw(q, x)
    taps = np.ascontiguousarray(np.concatenate(outs[1:], axis=1), dtype=np.int8)
    assert taps.shape == (len(x), guard["dim"])
    lib = tmp_path / "libguard.so"
    subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-o", lib,
                    out / "firmware" / "drsn_guard.c"], check=True)
    score_fn = ctypes.CDLL(str(lib)).drsn_guard_score
    score_fn.argtypes, score_fn.restype = [ctypes.c_void_p], ctypes.c_float
    device = np.array([score_fn(t.ctypes.data) for t in taps], np.float64)
    runner = TflmRunner(q, build.sidecar["memory"]["arena_bytes"], guard=guard)
    runner.infer(x)
    host = runner.last_guard
    np.testing.assert_allclose(guard_score_ref(guard, taps), host, rtol=1e-12)  # the same float64 arithmetic
    # float32 on the device vs float64 on the host, on the same int8 taps: rounding of sums of at most
    # DRSN_GUARD_DIM products (measured on this build, 48 values: ≤ 1.4e-6 relative)
    np.testing.assert_allclose(device, host, rtol=1e-4)
    threshold = np.float32(guard["threshold"])  # what INFO sends; drsn_proto.c compares in float32
    near = np.abs(host - threshold) <= 1e-4 * threshold
    assert np.array_equal((device <= threshold)[~near], (host <= guard["threshold"])[~near])
    assert (host <= guard["threshold"]).any() and (host > guard["threshold"]).any(), host


def test_tflm_build_runs_on_the_board_over_serial_never_silently_on_the_host(mcu_build):
    """A TFLite Micro build checked over serial:// talks to the flashed firmware (the protocol runner, with the
    sidecar's guard); --device local runs TFLite Micro's kernels here; qemu is refused (no image is linked)."""
    import os

    from drsn_edge.backends import load_build
    from drsn_edge.backends.tflm import TflmRunner
    from drsn_edge.devices.mcu import McuRunner
    from drsn_edge.errors import InputError

    out, _ = mcu_build
    build = load_build(out)
    assert isinstance(build.runner("local"), TflmRunner) and isinstance(build.runner(), TflmRunner)
    with pytest.raises(InputError, match="--engine c to run it under QEMU"):
        build.runner("qemu")
    host, board = os.openpty()  # a serial port with nobody on it: the runner opens it, sends nothing yet
    try:
        r = build.runner(f"serial://{os.ttyname(board)}")
        assert isinstance(r, McuRunner) and r.name == "tflm firmware on stm32h743 (int8)"
        assert r.guard_meta == build.sidecar["guard"] and r.guard_meta["dim"] > 0
        r.deactivate()
    finally:
        os.close(host)
        os.close(board)
