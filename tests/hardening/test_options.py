"""Root cause 8: an option the target's backend does not take is refused (exit 2) before any device is
contacted or anything is built (backends' Options dataclasses, make_options)."""

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
])
def test_option_that_does_not_apply_is_refused(work, args, needle):
    expect(args, work("m.drsn"), "input", contains=needle, timeout=120)
