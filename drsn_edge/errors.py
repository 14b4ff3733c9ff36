"""Typed errors. Each maps to one exit code of the CLI contract and carries a one-line message
that says what is wrong and what to do."""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_MISSING_DEPENDENCY = 3
EXIT_DEVICE = 4

# The signal that interrupted this process (set by the CLI's handler), so that a library which turns the
# KeyboardInterrupt into its own error while importing (ONNX Runtime: "initialization failed") is not
# mistaken for a missing dependency.
INTERRUPTED: dict = {"signal": None}


class DrsnEdgeError(Exception):
    """Base class: bad input unless a subclass says otherwise."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str):
        # Keep the message on one line: the CLI prints it as is.
        super().__init__(" ".join(str(message).split()))


class InputError(DrsnEdgeError):
    """Bad usage or bad input data (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class CheckFailedError(DrsnEdgeError):
    """A threshold check failed (exit 1)."""

    exit_code = EXIT_CHECK_FAILED


class MissingDependencyError(DrsnEdgeError):
    """An optional dependency is not installed (exit 3)."""

    exit_code = EXIT_MISSING_DEPENDENCY


class DeviceError(DrsnEdgeError):
    """A device or transport failed (exit 4)."""

    exit_code = EXIT_DEVICE
