import json
import os
import threading

import numpy as np
import pytest

from drsn_edge.monitor.health import HealthConfig
from drsn_edge.monitor.run import MonitorOptions, run


@pytest.fixture(scope="session")
def model():
    """The shipped float model (PyTorch), loaded once."""
    from drsn_edge.monitor.model import load_model

    return load_model(None)


@pytest.fixture(scope="session")
def signal12k():
    """6 windows of a healthy recording then 6 of a severe inner-race fault, 12 kHz (simulated, seeded)."""
    from drsn_edge.data.simulator import synthesize

    ds = synthesize(windows_per_class=6, classes=["normal", "IR021"], seed=3, recordings_per_class=1,
                    split=(1.0, 0.0, 0.0))
    return ds.x[:, 0, :].reshape(-1).astype(np.float64)


class Lines(list):
    def write(self, text):
        self.extend(json.loads(ln) for ln in text.splitlines())

    def of(self, kind):
        return [x for x in self if x["type"] == kind]


@pytest.fixture
def monitor_run(model):
    """Run the monitor in this process; returns (lines, summary, warnings)."""

    def go(source, stop=None, on_write=None, **kw):
        kw.setdefault("health", HealthConfig(k=3, n=4, m=3))
        opts = MonitorOptions(source=source if isinstance(source, str) else "-", **kw)
        lines, warns = Lines(), []

        def write(text):
            lines.write(text)
            if on_write:
                on_write(lines)

        summary = run(opts, write, warns.append, stop=stop or threading.Event(), model=model,
                      source=None if isinstance(source, str) else source)
        return lines, summary, warns

    return go


@pytest.fixture(autouse=True)
def _own_config_and_state(tmp_path, monkeypatch):
    """No MQTT config file or alert queue of the user's account leaks into a test."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for key in [k for k in os.environ if k.startswith("DRSN_EDGE_MQTT_")]:
        monkeypatch.delenv(key)
