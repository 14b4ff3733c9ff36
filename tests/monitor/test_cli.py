"""`drsn-edge monitor` as a process: SIGTERM flushes the output and the alert queue and exits 0; bad input
is one line with exit 2."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from .mosquitto import Mosquitto, Subscriber

TOPIC = "plant/pump3"
MODEL = os.path.join(os.path.dirname(__file__), "..", "..", "drsn_edge", "pretrained", "drsn-cw-default.drsn")


def _wait_lines(path, pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            if pred(lines):
                return lines
        time.sleep(0.1)
    raise AssertionError(f"timed out; output so far: {path.read_text()[-2000:] if path.exists() else ''}")


@pytest.mark.skipif(not os.path.exists("/usr/sbin/mosquitto"), reason="needs mosquitto")
def test_sigterm_flushes_output_and_alerts_and_exits_0(tmp_path, signal12k):
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, [TOPIC])
    out = tmp_path / "out.jsonl"
    env = dict(os.environ, DRSN_EDGE_MQTT_CLIENT_ID="pump3-monitor")
    proc = subprocess.Popen(
        [sys.executable, "-m", "drsn_edge", "monitor", MODEL, "--source", "-", "--format", "f32", "--out", str(out),
         "--mqtt", f"{broker.url}/{TOPIC}", "--alert-queue", str(tmp_path / "q.jsonl"), "--enter", "3/4",
         "--clear", "3"], stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(signal12k.astype("<f4").tobytes())  # healthy, then the fault; the pipe stays open
        proc.stdin.flush()
        _wait_lines(out, lambda ls: any(x["type"] == "state" and x["name"] == "fault" for x in ls))
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        err = proc.stderr.read().decode()
        assert rc == 0, err
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        assert lines[-1]["type"] == "summary" and lines[-1]["counters"]["windows"] == 12
        assert lines[-1]["alerts"]["pending"] == 0 and lines[-1]["alerts"]["sent"] == 2
        assert sub.wait_for(lambda g: len(g) == 2)
        assert [json.loads(p)["state"] for _, p, _ in sub.got] == ["healthy", "fault:IR021"]
        assert "Traceback" not in err
    finally:
        proc.kill()
        sub.close()
        broker.stop()


def test_bad_model_is_one_line_exit_2(tmp_path):
    wav = tmp_path / "x.npy"
    np.save(wav, np.zeros(10))
    res = subprocess.run([sys.executable, "-m", "drsn_edge", "monitor", str(tmp_path / "nope"), "--source", str(wav)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "does not exist" in res.stderr


def test_bad_enter_option_is_exit_2():
    res = subprocess.run([sys.executable, "-m", "drsn_edge", "monitor", "--source", "-", "--enter", "4"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--enter takes K/N" in res.stderr


def test_out_that_is_an_input_is_refused(tmp_path):
    """--out is appended to: naming the recording being replayed would destroy it."""
    import hashlib
    import json

    import numpy as np

    from ..conftest import run_cli

    rec = tmp_path / "rec.npy"
    np.save(rec, np.zeros(4096, np.float32))
    before = hashlib.sha256(rec.read_bytes()).hexdigest()
    r = run_cli("monitor", "--source", rec, "--out", rec, "--json")
    assert r.returncode == 2 and "--out" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert json.loads(r.stdout)["exit_code"] == 2
    assert hashlib.sha256(rec.read_bytes()).hexdigest() == before
