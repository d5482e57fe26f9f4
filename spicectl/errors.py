"""The one error hierarchy of the library.

Every error carries a one-line message for the user and, where it helps, a
hint saying what to do next. The CLI maps each class to an exit code in
`spicectl.cli.errors`; nothing in the library knows about exit codes.
"""

from __future__ import annotations


class SpicectlError(Exception):
    """Base of every error spicectl reports to a user."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        # keep the hint when an error crosses a process boundary (see virt.child)
        return (type(self), (self.message, self.hint))


class InvalidInput(SpicectlError):
    """A value given by the user (option, file content, template) is wrong."""


class NotFound(SpicectlError):
    """Something named by the user does not exist."""


class Conflict(SpicectlError):
    """The action would clobber something that exists."""


class AuthError(SpicectlError):
    """A passphrase, ticket or credential was refused."""


class VerificationFailed(SpicectlError):
    """A check (certificate directory, host) found faults."""


class HypervisorError(SpicectlError):
    """libvirt or QEMU refused or failed."""


class ProtocolError(SpicectlError):
    """A peer spoke the SPICE (or proxy) protocol wrongly."""


class TimeoutExpired(SpicectlError):
    """A wait ran out of time."""


class EnvironmentProblem(SpicectlError):
    """The host lacks something spicectl needs (a program, a permission)."""
