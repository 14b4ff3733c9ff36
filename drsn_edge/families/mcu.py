"""Microcontroller boards: a Cortex-M (or Xtensa) core with KB of flash and RAM, reached over a serial port
or emulated by QEMU."""

from __future__ import annotations

from .base import NON_NEGATIVE, POSITIVE, Family, field_spec

CPUS = ("cortex-m0plus", "cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55", "xtensa-lx7")
FPUS = ("none", "fpv4-sp-d16", "fpv5-d16", "fpv5-sp-d16")
DEFAULT_RAM_SHARE = 0.5


def _summary(t) -> dict:
    hw = t.hardware
    return {"chip": hw.get("cpu"), "clock": f"{hw['clock_mhz']:g} MHz", "flash": f"{hw['flash_kb']} KB", "stack": None}


FAMILY = Family(
    name="mcu",
    description="microcontroller boards (TFLite Micro or the generated C engine)",
    hardware={
        "cpu": field_spec("str", True, check=CPUS),
        "clock_mhz": field_spec("float", True, check=POSITIVE),
        "flash_kb": field_spec("int", True, check=POSITIVE),
        "ram_kb": field_spec("int", True, check=POSITIVE),
        "ram_share": field_spec("float", default=DEFAULT_RAM_SHARE, check=(0, 1, False)),
        "fpu": field_spec("str", default="none", check=FPUS),
        "cmsis_nn": field_spec("bool", default=False),
        "qemu_machine": field_spec("str"),
        "runtime_code_kb": field_spec("int", check=NON_NEGATIVE),
    },
    default_transport="serial",
    summary=_summary,
)
