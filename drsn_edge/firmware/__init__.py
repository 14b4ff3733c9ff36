"""Firmware side of the microcontroller path: the serial protocol (host and device) and the bundle."""
