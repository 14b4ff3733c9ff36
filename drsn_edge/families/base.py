"""What a target family is: the hardware facts its profiles declare, how its boards are reached by default, and
the one line `drsn-edge targets` prints for a profile. One module per family in this package, one line in
`FAMILIES` (drsn_edge/families/__init__.py) to plug a new one in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


# Each schema field: (kind, required, default, check) where kind is one of "str", "int", "float", "bool";
# check is None, a tuple of allowed values, "version", or a (lo, hi, lo_inclusive) numeric range (None = open).
def field_spec(kind, required=False, default=None, check=None) -> dict:
    return {"kind": kind, "required": required, "default": default, "check": check}


POSITIVE = (0, None, False)  # > 0
NON_NEGATIVE = (0, None, True)  # >= 0


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    hardware: dict  # the [hardware] table's schema (field_spec values)
    default_transport: str  # [device] transport when a profile names none
    summary: Callable  # Target -> dict with chip, clock, flash, stack (the `targets` table's family columns)
    # backends and transports this family uses besides those whose own registry line names it
    backends: tuple[str, ...] = ()
    transports: tuple[str, ...] = ()
