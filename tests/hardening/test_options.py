"""Root cause 8: an option the target's backend does not take is refused (exit 2) before any device is
contacted or anything is built (backends' Options dataclasses, make_options); a --device whose transport
does not fit the target's family (targets.check_transport); monitor's options for another kind of source or
for MQTT when there is none.""" 

import numpy as np
import pytest

from .contract import expect


@pytest.mark.parametrize("args,needle", [
    (["build", "--target", "jetson-nano", "--strongly-typed"], "strongly"),
    (["build", "--target", "stm32h743", "--device", "ssh://nobody@192.0.2.1"], "--device"),
    (["build", "--target", "host", "--device", "ssh://nobody@192.0.2.1"], "--device"),
    (["build", "--target", "host", "--dla-core", "0"], "--dla-core"),
    (["build", "--target", "stm32h743", "--workspace-mb", "64"], "--workspace-mb"),
    (["build", "--target", "qemu-m7", "--opt-level", "3"], "--opt-level"),
    (["build", "--target", "host", "--precision", "fp16"], "--precision"),
    (["build", "--target", "jetson-nano", "--opt-level", "3"], "opt"),
    (["build", "--engine", "c", "--target", "jetson-orin-nano"], "--engine"),
    (["build", "--engine", "tflm", "--target", "qemu-m7", "--method", "entropy"], "--method"),
    (["check", "--build", "--target", "qemu-m7", "--device", "ssh://nobody@192.0.2.1"], "does not apply"),
    (["check", "--target", "jetson-orin-nano", "--device", "qemu"], "does not apply"),
])
def test_option_that_does_not_apply_is_refused(work, args, needle):
    expect(args, work("m.drsn"), "input", contains=needle, timeout=120)


@pytest.mark.parametrize("args,needle", [
    (["--source", "rec.npy", "--channel", "FE"], "--channel"),          # a .mat file's sensor
    (["--source", "rec.npy", "--format", "f32"], "--format"),           # a stream's encoding
    (["--source", "-", "--realtime"], "--realtime"),                    # a file's replay speed
    (["--source", "rec.npy", "--mqtt-config", "m.drsn"], "--mqtt-config"),  # MQTT only
    (["--source", "rec.npy", "--alert-queue", "q.jsonl"], "--alert-queue"),
    (["--source", "rec.npy", "--queue-max", "5"], "--queue-max"),
])
def test_monitor_option_that_does_not_apply_is_refused(work, args, needle):
    cwd = work("m.drsn")
    np.save(cwd / "rec.npy", np.zeros(4096, np.float32))
    expect(["monitor", "m.drsn", *args], cwd, "input", contains=needle, timeout=120)
