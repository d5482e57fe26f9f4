"""Error → exit code, in one place. The table is printed by `spicectl --help`."""

from __future__ import annotations

from spicectl import errors

# Ordered most specific first; the first matching class wins.
EXIT_CODES: list[tuple[type[errors.SpicectlError], int, str]] = [
    (errors.InvalidInput, 2, "bad input: an option, file or template is wrong"),
    (errors.NotFound, 3, "something named does not exist"),
    (errors.Conflict, 4, "it exists already (use --force where offered), or is not in the state the action needs "
                         "(e.g. not running)"),
    (errors.AuthError, 5, "a passphrase, ticket or credential was refused"),
    (errors.HypervisorError, 6, "libvirt or QEMU failed"),
    (errors.ProtocolError, 7, "a SPICE peer broke the protocol"),
    (errors.VerificationFailed, 8, "a check found faults"),
    (errors.TimeoutExpired, 9, "a wait timed out"),
    (errors.EnvironmentProblem, 10, "the host lacks a program or permission"),
    (errors.SpicectlError, 1, "any other error"),
]
INTERRUPTED = 130
INTERNAL = 70


def from_os_error(exc: OSError) -> errors.SpicectlError | None:
    """An OSError about a path (a name too long, a loop of links, a permission) as the error it is
    for the user; None for one that names no file (a bug, reported as internal)."""
    import errno

    if exc.filename is None:
        return None
    name = str(exc.filename)
    message = f"{name if len(name) <= 200 else name[:200] + '…'}: {exc.strerror or exc}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        return errors.EnvironmentProblem(message)
    return errors.InvalidInput(message)


def exit_code_for(exc: errors.SpicectlError) -> int:
    for cls, code, _ in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return 1


def exit_code_help() -> str:
    lines = ["Exit codes:", "", "\b", "  0   success"]
    lines += [f"  {code:<3} {text}" for _, code, text in sorted(EXIT_CODES, key=lambda e: e[1])]
    lines += [f"  {INTERNAL:<3} internal error (a bug: rerun with --debug and report it)",
              f"  {INTERRUPTED:<3} interrupted"]
    return "\n".join(lines)
