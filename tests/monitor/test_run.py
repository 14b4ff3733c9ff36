"""The monitor loop over real sources: files, stdin, a TCP gateway, a serial port (pty); bad samples,
stalls, rates."""

import os
import socket
import threading
import time

import numpy as np
import pytest
from scipy.io import wavfile
from scipy.signal import resample_poly

from drsn_edge.errors import InputError
from drsn_edge.monitor.sources import serial_source, stdin_source, tcp_source


def states(lines):
    return [x["state"] for x in lines.of("state")]


def test_wav_file_healthy_then_fault(tmp_path, monitor_run, signal12k):
    wav = tmp_path / "s.wav"
    wavfile.write(wav, 12000, signal12k.astype(np.float32))
    lines, summary, _ = monitor_run(str(wav))
    wins = lines.of("window")
    assert [w["i"] for w in wins] == list(range(12))
    assert wins[0]["t"] == round(2048 / 12000, 6)  # written to the microsecond
    assert all(len(w["p"]) == 10 and abs(sum(w["p"]) - 1) < 1e-3 for w in wins)  # 5-decimal rounding
    assert [w["class"] for w in wins[6:]] == ["IR021"] * 6
    assert states(lines) == ["healthy", "fault:IR021"]
    assert lines.of("start")[0]["source_fs"] == 12000 and not lines.of("start")[0]["resampled"]
    assert summary["counters"]["windows"] == 12 and summary["state"] == "fault:IR021"


def test_hop_gives_overlapping_windows(tmp_path, monitor_run, signal12k):
    np.save(tmp_path / "s.npy", signal12k)
    lines, summary, _ = monitor_run(str(tmp_path / "s.npy"), hop=1024)
    assert summary["counters"]["windows"] == (signal12k.size - 2048) // 1024 + 1 == 23


def test_other_rate_is_refused_or_resampled(tmp_path, monitor_run, signal12k):
    up = resample_poly(signal12k, 4, 1)  # the same signal at 48 kHz
    wav = tmp_path / "s48.wav"
    wavfile.write(wav, 48000, up.astype(np.float32))
    with pytest.raises(InputError, match="48000 Hz but the model expects 12000 Hz; pass --resample"):
        monitor_run(str(wav))
    lines, summary, _ = monitor_run(str(wav), resample=True)
    assert lines.of("start")[0]["resampled"] and lines.of("start")[0]["source_fs"] == 48000
    assert summary["counters"]["windows"] == 11  # the resampler holds back its last ~10 outputs
    assert states(lines) == ["healthy", "fault:IR021"]


def test_csv_needs_no_rate_and_bad_samples_give_the_sensor_state(tmp_path, monitor_run, signal12k):
    sig = signal12k.copy()
    w = 2048
    sig[6 * w + 5] = np.nan            # fault windows 6..9 spoilt: NaN, flat, clipped, NaN
    sig[7 * w:8 * w] = 0.0
    peak = np.abs(sig[8 * w:9 * w]).max() * 0.3
    sig[8 * w:9 * w] = np.clip(sig[8 * w:9 * w], -peak, peak)
    sig[9 * w + 7] = np.inf
    csv = tmp_path / "s.csv"
    csv.write_text("accel\n" + "\n".join(str(float(v)) for v in sig) + "\n")
    lines, summary, _ = monitor_run(str(csv))
    q = [x["quality"] for x in lines.of("window")]
    assert q == ["ok"] * 6 + ["nan", "flat", "clipped", "nan", "ok", "ok"]
    assert lines.of("window")[6]["class"] is None and lines.of("window")[6]["p"] is None
    assert states(lines) == ["healthy", "sensor"]  # 3 bad of the last 4
    c = summary["counters"]
    assert (c["nan_windows"], c["flat_windows"], c["clipped_windows"], c["nonfinite_samples"]) == (2, 1, 1, 2)


def _pipe_source(chunks, pause_after=None, pause_s=0.0, fmt="auto", wait_for=None):
    """stdin from a pipe fed by a thread; after chunk `pause_after` it waits for the event `wait_for`
    (if given) and then pauses `pause_s` seconds."""
    r, w = os.pipe()

    def feed():
        with os.fdopen(w, "wb") as f:
            for i, c in enumerate(chunks):
                f.write(c)
                f.flush()
                if pause_after is not None and i == pause_after:
                    if wait_for is not None:
                        wait_for.wait(60)
                    time.sleep(pause_s)

    threading.Thread(target=feed, daemon=True).start()
    return stdin_source(fmt, stream=os.fdopen(r, "rb"))


def test_stdin_float32_with_a_short_tail(monitor_run, signal12k):
    raw = signal12k[: 4 * 2048].astype("<f4").tobytes() + b"\x01\x02\x03"
    lines, summary, _ = monitor_run(_pipe_source([raw[i:i + 1000] for i in range(0, len(raw), 1000)]))
    assert summary["counters"]["windows"] == 4
    assert summary["counters"]["short_bytes"] == 3


def test_stdin_text_with_garbage_lines(monitor_run, signal12k):
    text = "\n".join(str(float(v)) for v in signal12k[: 3 * 2048]).split("\n")
    text[100:100] = ["oops", "1,2"]
    data = ("\n".join(text) + "\n").encode()
    lines, summary, _ = monitor_run(_pipe_source([data]))
    assert summary["counters"]["windows"] == 3
    assert summary["counters"]["bad_lines"] == 2
    assert lines.of("input")[0]["bad_lines"] == 2


def test_stalled_source_raises_no_data_then_recovers(monitor_run, signal12k):
    raw = signal12k[6 * 2048:].astype("<f4").tobytes()  # the fault half: 6 windows
    half = 4 * 2048 * 4
    seen = threading.Event()  # the first part is through the monitor (however slow the machine)
    lines, summary, _ = monitor_run(_pipe_source([raw[:half], raw[half:]], pause_after=0, pause_s=1.5, wait_for=seen),
                                    stall_timeout=0.4, on_write=lambda ls: len(ls.of("window")) >= 4 and seen.set())
    assert states(lines) == ["fault:IR021", "no data", "fault:IR021"]
    assert summary["counters"]["stalls"] == 1
    nd = lines.of("state")[1]
    assert nd["from"] == "fault:IR021" and nd["i"] == 4


def test_tcp_gateway_with_a_reconnect(monitor_run, signal12k):
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    raw = signal12k[: 6 * 2048].astype("<f4").tobytes()

    def gateway():
        for part in (raw[: len(raw) // 2 + 2], raw[len(raw) // 2 + 2:]):  # the first cut splits a sample
            conn, _ = srv.accept()
            with conn:
                conn.sendall(part)

    threading.Thread(target=gateway, daemon=True).start()
    src = tcp_source(f"tcp://127.0.0.1:{port}", "f32", backoff=(0.05, 0.2))
    lines, summary, _ = monitor_run(src, max_windows=5)
    srv.close()
    c = summary["counters"]
    # each connection ends inside a sample: 2 bytes after the cut, 2 at the end of the second
    assert c["reconnects"] == 1 and c["short_bytes"] == 4
    assert c["windows"] == 5  # 2 bytes lost at the cut shift the rest by half a sample: windows still form


def test_serial_port_on_a_pty(monitor_run, signal12k):
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    src = serial_source(f"serial://{os.ttyname(slave)}?baud=115200", "text")
    data = ("\n".join(f"{v:.6f}" for v in signal12k[: 3 * 2048]) + "\n").encode()

    def feed():
        for i in range(0, len(data), 4096):
            os.write(master, data[i:i + 4096])

    threading.Thread(target=feed, daemon=True).start()
    lines, summary, _ = monitor_run(src, max_windows=3)
    os.close(master)
    os.close(slave)
    assert summary["counters"]["windows"] == 3
    assert [w["class"] for w in lines.of("window")] == [w["class"] for w in lines.of("window")]
    assert lines.of("start")[0]["source"].startswith("serial ")


def test_unknown_source_and_missing_file_are_input_errors(monitor_run):
    with pytest.raises(InputError, match="unknown source"):
        monitor_run("http://x")
    with pytest.raises(InputError, match="is not a file"):
        monitor_run("/nonexistent.wav")


def test_live_view_renders_state_and_changes(tmp_path, model, signal12k):
    import io

    from rich.console import Console

    from drsn_edge.monitor.health import HealthConfig
    from drsn_edge.monitor.live import LiveView
    from drsn_edge.monitor.run import MonitorOptions, run

    np.save(tmp_path / "s.npy", signal12k)
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=100, color_system=None)
    with LiveView(con, refresh_s=0.0) as view:
        run(MonitorOptions(source=str(tmp_path / "s.npy"), lines=False, health=HealthConfig(k=3, n=4, m=3)),
            lambda text: None, lambda text: None, live=view, model=model)
    text = buf.getvalue()
    assert "state  fault:IR021" in text and "healthy → fault:IR021" in text and "IR021" in text


def test_windows_the_domain_guard_rejects_vote_unknown_not_a_fault(tmp_path, model, signal12k):
    """The same stream that gives fault:IR021 above, with a guard that finds every window unlike the training
    data: the state goes to `unknown`, never to a fault alarm."""
    import dataclasses

    from drsn_edge.monitor import MonitorOptions
    from drsn_edge.monitor.health import HealthConfig
    from drsn_edge.monitor.run import run

    from .conftest import Lines

    assert model.in_domain is not None  # the shipped model carries a domain guard
    wav = tmp_path / "s.wav"
    wavfile.write(wav, 12000, signal12k.astype(np.float32))
    lines, warns = Lines(), []
    alien = dataclasses.replace(model, in_domain=lambda x, level=None: np.zeros(len(x), dtype=bool))
    summary = run(MonitorOptions(source=str(wav), health=HealthConfig(k=3, n=4, m=3)), lines.write, warns.append,
                  stop=threading.Event(), model=alien)
    assert states(lines) == ["unknown"] and summary["state"] == "unknown"
    assert summary["counters"]["out_of_domain_windows"] == 12


def test_a_disconnected_sensor_is_unknown_by_its_level_not_a_class(tmp_path, model, signal12k):
    """A disconnected sensor's electrical noise normalizes to unit white noise, which this model reads as a
    healthy machine or a ball fault; its raw level, 60 dB under anything in training, puts it out of domain.
    The same recording at its own level is classified as usual (healthy, then IR021)."""
    from drsn_edge.bundle import load_bundle
    from drsn_edge.monitor import MonitorOptions
    from drsn_edge.monitor.health import HealthConfig
    from drsn_edge.monitor.run import run

    from .conftest import Lines

    lvl = load_bundle(model.source).meta["guard"]["level"]
    quiet = np.random.default_rng(0).standard_normal(len(signal12k)) * 1e-3 * float(np.std(signal12k))
    assert float(np.std(quiet)) < lvl["lo"] < float(np.std(signal12k)) < lvl["hi"]
    for samples, want in ((quiet, ["unknown"]), (signal12k, ["healthy", "fault:IR021"])):
        wav = tmp_path / "s.wav"
        wavfile.write(wav, 12000, samples.astype(np.float32))
        lines = Lines()
        summary = run(MonitorOptions(source=str(wav), health=HealthConfig(k=3, n=4, m=3)), lines.write, lambda w: None,
                      stop=threading.Event(), model=model)
        assert states(lines) == want
        assert summary["counters"].get("out_of_domain_windows", 0) == (12 if want == ["unknown"] else 0)
