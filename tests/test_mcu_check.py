"""run_mcu_check's figures on hand-computable cases, with a scripted runner (plain Python: the device side
is tested for real in tests/devices)."""

from __future__ import annotations

import numpy as np
import pytest

from drsn_edge.devices.mcu import Timing
from drsn_edge.mcu_check import run_mcu_check
from drsn_edge.targets import get_target


class Scripted:
    """Answers each window with a fixed int8 row and count."""

    def __init__(self, raw, counts, unit="instructions"):
        self.raw, self.counts, self.unit = np.asarray(raw, np.int8), list(counts), unit
        self.i, self.active, self.deactivated = 0, False, 0

    def activate(self):
        self.active = True

    def infer(self, x):
        n = len(x)
        self.last_raw = self.raw[self.i:self.i + n]
        self.i += n
        return self.last_raw.astype(np.float32)

    def timing(self):
        lat = [c / 480e3 for c in self.counts[: self.i]]  # a 480 MHz board's cycles
        return Timing(lat, "device timer (480 MHz cycle counter)", self.counts[: self.i], self.unit)

    def deactivate(self):
        self.deactivated += 1


REF = np.array([[1, 2], [4, 3], [5, 6], [8, 7]], np.int8)
LABELS = np.array([1, 0, 1, 1])
FLOAT = np.array([[0, 1], [1, 0], [0, 1], [0, 1.0]])
X = np.zeros((4, 1, 8), np.float32)


def test_bit_exact_run_on_qemu_target():
    r = Scripted(REF, [1000, 1040, 1000, 1040])
    res = run_mcu_check(r, X, LABELS, REF, FLOAT, {"flash_bytes": 50_000, "ram_bytes": 20_000},
                        get_target("qemu-m7"), macs=10, chunk=3)
    assert r.deactivated == 1
    assert res["agreement_with_reference"] == 1.0 and res["max_abs_diff_lsb"] == 0
    assert res["accuracy"] == 0.75 and res["accuracy_float"] == 1.0 and res["accuracy_drop_pp"] == 25.0
    assert res["agreement_with_float"] == 0.75
    assert res["instructions_per_inference"] == 1020 and res["instructions_per_mac"] == 102
    assert res["cycles_per_inference"] is None
    assert res["latency_ms"] == pytest.approx(1020 / 25e6 * 1e3) and res["latency_is_estimate"]
    assert "estimate" in res["latency_source"] and "QEMU does not model timing" in res["latency_source"]
    assert (res["flash_bytes"], res["ram_bytes"]) == (50_000, 20_000)
    # 75 % < min_accuracy 0.90 and a 25 pp drop > 1 pp: both named, nothing else
    assert not res["passed"]
    assert res["failures"] == ["accuracy 75.00 % < 90.0 %", "drop 25.00 pp > 1 pp"]


def test_mismatch_memory_and_latency_failures_on_a_board():
    raw = REF.copy()
    raw[3] = [8, 9]  # 2 LSB off in one window
    r = Scripted(raw, [48_000_000] * 4, unit="cycles")
    res = run_mcu_check(r, X, LABELS, REF, None, {"flash_bytes": 3 << 20, "ram_bytes": 1000},
                        get_target("stm32h743"), macs=1000)
    assert res["agreement_with_reference"] == 0.75 and res["max_abs_diff_lsb"] == 2
    assert res["top1_agreement_with_reference"] == 0.75 and res["accuracy"] == 1.0
    assert res["accuracy_float"] is None and res["accuracy_drop_pp"] is None
    assert res["cycles_per_inference"] == 48e6 and res["cycles_per_mac"] == 48_000
    assert res["instructions_per_inference"] is None
    assert res["latency_ms"] == pytest.approx(100.0) and not res["latency_is_estimate"]
    assert res["failures"] == [
        "int8 outputs differ from the reference in 1 of 4 windows (up to 2 LSB): the device must be bit-exact",
        f"flash {3 << 20} B exceeds the target's {2048 * 1024} B",
    ]  # 100 ms is exactly the 100 ms limit: passes


def test_runner_deactivated_when_it_fails():
    class Broken(Scripted):
        def infer(self, x):
            raise RuntimeError("line down")

    r = Broken(REF, [1] * 4)
    with pytest.raises(RuntimeError):
        run_mcu_check(r, X, LABELS, REF, None, {}, get_target("qemu-m7"))
    assert r.deactivated == 1


def test_estimated_latency_is_judged_and_labelled():
    r = Scripted(REF, [300_000_000] * 4)  # 12 s at 25 MHz
    labels = REF.argmax(1)
    res = run_mcu_check(r, X, labels, REF, np.eye(2)[labels], {}, get_target("qemu-m7"))
    assert res["accuracy"] == res["accuracy_float"] == 1.0
    assert res["failures"] == ["estimated latency 12000.00 ms > 10000 ms"]
