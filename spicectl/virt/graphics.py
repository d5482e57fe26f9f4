"""Where a guest's SPICE server listens, read from its live XML: a leaf that lifecycle (`vm list`,
waits), tickets (which update that element) and access (what a client needs) all read it through.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

# libvirt's virDomainState values that spicectl acts on
DOMAIN_RUNNING = 1
DOMAIN_STATES = {0: "no-state", DOMAIN_RUNNING: "running", 2: "blocked", 3: "paused", 4: "shutting-down",
                 5: "shut-off", 6: "crashed", 7: "suspended"}
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # listening everywhere: reach it on loopback from here
LOOPBACKS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class SpiceListen:
    """The address and ports a running guest's SPICE server listens on."""

    listen: str
    port: int | None
    tls_port: int | None

    @property
    def connect_host(self) -> str:
        return WILDCARDS.get(self.listen, self.listen)


GRAPHICS = "devices/graphics[@type='spice']"


def live_graphics(dom) -> etree._Element | None:
    """The live SPICE <graphics> element of a domain, or None if it has no SPICE display."""
    return etree.fromstring(dom.XMLDesc(0).encode()).find(GRAPHICS)


def read_listen(graphics: etree._Element) -> SpiceListen:
    listen = graphics.find("listen")
    address = (listen.get("address") if listen is not None else None) or graphics.get("listen") or "127.0.0.1"

    def port(attr: str) -> int | None:
        value = graphics.get(attr)
        return int(value) if value and int(value) > 0 else None

    return SpiceListen(address, port("port"), port("tlsPort"))


def spice_listen(dom) -> SpiceListen | None:
    graphics = live_graphics(dom)
    return None if graphics is None else read_listen(graphics)
