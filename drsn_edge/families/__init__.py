"""Target families. Adding one: a module in this package that defines `FAMILY` (a base.Family: hardware
schema, default transport, summary line) and one line below; backends and transports name the families they
serve in their own registries (drsn_edge/backends/__init__.py BACKENDS, drsn_edge/devices/base.py
TRANSPORT_SCHEMA), or the family lists them itself."""

from __future__ import annotations

from importlib import import_module

from .base import Family

# name -> module in this package
FAMILIES = {
    "jetson": "jetson",
    "mcu": "mcu",
    "host": "host",
}


def get_family(name: str) -> Family:
    return import_module(f"{__name__}.{FAMILIES[name]}").FAMILY
