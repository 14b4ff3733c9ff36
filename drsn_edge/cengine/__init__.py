"""Interpreter-free C engine: portable C99 generated from a verified int8 .tflite, bit-exact with
TFLite Micro's reference kernels. `generate` writes the sources, `HostEngine` runs them on this
machine, `arm_compile` builds them for a Cortex-M core and measures flash and RAM."""

from __future__ import annotations


def generate(tflite_bytes, out_dir, *, dsp=None, guard=None):
    from .codegen import generate as _generate

    return _generate(tflite_bytes, out_dir, dsp=dsp, guard=guard)


def HostEngine(c_dir, defines=()):
    from .host import HostEngine as _HostEngine

    return _HostEngine(c_dir, defines)


def arm_compile(c_dir, cpu, fpu, extra_sources, out_elf, flash_bytes, ram_bytes, **kwargs):
    from .arm import arm_compile as _arm_compile

    return _arm_compile(c_dir, cpu, fpu, extra_sources, out_elf, flash_bytes, ram_bytes, **kwargs)
