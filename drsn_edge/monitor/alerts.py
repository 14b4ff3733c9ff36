"""Alerts over MQTT (paho-mqtt, v2 callback API) with an on-disk queue: nothing lost, order kept.

Every state change is appended to a journal file (JSON lines, fsynced) before it is sent, and sent one
at a time with QoS 1; the next goes only after the broker's PUBACK, which is journalled too. When the
broker is down the journal grows (up to `max_pending` alerts, then new alerts are refused with a
warning); when it returns, or when the monitor restarts, the pending alerts go out in order.

Topics under the URL's topic T:
  T          each alert (a state change), QoS 1; payload JSON with a sequence number `seq` that
             increases by one per alert across restarts (a repeat carries the same `seq`)
  T/state    the latest delivered state, QoS 1, retained
  T/status   {"status": "online"} retained on connect; the last will {"status": "offline"} retained
Alerts that may already have reached the broker before a restart are sent again marked `"dup": true`;
a retransmission after a lost connection carries the MQTT DUP flag.

Client id, credentials and TLS files come from the environment (DRSN_EDGE_MQTT_CLIENT_ID,
DRSN_EDGE_MQTT_USERNAME, DRSN_EDGE_MQTT_PASSWORD, DRSN_EDGE_MQTT_CA_FILE, DRSN_EDGE_MQTT_CERT_FILE,
DRSN_EDGE_MQTT_KEY_FILE) or a TOML config file ([mqtt] client_id, username, password, ca_file, cert_file,
key_file, keepalive), never from the command line.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import stat
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlparse

from ..errors import InputError, MissingDependencyError

ENV_PREFIX = "DRSN_EDGE_MQTT_"
DEFAULT_MAX_PENDING = 10_000
COMPACT_BYTES = 1 << 20


# ---------------------------------------------------------------------------------------------- settings


@dataclass
class MqttConfig:
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive: int = 30


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "drsn-edge" / "mqtt.toml"


def load_config(path: str | os.PathLike | None = None, env=None, warn=None) -> MqttConfig:
    """The [mqtt] table of the config file (if any), overridden by DRSN_EDGE_MQTT_* variables."""
    import tomllib

    env = os.environ if env is None else env
    values: dict = {}
    p = Path(path) if path else default_config_path()
    if path and not p.is_file():
        raise InputError(f"MQTT config file '{p}' does not exist")
    if p.is_file():
        try:
            doc = tomllib.loads(p.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InputError(f"cannot read MQTT config '{p}' ({exc})") from None
        table = doc.get("mqtt", {})
        known = {f.name for f in fields(MqttConfig)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise InputError(f"unknown key(s) {unknown} in [mqtt] of '{p}'; known: {', '.join(sorted(known))}")
        values.update(table)
        if "password" in table and p.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH) and warn:
            warn(f"MQTT config '{p}' holds a password and is readable by others; chmod 600 it")
    for f in fields(MqttConfig):
        v = env.get(ENV_PREFIX + f.name.upper())
        if v:
            values[f.name] = v
    try:
        values["keepalive"] = int(values.get("keepalive", 30))
    except (TypeError, ValueError):
        raise InputError("MQTT keepalive must be a whole number of seconds") from None
    for key in ("ca_file", "cert_file", "key_file"):
        if values.get(key) and not Path(values[key]).is_file():
            raise InputError(f"MQTT {key} '{values[key]}' does not exist")
    return MqttConfig(**values)


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    topic: str
    tls: bool


def parse_url(url: str) -> Broker:
    u = urlparse(url)
    if u.scheme not in ("mqtt", "mqtts"):
        raise InputError(f"--mqtt takes mqtt://host:port/topic or mqtts://…, got '{url}'")
    if u.username or u.password:
        raise InputError("put MQTT credentials in the environment or the config file, never in the --mqtt URL")
    topic = u.path.lstrip("/")
    if not u.hostname or not topic:
        raise InputError(f"'{url}' needs a host and a topic: mqtt://host[:port]/plant/line1/pump3")
    if "+" in topic or "#" in topic:
        raise InputError(f"the alert topic '{topic}' may not contain MQTT wildcards (+ or #)")
    tls = u.scheme == "mqtts"
    return Broker(u.hostname, u.port or (8883 if tls else 1883), topic, tls)


# ---------------------------------------------------------------------------------------------- journal


class Journal:
    """Append-only, fsynced queue file: {"seq": n, "msg": {...}} to enqueue, {"try": n} before a send,
    {"ack": n} after the broker's acknowledgement. Reopening it resumes the pending alerts."""

    def __init__(self, path: str | os.PathLike, max_pending: int = DEFAULT_MAX_PENDING):
        if max_pending < 1:
            raise InputError(f"the alert queue must hold at least 1 alert, got {max_pending}")
        self.path = Path(path)
        self.max_pending = max_pending
        self.pending: list[tuple[int, dict]] = []
        self.tried: set[int] = set()
        self.next_seq = 1
        self.dropped = 0
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._load()
        self._f = open(self.path, "ab")

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        msgs, acked, good = {}, 0, 0
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn last write: drop it
            try:
                rec = json.loads(line)
            except ValueError:
                break
            good += len(line)
            if "seq" in rec:
                msgs[int(rec["seq"])] = rec["msg"]
                self.next_seq = max(self.next_seq, int(rec["seq"]) + 1)
            elif "try" in rec:
                self.tried.add(int(rec["try"]))
            elif "ack" in rec:
                acked = max(acked, int(rec["ack"]))
                self.next_seq = max(self.next_seq, acked + 1)
        if good < len(raw):
            with open(self.path, "r+b") as f:
                f.truncate(good)
        self.pending = sorted((s, m) for s, m in msgs.items() if s > acked)
        self.tried = {s for s in self.tried if s > acked}
        if not self.pending and good > COMPACT_BYTES:
            self._compact(acked)

    def _compact(self, acked: int) -> None:
        from ..fileio import write_bytes

        write_bytes(self.path, (json.dumps({"ack": acked}) + "\n").encode())

    def _append(self, rec: dict) -> None:
        self._f.write((json.dumps(rec, separators=(",", ":")) + "\n").encode())
        self._f.flush()
        os.fsync(self._f.fileno())

    def put(self, msg: dict) -> int | None:
        """Enqueue; the alert's sequence number, or None when the queue is full (the alert is dropped)."""
        with self._lock:
            if len(self.pending) >= self.max_pending:
                self.dropped += 1
                return None
            seq = self.next_seq
            self.next_seq += 1
            self._append({"seq": seq, "msg": msg})
            self.pending.append((seq, msg))
            return seq

    def head(self) -> tuple[int, dict, bool] | None:
        with self._lock:
            if not self.pending:
                return None
            seq, msg = self.pending[0]
            return seq, msg, seq in self.tried

    def mark_try(self, seq: int) -> None:
        with self._lock:
            if seq not in self.tried:
                self._append({"try": seq})
                self.tried.add(seq)

    def ack(self, seq: int) -> None:
        with self._lock:
            self._append({"ack": seq})
            self.pending = [(s, m) for s, m in self.pending if s != seq]
            self.tried.discard(seq)
            if not self.pending and self._f.tell() > COMPACT_BYTES:
                self._f.close()
                self._compact(seq)
                self._f = open(self.path, "ab")

    def close(self) -> None:
        with self._lock:
            self._f.close()


def default_queue_path(broker: Broker) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{broker.host}_{broker.port}_{broker.topic}")
    return Path(base) / "drsn-edge" / f"alerts-{safe}.jsonl"


# ---------------------------------------------------------------------------------------------- sender


class MqttAlerts:
    """Send journalled alerts in order over one paho client that reconnects by itself."""

    def __init__(self, url: str, queue_path=None, config: MqttConfig | None = None,
                 max_pending: int = DEFAULT_MAX_PENDING, warn=None, reconnect_s=(0.5, 5.0)):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise MissingDependencyError("paho-mqtt is not installed; run: pip install 'drsn-edge[mqtt]'") from None
        self.broker = parse_url(url)
        self.config = config or MqttConfig()
        self.warn = warn or (lambda msg: None)
        self.journal = Journal(queue_path or default_queue_path(self.broker), max_pending)
        self.resumed = len(self.journal.pending)
        self.sent = 0
        self._full_warned = False
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._acks: queue.Queue = queue.Queue()
        self._idle = threading.Event()
        self.client = self._client(mqtt, reconnect_s)
        self._thread = threading.Thread(target=self._send_loop, name="monitor-alerts", daemon=True)

    def _client(self, mqtt, reconnect_s):
        b, c = self.broker, self.config
        client_id = c.client_id or f"drsn-edge-{socket.gethostname()}-{os.getpid()}"
        cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                         clean_session=True)
        if c.username:
            cl.username_pw_set(c.username, c.password)
        if b.tls:
            cl.tls_set(ca_certs=c.ca_file, certfile=c.cert_file, keyfile=c.key_file)
        cl.will_set(f"{b.topic}/status", json.dumps({"status": "offline", "client_id": client_id}), qos=1, retain=True)
        cl.reconnect_delay_set(min_delay=max(1, int(reconnect_s[0])), max_delay=max(1, int(reconnect_s[1])))
        cl.on_connect = self._on_connect
        cl.on_disconnect = self._on_disconnect
        cl.on_publish = lambda client, userdata, mid, rc, props: self._acks.put(mid)
        self.client_id = client_id
        return cl

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.warn(f"MQTT broker {self.broker.host}:{self.broker.port} refused the connection: {reason_code}")
            return
        client.publish(f"{self.broker.topic}/status", json.dumps({"status": "online", "client_id": self.client_id}),
                       qos=1, retain=True)
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._connected.clear()

    def start(self) -> None:
        b = self.broker
        try:
            self.client.connect_async(b.host, b.port, keepalive=self.config.keepalive)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot use MQTT broker {b.host}:{b.port} ({exc})") from None
        self.client.loop_start()
        self._thread.start()

    def send(self, msg: dict) -> int | None:
        seq = self.journal.put(msg)
        if seq is None:
            if not self._full_warned:
                self.warn(f"alert queue {self.journal.path} is full ({self.journal.max_pending} alerts waiting for "
                          f"the broker); newer alerts are dropped until it drains")
                self._full_warned = True
        else:
            self._full_warned = False
            self._idle.clear()
        self._wake.set()
        return seq

    @property
    def pending(self) -> int:
        return len(self.journal.pending)

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            head = self.journal.head()
            if head is None:
                self._idle.set()
            if head is None or not self._connected.is_set():
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            seq, msg, tried = head
            payload = json.dumps({**msg, "seq": seq, "dup": tried}, separators=(",", ":"))
            self.journal.mark_try(seq)
            info = self.client.publish(self.broker.topic, payload, qos=1)
            if self._wait_ack(info.mid):
                self.journal.ack(seq)
                self.sent += 1
                self.client.publish(f"{self.broker.topic}/state", payload, qos=1, retain=True)

    def _wait_ack(self, mid: int) -> bool:
        """Wait for the PUBACK of `mid` (paho resends it after a reconnect); False when stopping first."""
        while not self._stop.is_set():
            try:
                if self._acks.get(timeout=0.5) == mid:
                    return True
            except queue.Empty:
                continue
        return False

    def close(self, flush_s: float = 5.0) -> dict:
        """Deliver what the broker will take within `flush_s`, say offline, disconnect. What is left stays
        in the queue file for the next start."""
        deadline = time.monotonic() + flush_s
        while self.pending and self._connected.is_set() and time.monotonic() < deadline:
            self._idle.wait(0.05)
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        if self._connected.is_set():
            info = self.client.publish(f"{self.broker.topic}/status",
                                       json.dumps({"status": "offline", "client_id": self.client_id}), qos=1, retain=True)
            try:
                info.wait_for_publish(1.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        self.journal.close()
        return {"broker": f"{self.broker.host}:{self.broker.port}", "topic": self.broker.topic, "sent": self.sent,
                "pending": self.pending, "dropped": self.journal.dropped, "resumed": self.resumed,
                "queue": str(self.journal.path)}
