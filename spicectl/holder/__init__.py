"""The session holder: one background process per user and state dir that keeps libvirt
connections and SPICE sessions warm for repeated commands, in the spirit of OpenSSH's
ControlMaster/ControlPersist.

The first served command starts it; later ones hand it their argv, environment and working
directory over a UNIX socket in the state dir (0600) and print what it answers. It runs one
command at a time, exits after --persist seconds without one, and leaves the private libvirt
to any other command that needs it (that command asks it to exit first).
"""

from __future__ import annotations

SOCKET = "holder.sock"
LOCK = "holder.lock"
LOG = "holder.log"
DEFAULT_PERSIST = 60.0   # seconds without a command before the holder exits
PERSIST_ENV = "SPICECTL_PERSIST"

# commands a holder runs: quick, repeated in scripts, and needing nothing from the terminal
SERVED = frozenset({("vm", "list"), ("vm", "show"), ("ticket",), ("screenshot",), ("send-keys",), ("type",),
                    ("mouse",), ("wait-screen",), ("record-video",)})
# served only with one of these options: record-video --background starts a recording on the holder's
# session and returns; --stop ends it (a recording in the foreground runs until Ctrl-C, in the terminal)
SERVED_ONLY_WITH = {("record-video",): frozenset({"--background", "--stop"})}
READ_ONLY = frozenset({("vm", "list"), ("vm", "show"), ("screenshot",), ("wait-screen",)})
