"""The host backend keeps the fastest runtime within the accuracy gate and says why."""

import pytest

from drsn_edge.backends.host import pick
from drsn_edge.errors import CheckFailedError


def _c(name, p50, drop, gate=1.0):
    return {"candidate": name, "p50_us": p50, "drop_pp": drop, "within_gate": drop <= gate}


def test_the_fastest_within_the_gate_wins_and_the_reason_names_the_others():
    got = pick([_c("litert int8", 500.0, 0.2), _c("litert fp32", 120.0, 0.0), _c("onnx int8", 90.0, 1.5)], 1.0)
    assert got["candidate"] == "litert fp32"  # onnx int8 is faster but drops 1.5 pp > 1 pp
    assert got["reason"] == ("fastest of 2 candidates within the 1 pp accuracy gate: batch-1 p50 120 µs, drop "
                             "0.00 pp; others: litert int8 500 µs; onnx int8 90 µs (drop 1.50 pp, over the gate)")


def test_no_candidate_within_the_gate_fails_the_build():
    with pytest.raises(CheckFailedError, match=r"no host runtime keeps the accuracy within --max-drop 0.5 pp "
                                               r"\(a 0.60 pp, b 2.00 pp\)"):
        pick([_c("a", 10.0, 0.6, 0.5), _c("b", 20.0, 2.0, 0.5)], 0.5)


def test_a_candidate_this_machine_cannot_make_is_named_with_why_and_never_chosen():
    failed = {"candidate": "c engine fp32 (native)", "p50_us": None, "within_gate": False,
              "failed": "no C compiler (gcc) found; install gcc to run the float host engine on the host"}
    got = pick([_c("litert fp32", 120.0, 0.0), failed], 1.0)
    assert got["candidate"] == "litert fp32"
    assert got["reason"] == ("fastest of 1 candidates within the 1 pp accuracy gate: batch-1 p50 120 µs, drop 0.00 pp; "
                             "others: c engine fp32 (native) not usable here (no C compiler (gcc) found; install gcc "
                             "to run the float host engine on the host)")


def test_every_runtime_is_a_candidate_including_the_native_engine():
    from drsn_edge.backends.host import CANDIDATES

    assert {label: (rt, prec) for label, (rt, prec, _) in CANDIDATES.items()} == {
        "litert fp32": ("litert", "fp32"), "litert int8": ("litert", "int8"),
        "onnxruntime fp32": ("onnxruntime", "fp32"), "onnxruntime int8 QDQ": ("onnxruntime", "int8"),
        "c engine fp32 (native)": ("native", "fp32")}
