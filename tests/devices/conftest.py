"""Fixtures for device tests: a real OpenSSH server on 127.0.0.1 (and ::1 when the host has IPv6),
tiny ONNX models, hostile file names and a tiny tmpfs for disk-full tests.

The server: /usr/sbin/sshd -D -f <tmp config> -E <tmp log> on a free non-standard port, with a temporary
ed25519 host key and user key (ssh-keygen), StrictModes no, UsePAM no, AuthorizedKeysFile/PidFile/HostKey
in the temp dir, logging in as the current user. The privilege-separation dir /run/sshd must exist (created
here when we may). Needs the Debian packages openssh-server and openssh-client.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")


def sshd_missing_reason() -> str | None:
    if not SSHD.exists():
        return "OpenSSH server not installed (/usr/sbin/sshd missing): apt-get install openssh-server"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"'{tool}' not found: apt-get install openssh-client"
    return None


def free_port(family=socket.AF_INET, host="127.0.0.1") -> int:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ipv6_loopback_works() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "drsn-edge-test", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return path


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    kids, out, todo = _children_map(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path("/proc", str(pid), "cmdline").read_bytes().replace(b"\x00", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


class SshServer:
    def __init__(self, root: Path, extra_config: str = ""):
        self.root = root
        self.extra_config = extra_config  # more sshd_config lines (e.g. SetEnv PATH=... for stub tools)
        self.user = getpass.getuser()
        self.host = "127.0.0.1"
        self.host_key = keygen(root / "host_key")
        self.user_key = keygen(root / "user_key")
        self.wrong_key = keygen(root / "wrong_key")
        self.authorized_keys = root / "authorized_keys"
        self.authorized_keys.write_text((root / "user_key.pub").read_text())
        self.log = root / "sshd.log"
        self.pidfile = root / "sshd.pid"
        self.ipv6 = ipv6_loopback_works()
        self.proc: subprocess.Popen | None = None
        self.port = 0

    # -- client side
    def _write_client_files(self) -> None:
        key = (self.root / "host_key.pub").read_text().split()[:2]
        hosts = [f"[127.0.0.1]:{self.port}"] + ([f"[::1]:{self.port}"] if self.ipv6 else [])
        self.known_hosts = self.root / "known_hosts"
        self.known_hosts.write_text(f"{','.join(hosts)} {key[0]} {key[1]}\n")
        self.empty_known_hosts = self.root / "known_hosts.empty"
        self.empty_known_hosts.write_text("")
        common = ("  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  IdentitiesOnly yes\n"
                  "  IdentityAgent none\n  ControlMaster no\n  ControlPath none\n  KexAlgorithms curve25519-sha256\n"
                  "  LogLevel ERROR\n")
        aliases = (f"Host drsn-alias\n  HostName 127.0.0.1\n  Port {self.port}\n  User {self.user}\n"
                   f"  IdentityFile {self.user_key}\n"
                   f"Host drsn-jump\n  HostName 127.0.0.1\n  Port {self.port}\n  User {self.user}\n"
                   f"  IdentityFile {self.user_key}\n  ProxyJump drsn-alias\n")
        self.client_config = self.root / "ssh_config"
        self.client_config.write_text(aliases + f"Host *\n  UserKnownHostsFile {self.known_hosts}\n" + common)
        self.client_config_unknown_host = self.root / "ssh_config.unknown"
        self.client_config_unknown_host.write_text(f"Host *\n  UserKnownHostsFile {self.empty_known_hosts}\n" + common)

    def device_options(self, **overrides) -> dict:
        opts = {"config_file": self.client_config, "identity_file": self.user_key, "connect_timeout": 5,
                "timeout": 120, "transfer_timeout": 60}
        opts.update(overrides)
        return opts

    def url(self, host: str = "127.0.0.1", port: int | None = None) -> str:
        h = f"[{host}]" if ":" in host else host
        return f"ssh://{self.user}@{h}:{port or self.port}"

    def device(self, **overrides):
        from drsn_edge.devices import SshDevice

        return SshDevice(self.host, user=self.user, port=self.port, **self.device_options(**overrides))

    # -- server side
    def start(self) -> None:
        last_err = ""
        for _ in range(5):
            self.port = free_port()
            listen = "ListenAddress 127.0.0.1\n" + ("ListenAddress [::1]\n" if self.ipv6 else "")
            config = self.root / "sshd_config"
            config.write_text(
                f"Port {self.port}\n{listen}HostKey {self.host_key}\nPidFile {self.pidfile}\n"
                f"AuthorizedKeysFile {self.authorized_keys}\nStrictModes no\nUsePAM no\n"
                "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                "PermitRootLogin prohibit-password\nUseDNS no\nPrintMotd no\nMaxStartups 100\nMaxSessions 50\n"
                "Subsystem sftp internal-sftp\nLogLevel VERBOSE\n" + self.extra_config)
            self.log.write_text("")
            self.proc = subprocess.Popen([str(SSHD), "-D", "-f", str(config), "-E", str(self.log)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
            if self._wait_ready():
                self._write_client_files()
                return
            last_err = self.stop() + self.log.read_text()
            if "Address already in use" not in last_err:
                break
        pytest.fail(f"the test sshd did not start: {last_err.strip()[-2000:]}")

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def kill_sessions(self) -> int:
        """SIGKILL every process below the listening sshd (per-connection sshd, shells, the agent): the
        client sees the connection drop. Only processes this fixture's sshd started are touched."""
        pids = descendants(self.proc.pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def session_pids(self, needle: str) -> list[int]:
        return [pid for pid in descendants(self.proc.pid) if needle in cmdline(pid)]

    def stop(self) -> str:
        err = ""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.kill_sessions()
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            err = self.proc.stderr.read().decode("utf-8", "replace") if self.proc.stderr else ""
            if self.proc.stderr:
                self.proc.stderr.close()
        return err


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    reason = sshd_missing_reason()
    if reason:
        pytest.skip(reason)
    if not PRIVSEP_DIR.is_dir():
        try:
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
        except OSError as exc:
            pytest.skip(f"sshd needs its privilege-separation dir {PRIVSEP_DIR} ({exc.strerror}): "
                        f"run 'sudo mkdir -p {PRIVSEP_DIR}'")
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ssh_device(sshd):
    dev = sshd.device().open()
    yield dev
    dev.close()


# ----------------------------------------------------------------------------------------- ONNX models

WINDOW = 2048
CLASSES = 10


def make_onnx(path: Path, batch: int | str = 1, seed: int = 0, score: bool = False) -> Path:
    """vibration [batch,1,2048] -> Flatten -> MatMul W[2048,10] -> Add b -> Relu -> logits [batch,10]; with
    score, a second output guard_score [batch] = the sum of the squared logits (ReduceSumSquare)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((WINDOW, CLASSES)) / np.sqrt(WINDOW)).astype(np.float32)
    b = (rng.standard_normal(CLASSES) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["vibration"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["pre"]),
             helper.make_node("Relu", ["pre"], ["logits"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, CLASSES])]
    if score:
        nodes.append(helper.make_node("ReduceSumSquare", ["logits"], ["guard_score"], axes=[1], keepdims=0))
        outputs.append(helper.make_tensor_value_info("guard_score", TensorProto.FLOAT, [batch]))
    graph = helper.make_graph(
        nodes, "tiny_drsn_stub",
        [helper.make_tensor_value_info("vibration", TensorProto.FLOAT, [batch, 1, WINDOW])], outputs,
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="drsn-edge-test")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    return make_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx", batch=1)


@pytest.fixture(scope="session")
def scored_onnx(tmp_path_factory) -> Path:
    """tiny_onnx with a second output guard_score (sum of the squared logits)."""
    return make_onnx(tmp_path_factory.mktemp("onnx") / "scored.onnx", batch=1, score=True)


@pytest.fixture(scope="session")
def tiny_onnx_dynamic(tmp_path_factory) -> Path:
    return make_onnx(tmp_path_factory.mktemp("onnx") / "tiny_dyn.onnx", batch="N", seed=1)


@pytest.fixture(scope="session")
def windows(tmp_path_factory) -> Path:
    x = np.random.default_rng(3).standard_normal((5, 1, WINDOW)).astype(np.float32)
    path = tmp_path_factory.mktemp("windows") / "windows.npy"
    np.save(path, x)
    return path


def local_logits(model: Path, x: np.ndarray, batch: int) -> np.ndarray:
    from drsn_edge.export import ort_session, run_ort

    return run_ort(ort_session(model.read_bytes()), x, batch)


# ------------------------------------------------------------------------------------- hostile names

@pytest.fixture
def hostile(tmp_path):
    """(names, check): file names that would run commands if any shell saw them unquoted, and a check
    that none did (no sentinel file appeared, the canary folder survived)."""
    sentinels = tmp_path / "sentinels"
    sentinels.mkdir()
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep").write_text("x")
    s = lambda i: sentinels / f"pwned{i}"  # noqa: E731
    names = [
        "with space.bin",
        "single'quote.bin",
        'double"quote.bin',
        f"$(touch {s(1)})",
        f"`touch {s(2)}`",
        f"x;touch {s(3)};y",
        f";rm -rf {canary} ;",
        f"new\nline\ntouch {s(4)}",
        f"x' ; touch {s(5)} ; echo '",
        f'x" ; touch {s(6)} ; echo "',
        f"a&&touch {s(7)}||b|touch {s(8)}",
        "-leading-dash",
        "glob*?[ab] ~tilde $HOME \\back\\slash",
        "ünïcode ✓ tab\there.bin",
        "$(touch pwned-relative)",
    ]

    def check(*workdirs) -> None:
        made = sorted(p.name for p in sentinels.iterdir())
        assert not made, f"command injection: {made} were created"
        assert (canary / "keep").exists(), "command injection: the canary folder was removed"
        for wd in workdirs:
            if wd:
                assert not (Path(wd) / "pwned-relative").exists(), "command injection in the work dir"

    return names, check


# ------------------------------------------------------------------------------------------- tmpfs

@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 256 KiB tmpfs (real 'No space left on device'); skipped where mounting is not allowed."""
    def mount(size: str = "256k") -> Path:
        mnt = tmp_path / f"tmpfs-{size}"
        mnt.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {res.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    mounted: list[Path] = []
    yield mount
    for mnt in mounted:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill_up(folder: Path, leave_pages: int = 0) -> Path:
    """Fill the file system under `folder` until ENOSPC, then free `leave_pages` 4 KiB pages."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = b"\0" * 4096
        while True:
            try:
                if os.write(fd, chunk) < len(chunk):
                    break
            except OSError:
                break
        size = os.fstat(fd).st_size
        os.ftruncate(fd, max(0, (size // 4096 - leave_pages) * 4096))
    finally:
        os.close(fd)
    return filler
