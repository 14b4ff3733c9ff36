"""A real Mosquitto broker on a free loopback port, started from a config file (persistence on, saved
after every change, so a subscriber's session survives a SIGKILL of the broker)."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    def __init__(self, folder: Path, port: int | None = None, extra: str = "", anonymous: bool = True):
        self.exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.folder = Path(folder)
        self.port = port or free_port()
        self.conf = self.folder / "mosquitto.conf"
        self.log = self.folder / "mosquitto.log"
        self.conf.write_text(
            f"user {getpass.getuser()}\n"  # as root it would switch to 'mosquitto' and lose the temp folder
            f"listener {self.port} 127.0.0.1\n"
            f"allow_anonymous {'true' if anonymous else 'false'}\n"
            "persistence true\n"
            f"persistence_location {self.folder}/\n"
            "autosave_interval 1\n"
            "autosave_on_changes true\n"
            f"log_dest file {self.log}\n"
            "log_type all\n" + extra)
        self.proc = None

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not open its port")

    def kill(self) -> None:
        """SIGKILL: no goodbye, no final save."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class Subscriber:
    """A paho client with a persistent session (QoS 1) that records every message it gets."""

    def __init__(self, port: int, topics: list[str], client_id: str = "test-sub"):
        import paho.mqtt.client as mqtt

        self.got: list = []
        self.topics = topics
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, ud, msg: self.got.append((msg.topic, msg.payload.decode(), msg.retain))
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.subscribed = False
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.subscribed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.subscribed, "subscriber could not subscribe"

    def _on_connect(self, client, ud, flags, rc, props):
        res, _ = client.subscribe([(t, 1) for t in self.topics])
        self.subscribed = True

    def wait_for(self, pred, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.got):
                return True
            time.sleep(0.05)
        return pred(self.got)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
