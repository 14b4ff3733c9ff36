"""Decoders, the streaming resampler, sliding windows and the per-window sample checks."""

import numpy as np
import pytest
from scipy.signal import resample_poly

from drsn_edge.monitor.stream import (F32Decoder, SampleChecks, StreamResampler, TextDecoder, Windower,
                                      check_windows, sniff_format)


def test_text_decoder_joins_split_lines_and_counts_garbage():
    d = TextDecoder()
    a = d.feed(b"1.5\n-2")
    b = d.feed(b"e-1\nhello\n\n nan \n3")
    c = d.finish()
    np.testing.assert_array_equal(a, [1.5])
    np.testing.assert_array_equal(b[:1], [-0.2])
    assert np.isnan(b[1]) and len(b) == 2  # 'nan' is a number (checked later), 'hello' is garbage
    np.testing.assert_array_equal(c, [3.0])
    assert d.bad_lines == 1


def test_f32_decoder_keeps_partial_samples_and_counts_a_short_tail():
    raw = np.array([1.0, -2.5, 3.25], "<f4").tobytes()
    d = F32Decoder()
    got = np.concatenate([d.feed(raw[:5]), d.feed(raw[5:11]), d.feed(raw[11:] + b"\x00\x00")])
    np.testing.assert_array_equal(got, [1.0, -2.5, 3.25])
    d.finish()
    assert d.short_bytes == 2


def test_sniff_format():
    assert sniff_format(b"0.12\n-3e-2\n") == "text"
    assert sniff_format(np.array([0.1, 2.0], "<f4").tobytes()) == "f32"


@pytest.mark.parametrize("src,dst", [(48000, 12000), (12800, 12000), (10000, 12000), (12000, 12000)])
def test_stream_resampler_equals_resample_poly(src, dst):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(30000)
    r = StreamResampler(src, dst)
    outs, i = [], 0
    while i < x.size:
        n = int(rng.integers(1, 4000))
        outs.append(r.push(x[i:i + n]))
        i += n
    y = np.concatenate(outs)
    ref = resample_poly(x, r.up, r.down)
    # all but the last few outputs (which need inputs after the end) are emitted
    assert ref.size - 25 <= y.size <= ref.size
    np.testing.assert_allclose(y, ref[:y.size], rtol=0, atol=1e-12)  # float64 summation order only


def test_windower_hops_across_pushes():
    w = Windower(5, 2)
    a, ea = w.push(np.arange(7))
    b, eb = w.push(np.arange(7, 12))
    np.testing.assert_array_equal(a, [[0, 1, 2, 3, 4], [2, 3, 4, 5, 6]])
    np.testing.assert_array_equal(b, [[4, 5, 6, 7, 8], [6, 7, 8, 9, 10]])
    np.testing.assert_array_equal(np.concatenate([ea, eb]), [5, 7, 9, 11])
    assert w.pending == 4  # the next window starts at sample 8: samples 8..11 wait for it


def test_windower_hop_larger_than_window_skips_samples():
    w = Windower(3, 5)
    a, e = w.push(np.arange(14))
    np.testing.assert_array_equal(a, [[0, 1, 2], [5, 6, 7], [10, 11, 12]])
    np.testing.assert_array_equal(e, [3, 8, 13])


def test_sample_checks():
    rng = np.random.default_rng(1)
    good = rng.standard_normal((1, 2048))
    nan = good.copy()
    nan[0, 10] = np.nan
    nan[0, 20] = np.inf
    flat = np.full((1, 2048), 0.25)
    stuck = good.copy()
    stuck[0, 1000:] = stuck[0, 1000]  # stuck for half the window
    clipped = np.clip(good * 3, -2.0, 2.0)
    q, nonfinite = check_windows(np.concatenate([good, nan, flat, stuck, clipped]), SampleChecks())
    assert q == [None, "nan", "flat", "flat", "clipped"]
    assert nonfinite == 2
    # with a known rail: |x| ≥ 2.0 on ≥ 1 % of the samples (at σ = 0.5 a sample reaches 2.0 once in 16 000)
    q, _ = check_windows(np.concatenate([0.5 * good, clipped]), SampleChecks(clip_level=2.0))
    assert q == [None, "clipped"]
