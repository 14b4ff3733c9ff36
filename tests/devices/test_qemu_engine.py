"""End to end on emulated boards: a small int8 DRSN-CW (depth 1, 512-sample window) → the generated C engine
→ firmware for qemu-m4, qemu-m7, qemu-m33 and qemu-m55 → run_mcu_check over the `qemu` transport, which must be
100 % bit-exact against TFLite Micro's kernels (tflm_run(..., raw=True)) on the host."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
                       reason="needs apt packages qemu-system-arm gcc-arm-none-eabi picolibc-arm-none-eabi"),
]
WINDOW = 512
# drsn_kernels.c's DSP path calls __ror, which arm-none-eabi-gcc 12's arm_acle.h does not declare: the engine
# is built with its portable C path here (same integer results by construction).
ENGINE_FLAGS = ("-DDRSN_DSP=0",)


@pytest.fixture(scope="module")
def int8_model():
    for mod in ("litert_torch", "ai_edge_quantizer", "tflite_micro"):
        pytest.importorskip(mod, reason=f"{mod} is not installed: pip install 'drsn-edge[tflite]'")
    import torch

    from drsn_edge.backends import tflite as tfl
    from drsn_edge.models import create_model

    from ..conftest import randomize_bn
    from ..backends.test_tflite import _windows

    torch.manual_seed(0)
    model = randomize_bn(create_model("drsn-cw", classes=10, depth=1), mean_span=0.4, bias_span=0.4)
    q = tfl.quantize_int8(tfl.float_tflite(model, WINDOW), _windows(24, seed=1))
    x = _windows(40, seed=2)
    with torch.no_grad():
        float_logits = model(torch.from_numpy(x)).numpy()
    return q, x, float_logits


@pytest.mark.parametrize("target_name", ["qemu-m4", "qemu-m7", "qemu-m33", "qemu-m55"])
def test_c_engine_on_qemu_is_bit_exact_with_tflm(int8_model, tmp_path, target_name):
    from drsn_edge.backends.tflm import tflm_run
    from drsn_edge.cengine import generate
    from drsn_edge.devices import open_device
    from drsn_edge.devices.mcu import Expected, McuRunner
    from drsn_edge.firmware.cfirmware import build_qemu_elf
    from drsn_edge.mcu_check import run_mcu_check
    from drsn_edge.targets import get_target

    q, x, float_logits = int8_model
    gen = generate(q, tmp_path / "c")
    target = get_target(target_name)
    memory = build_qemu_elf(tmp_path / "c", target, tmp_path / "fw.elf", extra_flags=ENGINE_FLAGS)
    ref = tflm_run(q, x, raw=True)
    labels = float_logits.argmax(1)  # a random model: judge agreement, not skill
    runner = McuRunner(open_device(f"qemu://{target.device['machine']}", elf=tmp_path / "fw.elf"),
                       Expected.from_tflite(q), name=f"c engine on {target_name} (int8)", timeout_s=30)
    lenient = dataclasses.replace(target, check={**target.check, "min_accuracy": 0.0, "max_drop_pp": 100.0})
    res = run_mcu_check(runner, x, labels, ref, float_logits, memory, lenient, macs=gen["macs"], chunk=16)
    assert res["agreement_with_reference"] == 1.0 and res["max_abs_diff_lsb"] == 0, res
    assert res["passed"] and res["failures"] == []
    assert res["accuracy_float"] == 1.0 and res["accuracy"] == res["agreement_with_float"]
    assert res["count_unit"] == "instructions" and res["latency_is_estimate"]
    assert res["instructions_per_mac"] == pytest.approx(res["instructions_per_inference"] / gen["macs"])
    assert 1 < res["instructions_per_mac"] < 100
    hz = target.hardware["clock_mhz"] * 1e6
    assert res["latency_ms"] == pytest.approx(1e3 * res["instructions_per_inference"] / hz)
    assert res["flash_bytes"] == memory["flash_bytes"] > gen["weight_bytes"]
    assert res["ram_bytes"] == memory["ram_bytes"] > gen["arena_bytes"]
    assert runner.link.proc.poll() is not None


@pytest.fixture(scope="module")
def guarded_model():
    """The same kind of model with a domain guard on all its taps: int8 .tflite with tap outputs, and the guard
    adapted to TFLite Micro's features (what a `c` build writes into its sidecar)."""
    for mod in ("litert_torch", "ai_edge_quantizer", "tflite_micro"):
        pytest.importorskip(mod, reason=f"{mod} is not installed: pip install 'drsn-edge[tflite]'")
    import types

    import numpy as np
    import torch

    from drsn_edge.backends import tflite as tfl
    from drsn_edge.guard import available_taps, fit, tap_features
    from drsn_edge.guard_export import tflite_guard
    from drsn_edge.models import create_model

    from ..backends.test_tflite import _windows
    from ..conftest import randomize_bn

    torch.manual_seed(0)
    model = randomize_bn(create_model("drsn-cw", classes=10, depth=1), mean_span=0.4, bias_span=0.4).eval()
    taps = available_taps(model)
    train, held, x = _windows(200, seed=3), _windows(100, seed=4), _windows(24, seed=2)
    with torch.no_grad():
        y = model(torch.from_numpy(train)).numpy().argmax(1)
    f, dims = tap_features(model, train, taps)
    g = fit(f, y, tap_features(model, held, taps)[0], quantile=0.9, classes=10)
    g.taps, g.tap_dims = taps, dims
    q = tfl.quantize_int8(tfl.float_tflite(model, WINDOW, taps=taps), _windows(24, seed=1))
    bundle = types.SimpleNamespace(meta={"guard": g.to_json()}, model=model)
    graph = tfl.check_integer_only(q)
    x = np.concatenate([x, 3 * _windows(8, seed=5)[:, :, ::-1].copy()])  # some unlike the others
    return q, tflite_guard(bundle, q, graph, _windows(24, seed=1)), x


def test_c_engine_guard_on_qemu_m7_returns_the_flags(guarded_model, tmp_path):
    """Taps bit-exact with TFLite Micro; the device's float score equals the host's (float64) on the same int8
    taps up to float32 rounding; the flags the firmware returns equal the host's."""
    import numpy as np

    from drsn_edge.backends.tflite import quantize_input
    from drsn_edge.backends.tflm import tflm_outputs_raw
    from drsn_edge.cengine import HostEngine, generate
    from drsn_edge.devices import open_device
    from drsn_edge.devices.mcu import Expected, McuRunner
    from drsn_edge.firmware.cfirmware import build_qemu_elf
    from drsn_edge.guard_export import guard_score_ref
    from drsn_edge.targets import get_target

    q, guard, x = guarded_model
    generate(q, tmp_path / "c", guard=guard)
    outs = tflm_outputs_raw(q, x)
    ref_taps = np.concatenate(outs[1:], axis=1)
    ref = guard_score_ref(guard, ref_taps)
    host = HostEngine(tmp_path / "c")
    io = Expected.from_tflite(q)
    logits, taps = host.run_taps(quantize_input(x.reshape(len(x), -1), io.input_scale, io.input_zp))
    assert np.array_equal(logits, outs[0]) and np.array_equal(taps, ref_taps)
    np.testing.assert_allclose(host.guard_score(taps), ref, rtol=1e-4)  # float32 sums of ≤ 48 terms vs float64
    target = get_target("qemu-m7")
    build_qemu_elf(tmp_path / "c", target, tmp_path / "fw.elf", extra_flags=ENGINE_FLAGS)
    runner = McuRunner(open_device(f"qemu://{target.device['machine']}", elf=tmp_path / "fw.elf"), io,
                       name="c engine on qemu-m7 (int8)", timeout_s=30)
    runner.activate()
    try:
        got = runner.infer(x)
        score, ok = runner.guard_result(x)
        assert (runner.info.guard_dim, runner.info.guard_threshold) == (guard["dim"], np.float32(guard["threshold"]))
    finally:
        runner.deactivate()
    assert np.array_equal(runner.last_raw, outs[0]) and got.shape == (len(x), 10)
    np.testing.assert_allclose(score, ref, rtol=1e-4)  # the same float32 code, on a Cortex-M7 FPU
    near = np.abs(ref - guard["threshold"]) <= 1e-4 * guard["threshold"]
    assert np.array_equal(ok[~near], (ref <= guard["threshold"])[~near])
    assert ok.any() and not ok.all(), ref  # the guard takes some windows and refuses others
