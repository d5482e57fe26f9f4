"""remote-viewer connection files (.vv): the [virt-viewer] keys of virt-viewer-file.c."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SECURE_CHANNELS = "main;display;inputs;cursor;playback;record;smartcard;usbredir"


@dataclass
class VVFile:
    host: str
    password: str
    tls_port: int | None = None
    port: int | None = None
    ca_pem: str | None = None
    host_subject: str | None = None
    title: str | None = None
    proxy: str | None = None
    secure_channels: str | None = SECURE_CHANNELS
    delete_this_file: bool = True
    enable_usbredir: bool = False
    username: str | None = None       # a SASL login's user (the password: `password`, or asked for)

    def render(self) -> str:
        lines = ["[virt-viewer]", "type=spice", f"host={self.host}"]
        if self.port:
            lines.append(f"port={self.port}")
        if self.tls_port:
            lines.append(f"tls-port={self.tls_port}")
        if self.username:
            lines.append(f"username={self.username}")
        if self.password or not self.username:   # (no password with a user name: remote-viewer asks)
            lines.append(f"password={self.password}")
        if self.ca_pem:
            # virt-viewer reads the CA inline, with newlines written as \n
            lines.append("ca=" + self.ca_pem.strip().replace("\n", "\\n"))
        if self.host_subject:
            lines.append(f"host-subject={self.host_subject}")
        if self.tls_port and self.secure_channels:
            lines.append(f"secure-channels={self.secure_channels}")
        if self.proxy:
            lines.append(f"proxy={self.proxy}")
        if self.title:
            lines.append(f"title={self.title}")
        lines += [
            f"delete-this-file={int(self.delete_this_file)}",
            "release-cursor=shift+f12",
            "secure-attention=ctrl+alt+end",
            "toggle-fullscreen=shift+f11",
            f"enable-usbredir={int(self.enable_usbredir)}",
            "enable-usb-autoshare=0",
        ]
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> None:
        from spicectl.pki.store import atomic_write

        atomic_write(path, self.render().encode(), 0o600)


def parse(text: str) -> dict[str, str]:
    """The keys of a .vv file (for tests and `connect --vv` round trips)."""
    import configparser

    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(text)
    return dict(cp["virt-viewer"])
