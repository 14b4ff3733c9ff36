"""The shipped model through the generated C engine on the host: bit-exact with TFLite Micro, and the
generated interface and memory plan."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from drsn_edge.cengine import HostEngine, generate
from drsn_edge.cengine.lower import Node
from drsn_edge.cengine.planner import plan

from .conftest import quantize_windows
from .tflbuild import tflm_raw


@pytest.fixture(scope="module")
def engines(shipped_int8, tmp_path_factory):
    q, _ = shipped_int8
    out = {}
    for dsp in (False, True):
        folder = tmp_path_factory.mktemp(f"shipped_dsp{int(dsp)}")
        out[dsp] = (generate(q, folder, dsp=dsp), HostEngine(folder), folder)
    return out


def test_calibration_windows_bit_exact_with_tflm(shipped_int8, engines):
    q, cx = shipped_int8
    xq = quantize_windows(q, cx)
    assert len(xq) >= 340
    ref = tflm_raw(q, xq)
    for dsp, (_, eng, _) in engines.items():
        out = eng.run_raw(xq)
        assert np.array_equal(out, ref), f"dsp={dsp}: {int((out != ref).any(1).sum())} of {len(xq)} windows differ"


def test_generated_interface(shipped_int8, engines):
    q, _ = shipped_int8
    info, _, folder = engines[False]
    header = (folder / "drsn_model.h").read_text()
    assert f"#define DRSN_MODEL_CRC 0x{zlib.crc32(q) & 0xFFFFFFFF:08x}u" in header
    assert "#define DRSN_INPUT_SIZE 2048" in header and "#define DRSN_OUTPUT_SIZE 10" in header
    assert "int drsn_infer(const int8_t *in, int8_t *out);" in header
    src = (folder / "drsn_model.c").read_text()
    assert "malloc" not in src and "static int32_t drsn_arena[" in src
    assert src.count("DRSN_KERNEL_BEGIN(") == len(info["kernels"]) == src.count("DRSN_KERNEL_END(")
    # every op of the graph is accounted for: RESHAPE/PAD/TRANSPOSE folded, element-wise chains in tables
    assert len(info["ops"]) == 209 and len(info["kernels"]) < len(info["ops"])
    assert {"PAD", "RESHAPE", "TRANSPOSE"} <= set(info["ops"])
    assert not {"pad", "transpose"} & set(info["kernel_kinds"])
    # 1.32 M multiply-accumulates, about 13 kB of int8 weights
    assert 1_300_000 < info["macs"] < 1_400_000


def test_memory_plan_is_a_fraction_of_the_tflm_arena(engines):
    info, _, _ = engines[False]
    # the TFLM interpreter needs a 65,104-byte arena for this model (benchmarks/results/mcu_builds.txt)
    assert info["arena_bytes"] <= 0.3 * 65_104


def test_planner_reuses_dead_buffers_and_runs_in_place():
    """Hand-computed plan. t0 (input) -conv-> t1 (400 B) -rescale, in place-> t2 -conv-> t3 (1000 B)
    -mean (64 B scratch)-> t4 (10 B, the output). Largest first: t3 at 0; t1/t2 live while t3 is
    written, so at 1000; the scratch and t4 reuse t1's bytes once it is dead."""
    nodes = [Node("conv", [0], "A", [0], 1), Node("rescale", [1], "B", [1], 2, inplace=[0]),
             Node("conv", [2], "C", [2], 3), Node("mean", [3], "D", [3], 4, scratch=64)]
    sizes = {0: 1000, 1: 400, 2: 400, 3: 1000, 4: 10}
    p = plan(nodes, sizes, graph_input=0, graph_output=4, consts={})
    assert p.inplace == [1]
    assert p.offsets == {1: 1000, 2: 1000, 3: 0, 4: 1064}
    assert p.scratch == {3: 1000}
    assert p.arena_bytes == 1400


@pytest.mark.slow
def test_evaluation_set_bit_exact_with_tflm(shipped_int8, engines):
    """The build's default evaluation set (EvalSpec: 10 windows/class, clean + gaussian/laplacian/pink at
    -5/0/5 dB)."""
    from drsn_edge.evalspec import EvalSpec
    from drsn_edge.evaluate import resolve_model

    q, _ = shipped_int8
    bundle, _ = resolve_model(None)
    xq = quantize_windows(q, EvalSpec().windows(bundle.meta).x)
    assert len(xq) == 1000
    ref = tflm_raw(q, xq)
    for dsp, (_, eng, _) in engines.items():
        out = eng.run_raw(xq)
        assert np.array_equal(out, ref), f"dsp={dsp}: {int((out != ref).any(1).sum())} of {len(xq)} windows differ"
