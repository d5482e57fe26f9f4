"""One-time SPICE tickets: a fresh random password, valid for a short time, set live.

The ticket goes to QEMU over libvirt's monitor connection (never argv) and
only into the live definition (VIR_DOMAIN_AFFECT_LIVE), so it is never
written to the persistent XML.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from lxml import etree

from spicectl.errors import Conflict, InvalidInput
from spicectl.virt.connection import libvirt_error
from spicectl.virt.graphics import live_graphics

MAX_TTL = 24 * 3600


class SaslOnly(Conflict):
    """The guest's SPICE server has SASL on: it takes no ticket."""


@dataclass
class Ticket:
    password: str
    valid_to: dt.datetime

    def as_dict(self) -> dict:
        return {"ticket": self.password, "valid_to": self.valid_to.strftime("%Y-%m-%dT%H:%M:%SZ")}


def set_ticket(dom, ttl: int = 30) -> Ticket:
    import libvirt

    if not 1 <= ttl <= MAX_TTL:
        raise InvalidInput(f"--ttl {ttl} is out of range (1-{MAX_TTL} seconds)")
    if not dom.isActive():
        raise Conflict(f"{dom.name()} is not running; tickets are set on a running guest",
                       hint=f"spicectl vm start {dom.name()}")
    graphics = live_graphics(dom)
    if graphics is None:
        raise Conflict(f"{dom.name()} has no SPICE display")
    password = secrets.token_urlsafe(24)
    valid_to = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl)).replace(microsecond=0)
    # libvirt rejects the update if passwdValidTo appears twice; lxml keeps one attribute per name.
    graphics.attrib.pop("passwdValidTo", None)
    graphics.set("passwd", password)
    graphics.set("passwdValidTo", valid_to.strftime("%Y-%m-%dT%H:%M:%S"))
    try:
        dom.updateDeviceFlags(etree.tostring(graphics, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as exc:
        if "Could not set password" in str(exc):   # spice-server with SASL on takes no ticket
            raise SaslOnly(f"{dom.name()} takes SASL logins, not tickets",
                           hint="log in with --sasl-user NAME (spicectl sasl user list)") from None
        raise libvirt_error(exc, f"setting a ticket on {dom.name()}") from None
    return Ticket(password, valid_to)
