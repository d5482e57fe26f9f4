"""The console script: hand a served command to the session holder, else run the CLI here.

Only the standard-library holder client is imported before it knows which: a served command
costs an interpreter start and one round trip to the holder.
"""

from __future__ import annotations

import sys

from spicectl.holder.client import forward


def main() -> None:
    code = forward(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from spicectl.cli.main import main as cli_main

    cli_main()
