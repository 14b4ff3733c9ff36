"""MQTT alerts against a real Mosquitto broker; the on-disk queue; settings from environment/config."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from drsn_edge.errors import InputError
from drsn_edge.monitor.alerts import Journal, MqttAlerts, load_config, parse_url

from .mosquitto import Mosquitto, Subscriber

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/sbin/mosquitto"), reason="needs mosquitto (apt install mosquitto)")
TOPIC = "plant/line1/pump3"


# ---------------------------------------------------------------------------------------------- journal
def test_journal_resumes_pending_in_order_and_keeps_numbering(tmp_path):
    j = Journal(tmp_path / "q.jsonl")
    assert [j.put({"n": i}) for i in range(3)] == [1, 2, 3]
    j.mark_try(1)
    j.ack(1)
    j.mark_try(2)
    j.close()
    j = Journal(tmp_path / "q.jsonl")
    assert j.head() == (2, {"n": 1}, True)  # tried before the restart: resent marked as a repeat
    assert [s for s, _ in j.pending] == [2, 3]
    assert j.put({"n": 3}) == 4


def test_journal_drops_a_torn_last_line(tmp_path):
    p = tmp_path / "q.jsonl"
    j = Journal(p)
    j.put({"n": 0})
    j.close()
    with open(p, "ab") as f:
        f.write(b'{"seq":2,"msg":{"n"')  # power cut mid-write
    j = Journal(p)
    assert [s for s, _ in j.pending] == [1]
    assert j.put({"n": 1}) == 2
    j.close()
    assert [json.loads(x)["seq"] for x in p.read_text().splitlines()] == [1, 2]


def test_journal_is_bounded(tmp_path):
    j = Journal(tmp_path / "q.jsonl", max_pending=2)
    assert [j.put({}) for _ in range(4)] == [1, 2, None, None]
    assert j.dropped == 2
    j.ack(1)
    assert j.put({}) == 3


# ---------------------------------------------------------------------------------------------- settings
def test_url_rules():
    b = parse_url("mqtts://broker.local/plant/a")
    assert (b.host, b.port, b.topic, b.tls) == ("broker.local", 8883, "plant/a", True)
    assert parse_url("mqtt://h/t").port == 1883
    with pytest.raises(InputError, match="never in the --mqtt URL"):
        parse_url("mqtt://user:pw@h/t")
    with pytest.raises(InputError, match="wildcards"):
        parse_url("mqtt://h/plant/#")
    with pytest.raises(InputError, match="needs a host and a topic"):
        parse_url("mqtt://h:1883")


def test_config_file_then_environment(tmp_path):
    cfg = tmp_path / "mqtt.toml"
    cfg.write_text('[mqtt]\nusername = "edge"\npassword = "s3cret"\nclient_id = "pump3"\n')
    os.chmod(cfg, 0o644)
    warns = []
    c = load_config(cfg, env={"DRSN_EDGE_MQTT_CLIENT_ID": "pump3-b"}, warn=warns.append)
    assert (c.username, c.password, c.client_id) == ("edge", "s3cret", "pump3-b")
    assert warns and "readable by others" in warns[0]
    cfg.write_text('[mqtt]\nuser = "x"\n')
    with pytest.raises(InputError, match="unknown key"):
        load_config(cfg, env={})


# ---------------------------------------------------------------------------------------------- broker
@pytest.fixture
def broker(tmp_path):
    (tmp_path / "broker").mkdir()
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


def _seqs(got, topic=TOPIC):
    return [json.loads(p)["seq"] for t, p, _ in got if t == topic]


def test_alerts_arrive_in_order_with_retained_state_and_status(broker, tmp_path):
    sub = Subscriber(broker.port, [TOPIC, f"{TOPIC}/state", f"{TOPIC}/status"])
    alerts = MqttAlerts(f"{broker.url}/{TOPIC}", tmp_path / "q.jsonl")
    alerts.start()
    for name in ("healthy", "fault", "healthy"):
        alerts.send({"state": name})
    assert sub.wait_for(lambda g: len(_seqs(g)) == 3)
    summary = alerts.close()
    sub.close()
    msgs = [json.loads(p) for t, p, _ in sub.got if t == TOPIC]
    assert [(m["seq"], m["state"], m["dup"]) for m in msgs] == [(1, "healthy", False), (2, "fault", False),
                                                                 (3, "healthy", False)]
    assert summary["sent"] == 3 and summary["pending"] == 0
    # a late subscriber gets the retained last state and the offline status
    late = Subscriber(broker.port, [f"{TOPIC}/state", f"{TOPIC}/status"], client_id="late")
    assert late.wait_for(lambda g: len(g) == 2)
    late.close()
    got = {t: json.loads(p) for t, p, r in late.got}
    assert got[f"{TOPIC}/state"]["seq"] == 3 and got[f"{TOPIC}/status"]["status"] == "offline"


def test_last_will_says_offline_when_the_monitor_dies(broker, tmp_path):
    code = ("import sys, time; from drsn_edge.monitor.alerts import MqttAlerts; "
            f"a = MqttAlerts('{broker.url}/{TOPIC}', sys.argv[1]); a.config.keepalive = 1; a.start(); "
            "a.send({'state': 'healthy'}); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "q.jsonl")])
    sub = Subscriber(broker.port, [f"{TOPIC}/status"])
    try:
        assert sub.wait_for(lambda g: any(json.loads(p)["status"] == "online" for _, p, _ in g))
        proc.kill()  # no DISCONNECT: the broker sends the will when the socket closes
        assert sub.wait_for(lambda g: json.loads(g[-1][1])["status"] == "offline", timeout=10)
    finally:
        proc.kill()
        sub.close()


def test_broker_down_queues_on_disk_and_a_restart_resumes(tmp_path):
    (tmp_path / "broker").mkdir()
    b = Mosquitto(tmp_path / "broker")  # not started yet
    q = tmp_path / "q.jsonl"
    warns = []
    alerts = MqttAlerts(f"{b.url}/{TOPIC}", q, warn=warns.append, reconnect_s=(0.1, 0.2))
    alerts.start()
    for i in range(5):
        alerts.send({"state": f"s{i}"})
    summary = alerts.close(flush_s=0.2)
    assert summary["pending"] == 5 and summary["sent"] == 0
    assert warns and "unavailable" in warns[0]
    b.start()
    try:
        sub = Subscriber(b.port, [TOPIC])
        alerts = MqttAlerts(f"{b.url}/{TOPIC}", q)  # the monitor restarted
        assert alerts.resumed == 5
        alerts.start()
        alerts.send({"state": "s5"})
        assert sub.wait_for(lambda g: len(g) == 6)
        assert alerts.close()["pending"] == 0
        sub.close()
    finally:
        b.stop()
    msgs = [json.loads(p) for _, p, _ in sub.got]
    assert [m["seq"] for m in msgs] == [1, 2, 3, 4, 5, 6]
    assert [m["state"] for m in msgs] == [f"s{i}" for i in range(6)]


@pytest.mark.slow
def test_broker_killed_and_restarted_mid_stream_loses_nothing(tmp_path):
    (tmp_path / "broker").mkdir()
    b = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(b.port, [TOPIC])
    alerts = MqttAlerts(f"{b.url}/{TOPIC}", tmp_path / "q.jsonl", reconnect_s=(0.2, 0.5))
    alerts.start()
    n = 120

    def produce():
        for i in range(n):
            alerts.send({"state": f"s{i}"})
            time.sleep(0.02)

    t = threading.Thread(target=produce)
    t.start()
    try:
        time.sleep(0.6)
        b.kill()
        time.sleep(1.0)
        b.start()
        t.join()
        assert sub.wait_for(lambda g: len(set(_seqs(g))) == n, timeout=30), f"got {len(set(_seqs(sub.got)))} of {n}"
        summary = alerts.close()
    finally:
        sub.close()
        b.stop()
    msgs = [json.loads(p) for _, p, _ in sub.got]
    seqs = [m["seq"] for m in msgs]
    first = list(dict.fromkeys(seqs))
    assert first == list(range(1, n + 1))  # every alert, in order
    assert sorted(seqs) == seqs            # a repeat only ever follows its original
    repeats = [m for i, m in enumerate(msgs) if m["seq"] in seqs[:i]]
    assert all(m["dup"] for m in repeats)  # and is marked
    assert summary["connections"] == 2 and summary["pending"] == 0


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl to make test certificates")
def test_mqtts_with_a_ca_file_and_credentials_from_the_environment(tmp_path):
    """TLS (the broker's certificate checked against a CA file) and a password, both from DRSN_EDGE_MQTT_*."""
    d = tmp_path / "broker"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=test ca", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=d)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "passwd"), "edge", "s3cret"], check=True)
    b = Mosquitto(d, anonymous=False, extra=f"cafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n"
                                            f"password_file {d}/passwd\n").start()
    try:
        env = {"DRSN_EDGE_MQTT_USERNAME": "edge", "DRSN_EDGE_MQTT_PASSWORD": "s3cret",
               "DRSN_EDGE_MQTT_CA_FILE": str(d / "ca.crt"), "DRSN_EDGE_MQTT_CLIENT_ID": "pump3"}
        url = f"mqtts://127.0.0.1:{b.port}/{TOPIC}"
        alerts = MqttAlerts(url, tmp_path / "q.jsonl", load_config(None, env=env))
        alerts.start()
        alerts.send({"state": "healthy"})
        deadline = time.monotonic() + 15
        while alerts.sent < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alerts.close()["sent"] == 1
        assert "New client connected" in b.log.read_text() and "pump3" in b.log.read_text()
        # a wrong password: refused, the alert waits in the queue, one warning
        warns = []
        bad = load_config(None, env={**env, "DRSN_EDGE_MQTT_PASSWORD": "wrong"})
        alerts = MqttAlerts(url, tmp_path / "q2.jsonl", bad, warn=warns.append, reconnect_s=(0.1, 0.2))
        alerts.start()
        alerts.send({"state": "fault"})
        time.sleep(1.0)
        summary = alerts.close(flush_s=0.1)
        assert summary["sent"] == 0 and summary["pending"] == 1
        assert len(warns) == 1 and "refused" in warns[0]
    finally:
        b.stop()
