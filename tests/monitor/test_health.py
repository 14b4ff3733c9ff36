"""The health state machine: hand-computed sequences of votes and states."""

import numpy as np
import pytest

from drsn_edge.errors import InputError
from drsn_edge.monitor.health import HealthConfig, HealthMachine

CLASSES = ["normal", "IR", "OR"]
H, I, O = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]


def machine(**kw):
    cfg = dict(k=3, n=5, m=2, smoothing=1.0, min_confidence=0.5)
    cfg.update(kw)
    return HealthMachine(CLASSES, HealthConfig(**cfg))


def labels(m, seq):
    out = []
    for item in seq:
        if item == "stall":
            out.append(m.stalled().state.label)
        elif isinstance(item, str):
            out.append(m.update(sensor=item).state.label)
        elif isinstance(item, tuple):  # (probs, in_domain)
            out.append(m.update(item[0], in_domain=item[1]).state.label)
        else:
            out.append(m.update(item).state.label)
    return out


def test_enters_fault_after_k_of_n_and_clears_after_m_healthy():
    m = machine()
    got = labels(m, [H, H, I, H, I, I, H, H])
    # healthy after 2 healthy in a row; fault when the 3rd IR vote lands among the last 5 (window 5);
    # 1 healthy is not enough to clear (M=2), the 2nd is.
    assert got == ["starting", "healthy", "healthy", "healthy", "healthy", "fault:IR", "fault:IR", "healthy"]


def test_single_noisy_windows_never_alarm():
    m = machine()
    seq = [H, H] + [I, H, H, O, H, H] * 20  # never 3 faults among any 5 consecutive windows
    assert set(labels(m, seq)[1:]) == {"healthy"}


def test_fault_counts_any_fault_class_and_names_the_most_voted():
    m = machine()
    got = labels(m, [H, H, I, O, I])
    assert got[-1] == "fault:IR"  # 3 fault votes of 5; IR voted twice, OR once


def test_fault_class_changes_only_on_a_strict_majority():
    m = machine(m=5)
    got = labels(m, [I, I, I, O, O, O])
    # last 5 at the end: I I O O O → OR has more votes than IR
    assert got == ["starting", "starting", "fault:IR", "fault:IR", "fault:IR", "fault:OR"]
    m = machine(m=5)
    got = labels(m, [I, I, I, O, O])  # I I I O O: IR keeps it
    assert got[-1] == "fault:IR"


def test_tie_keeps_the_current_fault_class():
    m = machine(k=2, n=4, m=5)
    got = labels(m, [I, I, O, O])  # 2 IR, 2 OR: no strict majority → stays IR
    assert got == ["starting", "fault:IR", "fault:IR", "fault:IR"]


def test_sensor_state_from_bad_windows_with_reason_and_recovery():
    m = machine()
    got = labels(m, [H, H, "nan", "flat", "flat", H, H])
    assert got == ["starting", "healthy", "healthy", "healthy", "sensor", "sensor", "healthy"]
    assert m.state.name == "healthy"
    m = machine()
    m.update(H), m.update(H)
    for q in ("nan", "flat", "flat"):
        step = m.update(sensor=q)
    assert step.state.reason == "flat" and step.changed and step.previous.label == "healthy"


def test_out_of_domain_windows_give_unknown_not_fault():
    m = machine()
    got = labels(m, [H, H, (I, False), (I, False), (I, False)])
    assert got[-1] == "unknown"
    assert m.state.fault is None
    # back in the domain, healthy windows clear it like any other state
    assert labels(m, [H, H]) == ["unknown", "healthy"]


def test_stall_enters_no_data_once_and_data_returns_to_the_held_state():
    m = machine()
    labels(m, [I, I, I])
    first, second = m.stalled(), m.stalled()
    assert first.changed and first.state.label == "no data" and first.previous.label == "fault:IR"
    assert not second.changed
    step = m.update(I)
    assert step.changed and step.previous.label == "no data" and step.state.label == "fault:IR"


def test_smoothing_is_an_exponential_average_and_low_confidence_abstains():
    m = machine(smoothing=0.5, min_confidence=0.6)
    s1 = m.update([0.9, 0.1, 0.0])
    np.testing.assert_allclose(s1.smoothed, [0.9, 0.1, 0.0])
    s2 = m.update([0.1, 0.9, 0.0])
    np.testing.assert_allclose(s2.smoothed, [0.5, 0.5, 0.0])  # 0.5·new + 0.5·old
    assert s2.vote.kind is None  # 0.5 < 0.6: no vote
    s3 = m.update([0.1, 0.9, 0.0])
    np.testing.assert_allclose(s3.smoothed, [0.3, 0.7, 0.0])
    assert (s3.vote.kind, s3.vote.detail) == ("fault", "IR")


def test_abstaining_windows_break_the_healthy_run():
    m = machine(min_confidence=0.9)
    got = labels(m, [H, [0.6, 0.4, 0.0], H, H])
    assert got == ["starting", "starting", "starting", "healthy"]


def test_change_is_reported_once_per_change():
    m = machine()
    changes = [m.update(p).changed for p in [H, H, H, I, I, I, I, H, H, H]]
    assert changes == [False, True, False, False, False, True, False, False, True, False]


@pytest.mark.parametrize("kw,msg", [({"k": 6, "n": 5}, "K ≤ N"), ({"k": 0}, "K ≤ N"), ({"m": 0}, "at least 1"),
                                    ({"smoothing": 0.0}, "smoothing"), ({"min_confidence": 1.5}, "confidence"),
                                    ({"healthy_class": "ok"}, "healthy class 'ok'")])
def test_bad_thresholds_are_refused(kw, msg):
    with pytest.raises(InputError, match=msg):
        machine(**kw)


def test_probabilities_of_the_wrong_length_are_a_programming_error():
    with pytest.raises(ValueError):
        machine().update([0.5, 0.5])
