"""SASL for the private libvirt's SPICE servers: a Cyrus SASL configuration of spicectl's and the
sasldb of users it manages, with Debian's sasl2-bin (saslpasswd2, sasldblistusers2).

libvirt's qemu.conf turns it on (`spice_sasl = 1`) and names the configuration's folder
(`spice_sasl_dir`), which libvirt hands QEMU as SASL_CONF_PATH; QEMU's SASL application is "qemu",
so the file is qemu.conf there. The mechanism is SCRAM-SHA-256, as QEMU's documentation recommends.
Users are stored in the database as NAME@REALM, the realm being this host's name (saslpasswd2's
default, and what spice-server looks a user up under).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from spicectl.errors import Conflict, EnvironmentProblem, InvalidInput, NotFound
from spicectl.pki import store

DIRECTORY = "sasl"            # under the state dir
CONFIG = "qemu.conf"          # QEMU's SASL application name, plus .conf
DATABASE = "passwd.db"
APPLICATION = "qemu"
MECHANISM = "scram-sha-256"
MAX_NAME = 64
# on the host of a system or remote libvirt (host setup --sasl --apply): spicectl's configuration and
# sasldb, readable by QEMU's group
SYSTEM_DIR = "/etc/spicectl/sasl"


@dataclass
class SaslSetup:
    directory: Path
    config: Path
    database: Path
    wrote_config: bool


def sasl_dir(state_dir: Path) -> Path:
    return state_dir / DIRECTORY


def enabled(state_dir: Path) -> bool:
    return (sasl_dir(state_dir) / CONFIG).is_file()


def config_text(database: Path) -> str:
    return (f"# written by spicectl (host setup --sasl): SASL logins for the private libvirt's SPICE servers\n"
            f"mech_list: {MECHANISM}\nsasldb_path: {database}\n")


def _tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None:
        raise EnvironmentProblem(f"{name} is not installed", hint="apt-get install sasl2-bin libsasl2-modules")
    return path


def enable(state_dir: Path) -> SaslSetup:
    """The configuration folder (0700) and file; the database is made by the first `user add`."""
    directory = store.ensure_dir(sasl_dir(state_dir))
    database = directory / DATABASE
    config = directory / CONFIG
    text = config_text(database)
    wrote = not config.exists() or config.read_text() != text
    if wrote:
        store.atomic_write(config, text.encode(), 0o600)
    return SaslSetup(directory, config, database, wrote)


def disable(state_dir: Path) -> bool:
    """Turn SASL off (the users are kept for a later --sasl); whether it was on."""
    config = sasl_dir(state_dir) / CONFIG
    if not config.exists():
        return False
    config.unlink()
    return True


def check_name(name: str) -> None:
    if not name or len(name) > MAX_NAME or not all(c.isalnum() or c in "._-" for c in name) or name[0] in ".-":
        raise InvalidInput(f"SASL user name {name!r}: letters, digits, '.', '_' and '-', at most {MAX_NAME}")


def _database(state_dir: Path) -> Path:
    if not enabled(state_dir):
        raise Conflict("SASL is off for the private libvirt", hint="turn it on: spicectl host setup --sasl")
    return sasl_dir(state_dir) / DATABASE


def check_password(password: bytes) -> None:
    if not password or b"\n" in password or b"\0" in password:
        raise InvalidInput("a SASL password must be one line, not empty")


def add_user(state_dir: Path, name: str, password: bytes, *, replace: bool = False) -> bool:
    """Add user `name` (or set their password with `replace`); whether they existed."""
    check_name(name)
    check_password(password)
    existed = name in list_users(state_dir)
    if existed and not replace:
        raise Conflict(f"SASL user {name!r} exists", hint="give --replace to set a new password")
    database = _database(state_dir)
    # -p: the password from stdin, never argv; the database is created 0600 under our umask
    old = os.umask(0o077)
    try:
        run = subprocess.run([_tool("saslpasswd2"), "-p", "-a", APPLICATION, "-f", str(database), "-c", name],
                             input=password, capture_output=True, timeout=30)
    finally:
        os.umask(old)
    if run.returncode:
        raise EnvironmentProblem(f"saslpasswd2 failed: {run.stderr.decode(errors='replace').strip()}")
    os.chmod(database, 0o600)
    return existed


def delete_user(state_dir: Path, name: str) -> None:
    check_name(name)
    if name not in list_users(state_dir):
        raise NotFound(f"no SASL user {name!r}", hint="see: spicectl sasl user list")
    run = subprocess.run([_tool("saslpasswd2"), "-a", APPLICATION, "-f", str(_database(state_dir)), "-d", name],
                         capture_output=True, timeout=30)
    if run.returncode:
        raise EnvironmentProblem(f"saslpasswd2 failed: {run.stderr.decode(errors='replace').strip()}")


def list_users(state_dir: Path) -> list[str]:
    database = _database(state_dir)
    if not database.exists():
        return []
    run = subprocess.run([_tool("sasldblistusers2"), "-f", str(database)], capture_output=True, text=True,
                         timeout=30)
    if run.returncode:
        raise EnvironmentProblem(f"sasldblistusers2 failed: {run.stderr.strip()}")
    # "alice@host: userPassword" (one line per secret the user has)
    return sorted({line.split("@", 1)[0] for line in run.stdout.splitlines() if "@" in line})


def manual_steps(conf_dir: str = "/etc/sasl2") -> list[str]:
    """What a system (or remote) libvirt needs for SPICE SASL logins, done by hand on its host."""
    return [
        f"write {conf_dir}/{CONFIG}: 'mech_list: {MECHANISM}' and 'sasldb_path: /etc/qemu/passwd.db' "
        "(apt-get install sasl2-bin libsasl2-modules)",
        f"add users: saslpasswd2 -a {APPLICATION} -f /etc/qemu/passwd.db NAME; make the database readable by "
        "the QEMU user only",
        f"in /etc/libvirt/qemu.conf: spice_sasl = 1 and spice_sasl_dir = \"{conf_dir}\", then restart libvirtd",
        "define guests without a SPICE password (vm create --sasl), and log in with --sasl-user NAME",
    ]
