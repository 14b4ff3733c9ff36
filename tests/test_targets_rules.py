"""Every validation rule of a target profile on both sides of its boundary: the value just allowed loads
(and keeps its value), the value just refused names the file, the key and the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from drsn_edge.errors import InputError
from drsn_edge.targets import FAMILY_TRANSPORTS, MCU_CPUS, load_target_file, summary_row

MCU = """name = "board"
family = "mcu"
backend = "tflm"
[hardware]
cpu = "cortex-m4"
clock_mhz = 100
flash_kb = 512
ram_kb = 128
{hw}
[device]
{dev}
[check]
{check}
"""

JETSON = """name = "board"
family = "jetson"
backend = "tensorrt"
[hardware]
gpu = "Ampere"
sm = 87
jetpack = "6.2"
tensorrt = "10.3"
cuda = "12.6"
ram_gb = 8
cpu = "A78AE"
{hw}
[device]
{dev}
"""


def _load(tmp_path: Path, text: str):
    p = tmp_path / "board.toml"
    p.write_text(text)
    return load_target_file(p)


def _mcu(tmp_path, hw="", dev="", check=""):
    keys = {ln.split(" = ")[0] for ln in hw.splitlines()}
    text = "\n".join(ln for ln in MCU.splitlines() if ln.split(" = ")[0] not in keys)  # hw replaces defaults
    return _load(tmp_path, text.format(hw=hw, dev=dev, check=check))


def _refused(tmp_path, message, **kw):
    with pytest.raises(InputError) as ei:
        (_jetson if kw.pop("jetson", False) else _mcu)(tmp_path, **kw)
    assert str(ei.value) == f"{tmp_path / 'board.toml'}: {message}"


def _jetson(tmp_path, hw="", dev=""):
    return _load(tmp_path, JETSON.format(hw=hw, dev=dev))


# (section, line that loads, the value it keeps, line that is refused, message)
BOUNDARIES = [
    ("hw", "ram_share = 1", 1.0, "ram_share = 1.0001", "'hardware.ram_share' must be > 0 and ≤ 1, got 1.0001"),
    ("hw", "ram_share = 0.001", 0.001, "ram_share = 0", "'hardware.ram_share' must be > 0 and ≤ 1, got 0.0"),
    ("hw", "clock_mhz = 0.001", 0.001, "clock_mhz = 0", "'hardware.clock_mhz' must be > 0, got 0.0"),
    ("hw", "flash_kb = 1", 1, "flash_kb = 0", "'hardware.flash_kb' must be > 0, got 0"),
    ("hw", "runtime_code_kb = 0", 0, "runtime_code_kb = -1", "'hardware.runtime_code_kb' must be ≥ 0, got -1"),
    ("check", "min_accuracy = 0", 0.0, "min_accuracy = -0.01", "'check.min_accuracy' must be ≥ 0 and ≤ 1, got -0.01"),
    ("check", "min_accuracy = 1", 1.0, "min_accuracy = 1.01", "'check.min_accuracy' must be ≥ 0 and ≤ 1, got 1.01"),
    ("check", "max_drop_pp = 0", 0.0, "max_drop_pp = -0.5", "'check.max_drop_pp' must be ≥ 0, got -0.5"),
    ("check", "max_latency_ms = 0.01", 0.01, "max_latency_ms = 0", "'check.max_latency_ms' must be > 0, got 0.0"),
]


@pytest.mark.parametrize("section,ok,kept,bad,message", BOUNDARIES)
def test_numeric_ranges_both_sides(tmp_path, section, ok, kept, bad, message):
    key = ok.split(" = ")[0]
    t = _mcu(tmp_path, **{section: ok})
    got = (t.hardware if section == "hw" else t.check)[key]
    assert got == kept and type(got) is type(kept)
    _refused(tmp_path, message, **{section: bad})


@pytest.mark.parametrize("hw,message", [
    ("clock_mhz = true", "'hardware.clock_mhz' must be a number, got a boolean"),
    ('clock_mhz = "100"', "'hardware.clock_mhz' must be a number, got a string"),
    ("flash_kb = 1.0", "'hardware.flash_kb' must be an integer, got a number"),
    ("cmsis_nn = 1", "'hardware.cmsis_nn' must be true or false, got an integer"),
    ("cpu = 4", "'hardware.cpu' must be a string, got an integer"),
    ("fpu = [1]", "'hardware.fpu' must be a string, got an array"),
    ('cpu = "cortex-m85"', f"'hardware.cpu' must be one of {', '.join(MCU_CPUS)}, got 'cortex-m85'"),
])
def test_types_are_named(tmp_path, hw, message):
    _refused(tmp_path, message, hw=hw)


def test_a_value_where_a_table_belongs(tmp_path):
    text = MCU.format(hw="", dev="", check="").replace("[check]\n", "").replace("[hardware]", "check = 3\n[hardware]")
    with pytest.raises(InputError) as ei:
        _load(tmp_path, text)
    assert str(ei.value) == f"{tmp_path / 'board.toml'}: 'check' must be a table ([check]), got an integer"


@pytest.mark.parametrize("version,ok", [("6.2", True), ("10", True), ("10.3.0.26", True), ("6.x", False),
                                        ("v6.2", False), ("6.", False), ("", False)])
def test_versions(tmp_path, version, ok):
    hw_text = JETSON.replace('jetpack = "6.2"', f'jetpack = "{version}"')
    if ok:
        assert _load(tmp_path, hw_text.format(hw="", dev="")).jetpack == version
    else:
        with pytest.raises(InputError) as ei:
            _load(tmp_path, hw_text.format(hw="", dev=""))
        assert str(ei.value).endswith(f"'hardware.jetpack' must be a version like 10.3, got '{version}'")


@pytest.mark.parametrize("name,ok", [("a", True), ("0board", True), ("my_board-2.1", True), ("Board", False),
                                     ("-board", False), ("_b", False), ("b oard", False)])
def test_names(tmp_path, name, ok):
    p = tmp_path / f"{name}.toml"
    p.write_text(MCU.format(hw="", dev="", check="").replace('name = "board"', f'name = "{name}"'))
    if ok:
        assert load_target_file(p).name == name
    else:
        with pytest.raises(InputError, match="'name' must be lower-case letters, digits"):
            load_target_file(p)


@pytest.mark.parametrize("port,ok", [(1, True), (65535, True), (22, True), (0, False), (65536, False),
                                     ("true", False), ('"22"', False)])
def test_ssh_port_range(tmp_path, port, ok):
    dev = f'transport = "ssh"\nhost = "jetson.local"\nport = {port}'
    if ok:
        assert _jetson(tmp_path, dev=dev).device == {"transport": "ssh", "host": "jetson.local", "port": port}
    else:
        _refused(tmp_path, f"'device.port' must be a TCP port number (1..65535), got {port if port != 'true' else True!r}"
                 if port != '"22"' else "'device.port' must be a TCP port number (1..65535), got '22'",
                 jetson=True, dev=dev)


def test_serial_port_is_a_path(tmp_path):
    t = _mcu(tmp_path, dev='transport = "serial"\nport = "/dev/ttyACM0"\nbaud = 115200')
    assert t.device == {"transport": "serial", "port": "/dev/ttyACM0", "baud": 115200}
    _refused(tmp_path, "'device.baud' must be > 0, got 0", dev='transport = "serial"\nbaud = 0')


def test_transport_defaults_and_fit(tmp_path):
    assert _mcu(tmp_path).device == {"transport": "serial"} and _mcu(tmp_path).transport == "serial"
    assert _jetson(tmp_path).transport == "ssh"
    assert _jetson(tmp_path, dev='transport = "local"').transport == "local"
    _refused(tmp_path, f"'device.transport' 'serial' does not fit family 'jetson' (use {' or '.join(FAMILY_TRANSPORTS['jetson'])})",
             jetson=True, dev='transport = "serial"')
    _refused(tmp_path, "key 'device.machine' does not apply to transport 'serial' (its keys: baud, port)",
             dev='machine = "mps2-an386"')
    _refused(tmp_path, "key 'device.port' does not apply to transport 'local' (its keys: none)",
             jetson=True, dev='transport = "local"\nport = 22')


def test_qemu_machine_from_either_table_and_they_must_agree(tmp_path):
    t = _mcu(tmp_path, dev='transport = "qemu"\nmachine = "mps2-an500"')
    assert t.device == {"transport": "qemu", "machine": "mps2-an500"}
    t = _mcu(tmp_path, hw='qemu_machine = "mps2-an386"', dev='transport = "qemu"\nmachine = "mps2-an386"')
    assert t.device["machine"] == "mps2-an386"
    _refused(tmp_path, "'device.machine' 'mps2-an500' differs from 'hardware.qemu_machine' 'mps2-an386'",
             hw='qemu_machine = "mps2-an386"', dev='transport = "qemu"\nmachine = "mps2-an500"')
    _refused(tmp_path, "transport 'qemu' needs 'device.machine' or 'hardware.qemu_machine'", dev='transport = "qemu"')


def test_derived_sizes(tmp_path):
    t = _mcu(tmp_path, hw="ram_share = 0.25\nruntime_code_kb = 40")
    assert (t.flash_bytes, t.ram_bytes, t.ram_budget_bytes, t.runtime_code_bytes) == (524288, 131072, 32768, 40960)
    assert _mcu(tmp_path).runtime_code_bytes is None
    j = _jetson(tmp_path, hw="dla_cores = 2")
    assert (j.flash_bytes, j.ram_bytes, j.ram_budget_bytes, j.dla_cores) == (None, 8 * 1024 ** 3, None, 2)
    assert (j.sm, j.tensorrt, j.jetpack, j.cuda) == (87, "10.3", "6.2", "12.6")
    assert _mcu(tmp_path).dla_cores is None and _jetson(tmp_path).dla_cores == 0
    d = j.to_dict()
    assert d["ram_bytes"] == 8 * 1024 ** 3 and d["dla_cores"] == 2 and d["flash_bytes"] is None
    assert d["path"] == str((tmp_path / "board.toml").resolve()) and d["device"] == {"transport": "ssh"}


def test_summary_rows(tmp_path):
    assert summary_row(_mcu(tmp_path, hw="ram_share = 0.25")) == {
        "name": "board", "family": "mcu", "backend": "tflm", "chip": "cortex-m4", "clock": "100 MHz",
        "flash": "512 KB", "ram": "128 KB", "ram_budget": "32 KB", "stack": None, "transport": "serial"}
    assert summary_row(_jetson(tmp_path, hw="dla_cores = 2")) == {
        "name": "board", "family": "jetson", "backend": "tensorrt", "chip": "Ampere", "clock": None, "flash": None,
        "ram": "8 GB", "ram_budget": None, "stack": "sm 87 · TRT 10.3 · JP 6.2 · 2 DLA", "transport": "ssh"}
    assert summary_row(_jetson(tmp_path))["stack"] == "sm 87 · TRT 10.3 · JP 6.2"


def test_ram_budget_of_a_target_made_in_code_uses_the_default_share():
    """A Target built in code (no file, so no defaults filled in): half the RAM, as a profile would get."""
    from drsn_edge.targets import Target

    t = Target(name="t", family="mcu", backend="tflm", description="", hardware={"ram_kb": 64, "flash_kb": 256})
    assert (t.ram_bytes, t.ram_budget_bytes, t.flash_bytes, t.runtime_code_bytes) == (65536, 32768, 262144, None)
    h = Target(name="h", family="host", backend="onnxruntime", description="", hardware={"ram_gb": 0.5})
    assert (h.ram_bytes, h.ram_budget_bytes) == (536870912, None)  # the budget is an MCU figure


HOST = 'name = "board"\nfamily = "host"\nbackend = "onnxruntime"\n'


@pytest.mark.parametrize("text,message", [
    (HOST + "speed = 3\n", "unknown key 'speed' (allowed: name, family, backend, description, hardware, device, check)"),
    (HOST + "[hardware]\nwarp = 9\n", "unknown key 'hardware.warp' (allowed in [hardware]: cpu, ram_gb)"),
    ('family = "host"\nbackend = "onnxruntime"\n', "missing required key 'name'"),
    ('name = 3\nfamily = "host"\nbackend = "onnxruntime"\n', "'name' must be a string, got an integer"),
    (MCU.format(hw="", dev="", check="").replace('cpu = "cortex-m4"\n', ""), "missing required key 'hardware.cpu'"),
    (MCU.format(hw="", dev="", check="").replace("clock_mhz = 100", "clock_mhz = nan"),
     "'hardware.clock_mhz' must be a finite number, got nan"),
    (HOST.replace('"board"', '"other"'), "'name' is 'other' but must equal the file name 'board'"),
    (HOST.replace("onnxruntime", "tflm"), "backend 'tflm' does not fit family 'host' (use onnxruntime or litert or host or native)"),
    (MCU.format(hw="", dev='transport = "serial"\nport = 22', check=""),
     "'device.port' must be a serial device path string, got 22"),
])
def test_every_refusal_is_worded_exactly(tmp_path, text, message):
    p = tmp_path / "board.toml"
    p.write_text(text)
    with pytest.raises(InputError) as ei:
        load_target_file(p)
    assert str(ei.value) == f"{p}: {message}"


def test_unreadable_files_are_named(tmp_path):
    p = tmp_path / "board.toml"
    with pytest.raises(InputError) as ei:
        load_target_file(p)
    assert str(ei.value) == f"target file '{p}' does not exist"
    p.mkdir()
    with pytest.raises(InputError) as ei:
        load_target_file(p)
    assert str(ei.value) == f"target file '{p}' is a folder; name a regular file"
    p.rmdir()
    p.write_bytes(b'name = "\xff"\n')
    with pytest.raises(InputError) as ei:
        load_target_file(p)
    assert str(ei.value) == f"{p}: not valid TOML: not UTF-8 text"
    p.write_text('name = "board"\ndescription = \n')
    with pytest.raises(InputError) as ei:
        load_target_file(p)
    assert str(ei.value).startswith(f"{p}: not valid TOML: Invalid value")


def test_defaults_of_a_minimal_profile(tmp_path):
    """No description, no [hardware], no [device], no [check]: the profile loads with exactly the defaults."""
    t = _load(tmp_path, HOST)
    assert (t.description, t.hardware, t.device, t.check) == ("", {}, {"transport": "local"},
                                                              {"min_accuracy": 0.9, "max_drop_pp": 1.0})
    t = _load(tmp_path, HOST + 'description = "a PC"\n')
    assert t.description == "a PC"
    m = _mcu(tmp_path)
    assert m.hardware == {"cpu": "cortex-m4", "clock_mhz": 100.0, "flash_kb": 512, "ram_kb": 128, "ram_share": 0.5,
                          "fpu": "none", "cmsis_nn": False}  # keys without a default are not filled with None
    assert m.device == {"transport": "serial"}


def test_qemu_machine_from_the_hardware_table_alone(tmp_path):
    t = _mcu(tmp_path, hw='qemu_machine = "mps2-an386"', dev='transport = "qemu"')
    assert t.device == {"transport": "qemu", "machine": "mps2-an386"}


def test_summary_row_of_a_profile_without_clock_flash_or_ram(tmp_path):
    assert summary_row(_load(tmp_path, HOST + '[hardware]\ncpu = "x86-64"\n')) == {
        "name": "board", "family": "host", "backend": "onnxruntime", "chip": "x86-64", "clock": None, "flash": None,
        "ram": None, "ram_budget": None, "stack": None, "transport": "local"}
