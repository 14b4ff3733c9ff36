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
    if path:
        from ..limits import regular_file

        regular_file(p, "MQTT config file")
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
    if "+" in topic or "#" in url or "?" in url:  # '#' and '?' would end the path in the URL
        raise InputError(f"the alert topic in '{url}' may not contain MQTT wildcards (+ or #) or '?'")
    tls = u.scheme == "mqtts"
    return Broker(u.hostname, u.port or (8883 if tls else 1883), topic, tls)


# ---------------------------------------------------------------------------------------------- journal


def is_journal(path) -> bool:
    """Whether a file is empty or starts with an alert-queue record (a torn tail is the journal's to mend)."""
    with open(path, "rb") as f:
        first = f.readline(65536)
    if not first:
        return True
    try:
        rec = json.loads(first)
    except ValueError:
        return False
    return isinstance(rec, dict) and bool({"seq", "try", "ack"} & set(rec))


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
        if raw and not is_journal(self.path):
            raise InputError(f"alert queue '{self.path}' is not a drsn-edge alert queue (its first line is not a "
                             "queue record); choose another --alert-queue file")
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
    """Send journalled alerts in order. One thread owns a fresh paho client per connection and drives it
    with `loop()`, so every resend after a lost connection is the sender's own, marked `"dup": true`."""

    def __init__(self, url: str, queue_path=None, config: MqttConfig | None = None,
                 max_pending: int = DEFAULT_MAX_PENDING, warn=None, reconnect_s=(0.5, 5.0)):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise MissingDependencyError("paho-mqtt is not installed; run: pip install 'drsn-edge[mqtt]'") from None
        self._mqtt = mqtt
        self.broker = parse_url(url)
        self.config = config or MqttConfig()
        self.client_id = self.config.client_id or f"drsn-edge-{socket.gethostname()}-{os.getpid()}"
        self.warn = warn or (lambda msg: None)
        self.journal = Journal(queue_path or default_queue_path(self.broker), max_pending)
        self.resumed = len(self.journal.pending)
        self.sent = 0
        self.connections = 0
        self.reconnect_s = reconnect_s
        self._full_warned = False
        self._stop = threading.Event()
        self._draining = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor-alerts", daemon=True)

    # -- public
    def start(self) -> None:
        self._thread.start()

    def send(self, msg: dict) -> int | None:
        seq = self.journal.put(msg)
        if seq is None and not self._full_warned:
            self.warn(f"alert queue {self.journal.path} is full ({self.journal.max_pending} alerts waiting for "
                      "the broker); newer alerts are dropped until it drains")
            self._full_warned = True
        elif seq is not None:
            self._full_warned = False
        return seq

    @property
    def pending(self) -> int:
        return len(self.journal.pending)

    def close(self, flush_s: float = 5.0) -> dict:
        """Deliver what the broker takes within `flush_s`, say offline, disconnect. What is left stays in
        the queue file for the next start."""
        deadline = time.monotonic() + flush_s
        while self.pending and self._connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self.journal.close()
        return {"broker": f"{self.broker.host}:{self.broker.port}", "topic": self.broker.topic, "sent": self.sent,
                "pending": self.pending, "dropped": self.journal.dropped, "resumed": self.resumed,
                "connections": self.connections, "queue": str(self.journal.path)}

    # -- the sender thread
    def _status(self, status: str) -> str:
        return json.dumps({"status": status, "client_id": self.client_id})

    def _client(self, acked: set):
        mqtt, b, c = self._mqtt, self.broker, self.config
        cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311,
                         clean_session=True)
        if c.username:
            cl.username_pw_set(c.username, c.password)
        if b.tls:
            cl.tls_set(ca_certs=c.ca_file, certfile=c.cert_file, keyfile=c.key_file)
        cl.will_set(f"{b.topic}/status", self._status("offline"), qos=1, retain=True)
        cl.on_connect = lambda client, ud, flags, rc, props: ud.update(connack=rc)
        cl.on_publish = lambda client, ud, mid, rc, props: acked.add(mid)
        cl.user_data_set({})
        return cl

    def _run(self) -> None:
        delay, warned = self.reconnect_s[0], False
        while not self._stop.is_set():
            acked: set = set()
            client = self._client(acked)
            problem = self._connect(client)
            if problem:
                if not warned:
                    self.warn(f"MQTT broker {self.broker.host}:{self.broker.port} unavailable ({problem}); "
                              f"alerts wait in {self.journal.path}")
                    warned = True
                self._stop.wait(delay)
                delay = min(delay * 2, self.reconnect_s[1])
                continue
            delay, warned = self.reconnect_s[0], False
            self.connections += 1
            self._connected.set()
            try:
                self._pump(client, acked)
            finally:
                self._connected.clear()
                try:
                    client.disconnect()
                    client.socket() and client.loop(0.1)
                except (OSError, ValueError):
                    pass

    def _connect(self, client) -> str | None:
        """Connect and wait for the CONNACK; None when connected, else what went wrong."""
        b = self.broker
        try:
            client.connect(b.host, b.port, keepalive=self.config.keepalive)
        except (OSError, ValueError) as exc:
            return str(exc) or type(exc).__name__
        deadline = time.monotonic() + 10.0
        ud = client.user_data_get()
        while "connack" not in ud and time.monotonic() < deadline and not self._stop.is_set():
            if client.loop(0.05) != self._mqtt.MQTT_ERR_SUCCESS and "connack" not in ud:
                return "connection lost before CONNACK"
        rc = ud.get("connack")
        if rc is None:
            return "no CONNACK"
        if rc.is_failure:
            return f"refused: {rc}"
        client.publish(f"{b.topic}/status", self._status("online"), qos=1, retain=True)
        return None

    def _pump(self, client, acked: set) -> None:
        """Publish the queue head, wait for its PUBACK, journal it, next; until the connection drops or
        stop. On stop the broker is told we go offline."""
        ok = self._mqtt.MQTT_ERR_SUCCESS
        inflight = None  # (mid, seq, payload)
        while not self._stop.is_set():
            if inflight is None:
                head = self.journal.head()
                if head is not None:
                    seq, msg, tried = head
                    payload = json.dumps({**msg, "seq": seq, "dup": tried}, separators=(",", ":"))
                    self.journal.mark_try(seq)
                    info = client.publish(self.broker.topic, payload, qos=1)
                    if info.rc != ok:
                        return
                    inflight = (info.mid, seq, payload)
            if client.loop(0.02) != ok:
                return
            if inflight is not None and inflight[0] in acked:
                self.journal.ack(inflight[1])
                self.sent += 1
                client.publish(f"{self.broker.topic}/state", inflight[2], qos=1, retain=True)
                inflight = None
        info = client.publish(f"{self.broker.topic}/status", self._status("offline"), qos=1, retain=True)
        deadline = time.monotonic() + 1.0
        while info.mid not in acked and time.monotonic() < deadline:
            if client.loop(0.02) != ok:
                return
