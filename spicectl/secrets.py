"""Reading secrets (passphrases, tickets) from a file, an fd, stdin or the environment.

Never from argv: a command line is visible to every user through /proc.
"""

from __future__ import annotations

import os

from spicectl.errors import InvalidInput

MAX_SECRET = 64 * 1024


def read_secret(*, file: str | None = None, fd: int | None = None, env: str | None = None,
                what: str = "passphrase") -> bytes | None:
    """Return the secret from whichever single source is given, or None.

    A trailing newline (as `echo` writes) is stripped; anything else is kept.
    `file` may be '-' for standard input.
    """
    given = [s for s in (file, fd, env) if s is not None]
    if len(given) > 1:
        raise InvalidInput(f"give the {what} one way only (file, fd or environment)")
    data: bytes | None = None
    if file is not None:
        try:
            if file == "-":
                data = os.read(0, MAX_SECRET + 1)
            else:
                with open(file, "rb") as fh:
                    data = fh.read(MAX_SECRET + 1)  # bounded: /dev/zero is refused, not read forever
        except OSError as exc:
            raise InvalidInput(f"cannot read {what} file {file}: {exc.strerror}") from None
    elif fd is not None:
        try:
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = fh.read(MAX_SECRET + 1)
        except OSError as exc:
            raise InvalidInput(f"cannot read {what} from fd {fd}: {exc.strerror}") from None
    elif env is not None:
        value = os.environ.get(env)
        if value is None:
            raise InvalidInput(f"environment variable {env} is not set", hint=f"export {env}=... with the {what}")
        data = value.encode()
    if data is None:
        return None
    if len(data) > MAX_SECRET:
        raise InvalidInput(f"{what} is longer than {MAX_SECRET} bytes")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise InvalidInput(f"the {what} is empty")
    return data
