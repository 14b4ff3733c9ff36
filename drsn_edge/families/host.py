"""This machine's CPU: the fastest local INT8 runtime that keeps the accuracy."""

from __future__ import annotations

from .base import POSITIVE, Family, field_spec


def _summary(t) -> dict:
    return {"chip": t.hardware.get("cpu"), "clock": None, "flash": None, "stack": None}


FAMILY = Family(
    name="host",
    description="this machine's CPU",
    hardware={
        "cpu": field_spec("str"),
        "ram_gb": field_spec("float", check=POSITIVE),
    },
    default_transport="local",
    summary=_summary,
)
