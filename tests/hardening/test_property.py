"""Property: every numeric and list option of every command (found by walking the Click group, so new
commands are covered too) keeps the contract for any value — NaN, ±inf, 0, negatives, huge, empty, odd
strings: exactly one JSON object, exit 2 or success, one stderr line, no traceback, no files. A value
outside the option's declared domain is refused naming the option."""

from __future__ import annotations

import math

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drsn_edge.cli import main

from .contract import expect

LIST_OPTIONS = {"--snr", "--split", "--noise", "--classes", "--snr-range", "--class-names", "--column", "--severity",
                "--enter", "--taps"}
# a base command line per command that stops right after the options are checked: its one input is missing
MISSING = "missing-input.npz"
BASE = {
    "data synth": ["-o", "out.txt"],  # refused (not .npz) after the options are parsed
    "data import": [MISSING, "-o", "out.npz"], "data info": [MISSING],
    "train": ["--data", MISSING, "-o", "out.drsn"], "evaluate": [MISSING],
    "export": [MISSING, "-o", "out.onnx"], "import": [MISSING, "-o", "out.drsn"],
    "calibration make": ["--data", MISSING, "-o", "out.npz"], "calibration info": [MISSING],
    "quantize": [MISSING, "-o", "out.onnx"], "lint": [MISSING], "targets": ["no-such-target"],
    "build": [MISSING, "--target", "host", "-o", "out"],
    "check": ["--target", "host", "--model", MISSING],
    "monitor": [MISSING, "--source", MISSING],
    "profile": [MISSING], "benchmark": [MISSING],
    "guard fit": [MISSING, "--data", MISSING, "-o", "out.drsn"],
    "data merge": [MISSING, MISSING, "-o", "out.npz"],
}


def commands(group=main, prefix=()):
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from commands(cmd, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), cmd


def numeric_and_list_options():
    out = []
    for path, cmd in commands():
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.is_flag:
                continue
            flag = max(p.opts, key=len)
            numeric = isinstance(p.type, (click.types._NumberParamTypeBase,)) or hasattr(p.type, "lo")
            if numeric or flag in LIST_OPTIONS:
                out.append((path, flag, p))
    return out


OPTIONS = numeric_and_list_options()
IDS = [f"{c} {f}" for c, f, _ in OPTIONS]


def test_every_numeric_option_has_a_bounded_finite_type():
    """No plain int/float option: each number is parsed by a type that refuses NaN/inf and has both bounds."""
    loose = []
    for path, flag, p in OPTIONS:
        t = p.type
        if flag in LIST_OPTIONS:
            continue
        if isinstance(t, click.IntRange) and t.min is not None and t.max is not None:
            continue
        if hasattr(t, "lo") and t.lo is not None and t.hi is not None:
            continue
        loose.append(f"{path} {flag}")
    assert not loose, f"options without a bounded, finite type: {loose}"
    assert len(OPTIONS) >= 40


HOSTILE = st.one_of(
    st.sampled_from(["nan", "-nan", "inf", "-inf", "+inf", "0", "-0", "-1", "1e308", "-1e308", "1e-300", "",
                     " ", "1,2", ",", "::", "1:2:0", "-5:5:1e-9", "0x10", "1_000", "١٢", "NaN,1,1", "1e999",
                     "9" * 40, "--json", "nan:nan", "a,b,c", "-", "\u00a0"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(max_size=12),
)


def _in_domain(t, value: str) -> bool | None:
    """Whether the option's own type accepts the value (None: list options, judged by the command)."""
    if not (hasattr(t, "lo") or isinstance(t, click.types._NumberParamTypeBase)):
        return None
    try:
        t.convert(value, None, None)
        return True
    except click.UsageError:
        return False


def _check(work, path, flag, p, value):
    cwd = work.cwd
    args = [*path.split(), *BASE[path], f"{flag}={value}"] if value.startswith("-") else \
        [*path.split(), *BASE[path], flag, value]
    run = expect(args, cwd, "input", timeout=120)
    if _in_domain(p.type, value) is False:
        assert flag in run.obj["error"], run.obj["error"]
    # a value the option takes: the command went on and stopped at the missing input, with the same contract


@pytest.mark.parametrize("path,flag,p", OPTIONS, ids=IDS)
@settings(max_examples=2, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(value=HOSTILE)
def test_option_values_keep_the_contract(work, path, flag, p, value):
    if "\x00" in value:
        return  # a NUL byte cannot be passed in argv at all
    _check(work, path, flag, p, value)


@pytest.mark.slow
@pytest.mark.parametrize("path,flag,p", OPTIONS, ids=IDS)
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(value=HOSTILE)
def test_option_values_keep_the_contract_long_sweep(work, path, flag, p, value):
    if "\x00" in value:
        return
    _check(work, path, flag, p, value)


def test_base_commands_are_known():
    assert {c for c, _ in commands()} - set(BASE) <= {"models"}, "add a base command line for new commands"
