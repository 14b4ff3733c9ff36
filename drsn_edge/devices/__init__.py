"""Devices: where artifacts run. `open_device("local" | "ssh://[user@]host[:port]")` returns a Device
(see base.Device) that puts files into a private work dir, runs the self-contained agent there and
fetches results atomically. `open_device("serial:///dev/ttyACM0" | "qemu://mps2-an500", elf=...)` returns a
microcontroller link that carries the serial protocol (devices.mcu.McuRunner runs a build over it)."""

from .base import DEVICES, Device, DeviceBase, open_device, parse_ssh_url
from .local import LocalDevice
from .ssh import SshDevice

__all__ = ["DEVICES", "Device", "DeviceBase", "LocalDevice", "SshDevice", "open_device", "parse_ssh_url"]
