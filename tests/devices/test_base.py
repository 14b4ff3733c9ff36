"""Pure tests: URLs, the registry, remote names, ssh failure classification, agent output parsing,
the ssh command line and the agent's self-containedness. No network, no sshd."""

import ast
from pathlib import Path
import json
import sys

import pytest

from drsn_edge.devices import DEVICES, Device, LocalDevice, SshDevice, open_device, parse_ssh_url
from drsn_edge.devices.base import AGENT_PATH, check_remote_name, parse_agent_output, relative_remote_name
from drsn_edge.devices.ssh import PYTHON_MISSING_MARKER, classify_ssh_failure
from drsn_edge.errors import DeviceError, InputError


@pytest.mark.parametrize("url, want", [
    ("ssh://jetson", (None, "jetson", None)),
    ("ssh://nvidia@jetson", ("nvidia", "jetson", None)),
    ("ssh://nvidia@192.168.55.1:2222", ("nvidia", "192.168.55.1", 2222)),
    ("ssh://nvidia@[::1]:2222", ("nvidia", "::1", 2222)),
    ("ssh://[fe80::1%eth0]", (None, "fe80::1%eth0", None)),
    ("SSH://Jetson-Orin.local/", (None, "Jetson-Orin.local", None)),
])
def test_parse_ssh_url(url, want):
    assert parse_ssh_url(url) == want


@pytest.mark.parametrize("url", [
    "ssh://", "ssh://host:0", "ssh://host:70000", "ssh://host:port", "ssh://::1", "ssh://[::1",
    "ssh://[::1]x", "ssh://-oProxyCommand=touch_x", "ssh://host/path", "ssh://host?x=1",
    "ssh://us er@host", "ssh://-l@host", "ssh://ho st", "ssh://host;rm", "ssh://$(touch x)",
])
def test_parse_ssh_url_rejects(url):
    with pytest.raises(InputError):
        parse_ssh_url(url)


def test_registry_and_unknown_scheme():
    assert {"local", "ssh"} <= set(DEVICES)
    with pytest.raises(InputError, match="unknown device"):
        open_device("telnet://jetson")
    with pytest.raises(InputError, match="ssh://nvidia@jetson"):
        open_device("nvidia@jetson")
    with pytest.raises(InputError):
        open_device("local://somewhere")


def test_devices_satisfy_protocol():
    assert isinstance(LocalDevice(), Device)
    assert isinstance(SshDevice("jetson"), Device)


@pytest.mark.parametrize("name", ["", "/etc/passwd", "../x", "a/../../x", ".", "a\x00b", "a/.."])
def test_remote_name_rejected(name):
    with pytest.raises(InputError):
        check_remote_name(name)


def test_remote_name_normalized():
    assert check_remote_name("a//b/./c") == "a/b/c"
    assert relative_remote_name("/tmp/drsn-edge.X/m.onnx", "/tmp/drsn-edge.X") == "m.onnx"
    with pytest.raises(InputError):
        relative_remote_name("/tmp/other/m.onnx", "/tmp/drsn-edge.X")


@pytest.mark.parametrize("rc, stderr, phase, want", [
    (255, "ssh: connect to host 10.0.0.9 port 22: Connection refused", "connect", "unreachable"),
    (255, "ssh: connect to host 10.0.0.9 port 22: No route to host", "run", "unreachable"),
    (255, "ssh: connect to host 10.0.0.9 port 22: Connection timed out", "connect", "unreachable"),
    (255, "Connection timed out during banner exchange", "connect", "unreachable"),
    (255, "ssh: Could not resolve hostname jetsn: Name or service not known", "connect", "unreachable"),
    (255, "nvidia@jetson: Permission denied (publickey,password).", "connect", "auth refused"),
    (255, "Host key verification failed.", "connect", "host key verification failed"),
    (255, "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.", "put",
     "host key verification failed"),
    (1, "cat: write error: No space left on device", "put", "disk full"),
    (127, f"{PYTHON_MISSING_MARKER} python3", "run", "python"),
    (255, "Connection to jetson closed by remote host.", "run", "dropped"),
    (255, "client_loop: send disconnect: Broken pipe", "get", "dropped"),
    (255, "Timeout, server jetson not responding.", "run", "dropped"),
    (255, "kex_exchange_identification: read: Connection reset by peer", "connect", "cannot connect"),
    (1, "mv: cannot move: Permission denied", "put", "failed on"),
])
def test_classify_ssh_failure(rc, stderr, phase, want):
    err = classify_ssh_failure(rc, stderr.encode(), "ssh://nvidia@jetson", "doing it", phase)
    assert isinstance(err, DeviceError) and err.exit_code == 4
    assert want in str(err)
    assert "\n" not in str(err)


def test_parse_agent_output():
    ok = parse_agent_output(b'{"pong": true}\n', b"", 0, "dev", "ping")
    assert ok == {"pong": True}
    # login-shell chatter before the JSON line is tolerated
    assert parse_agent_output(b'Welcome!\n{"a": 1}\n', b"", 0, "dev", "ping") == {"a": 1}
    with pytest.raises(DeviceError, match="no JSON result.*ValueError: boom"):
        parse_agent_output(b"garbage", b"Traceback ...\n  File x\nValueError: boom\n", 1, "dev", "run-onnx")
    with pytest.raises(DeviceError, match="tensorrt not available"):
        parse_agent_output(json.dumps({"error": "tensorrt not available"}).encode(), b"", 1, "dev", "build-engine")
    res = parse_agent_output(json.dumps({"error": "tensorrt not available"}).encode(), b"", 1, "dev",
                             "build-engine", check=False)
    assert res["error"] == "tensorrt not available"
    with pytest.raises(DeviceError, match="disk full"):
        parse_agent_output(b'{"error": "x", "error_kind": "disk_full"}', b"", 1, "dev", "run-onnx")


def test_ssh_argv_is_a_list_with_batchmode_first_and_destination_last():
    dev = SshDevice("jetson", user="nvidia", port=2222, config_file="/cfg", identity_file="/key",
                    options=["BatchMode=no", "ConnectTimeout=3", "ProxyJump=gw"])
    argv = dev.ssh_argv()
    assert argv[:3] == ["ssh", "-o", "BatchMode=yes"]  # first value wins in ssh: BatchMode=no can't undo it
    assert argv[-2:] == ["--", "jetson"]
    assert ["-F", "/cfg"] == argv[argv.index("-F"):argv.index("-F") + 2]
    assert ["-i", "/key"] == argv[argv.index("-i"):argv.index("-i") + 2]
    assert argv.index("ConnectTimeout=3") < argv.index("ConnectTimeout=10")  # user's options win
    assert ["-p", "2222"] == argv[argv.index("-p"):argv.index("-p") + 2]
    assert ["-l", "nvidia"] == argv[argv.index("-l"):argv.index("-l") + 2]
    assert "-T" in argv
    # nothing is set that would override ~/.ssh/config keys, known_hosts or ProxyJump
    joined = " ".join(argv)
    for key in ("IdentityFile", "UserKnownHostsFile", "StrictHostKeyChecking", "ProxyJump=", "ProxyCommand"):
        assert key not in joined.replace("ProxyJump=gw", "")
    assert SshDevice("jetson").url == "ssh://jetson"
    assert SshDevice("::1", user="u", port=22).url == "ssh://u@[::1]:22"


@pytest.mark.parametrize("kwargs", [{"host": "-oProxyCommand=x"}, {"host": "a b"}, {"host": "h", "user": "-x"},
                                    {"host": "h", "options": ["-v"]}, {"host": "h", "port": 0}])
def test_ssh_device_rejects_option_injection(kwargs):
    with pytest.raises(InputError):
        SshDevice(**kwargs)


def test_agent_is_self_contained_and_python36_syntax():
    source = AGENT_PATH.read_text()
    tree = ast.parse(source, feature_version=(3, 6))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "the agent must not use relative imports"
            imported.add(node.module.split(".")[0])
    stdlib = set(sys.stdlib_module_names)
    # tensorrt is optional; trt_builder.py is drsn-edge's own device-side builder, uploaded next to the agent
    assert imported - stdlib <= {"tensorrt", "trt_builder"}, imported - stdlib
    assert "drsn_edge" not in source.replace("drsn-edge", "")
    # numpy / onnxruntime are imported lazily (by name), never at module level
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert all(getattr(n, "module", None) != "numpy" and all(a.name != "numpy" for a in n.names) for n in top)


def test_trt_builder_is_self_contained_and_python36_syntax():
    from drsn_edge.backends.trt_builder import __file__ as builder_file

    tree = ast.parse(Path(builder_file).read_text(), feature_version=(3, 6))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) <= {"tensorrt", "numpy", "polygraphy"}


def test_agent_commands_registry():
    from drsn_edge.devices import agent

    assert {"info", "ping", "run-onnx", "build-engine", "run-engine"} <= set(agent.COMMANDS)
    res = agent.run(["no-such-command"])
    assert res["error_kind"] == "usage" and "unknown command" in res["error"]
