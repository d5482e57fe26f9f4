"""python -m spicectl.holder STATE_DIR PERSIST_SECONDS (started by spicectl.holder.client)."""

import sys
from pathlib import Path

from spicectl.holder.server import serve

if __name__ == "__main__":
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1)   # a stuck holder shows where, in its log
    sys.exit(serve(Path(sys.argv[1]), float(sys.argv[2])))
