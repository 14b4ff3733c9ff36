"""NVIDIA Jetson modules: TensorRT engines built for the module's GPU (SM), JetPack and TensorRT version,
reached over SSH or used on the machine itself."""

from __future__ import annotations

from .base import NON_NEGATIVE, POSITIVE, Family, field_spec


def _summary(t) -> dict:
    stack = f"sm {t.sm} · TRT {t.tensorrt} · JP {t.jetpack}" + (f" · {t.dla_cores} DLA" if t.dla_cores else "")
    return {"chip": t.hardware.get("gpu"), "clock": None, "flash": None, "stack": stack}


FAMILY = Family(
    name="jetson",
    description="NVIDIA Jetson modules (TensorRT)",
    hardware={
        "gpu": field_spec("str", True),
        "sm": field_spec("int", True, check=POSITIVE),
        "dla_cores": field_spec("int", default=0, check=NON_NEGATIVE),
        "jetpack": field_spec("str", True, check="version"),
        "tensorrt": field_spec("str", True, check="version"),
        "cuda": field_spec("str", True, check="version"),
        "ram_gb": field_spec("float", True, check=POSITIVE),
        "cpu": field_spec("str", True),
    },
    default_transport="ssh",
    summary=_summary,
)
