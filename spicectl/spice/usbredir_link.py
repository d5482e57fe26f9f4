"""The usbredir channels: their hellos (`usb status`), and emulated devices plugged into them (`usb share`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from spicectl.errors import InvalidInput, NotFound, TimeoutExpired
from spicectl.spice import link, usbredir
from spicectl.spice import messages as M
from spicectl.spice.channel_io import read_by, run_for
from spicectl.spice.usbredir_host import AsyncDevice, Event, RedirHost

if TYPE_CHECKING:
    from spicectl.spice.channel_io import Session
    from spicectl.spice.transport import Connection
    from spicectl.spice.usb_storage import MassStorage


async def usbredir_hellos(session: Session, *, timeout: float = 15) -> dict[int, usbredir.Hello]:
    """Link each usbredir channel, exchange the usbredir hello, and return what each peer said."""
    from spicectl import __version__

    hellos: dict[int, usbredir.Hello] = {}
    for channel_id in sorted(i for t, i in session.channels_available if t == link.USBREDIR):
        conn = await session.open_channel(link.USBREDIR, channel_id)
        try:
            conn.send(M.MSGC_SPICEVMC_DATA, usbredir.hello(f"spicectl {__version__}"))
            await conn.flush()
            parser = usbredir.Parser()
            deadline = time.monotonic() + timeout
            while parser.peer is None:
                msg_type, body = await read_by(conn, deadline,
                                                f"usbredir channel {channel_id}: no hello within {timeout:g}s")
                if msg_type == M.MSG_SPICEVMC_DATA:
                    parser.receive_data(body)
            hellos[channel_id] = parser.peer
        finally:
            conn.close()
    return hellos


# spice-server takes a client's spicevmc data in messages of any size. QEMU handles a usbredir packet
# once its last byte arrives: a bulk answer split over two messages waited for a second pass of
# QEMU's loop (64 KiB messages cost a CD a fifth of its throughput), so answers up to 1 MiB go whole
CHUNK = 1024 * 1024
# how long a guest side that never acknowledges the barrier (see usbredir_host) is waited for
BARRIER_SECONDS = 2.0
RELEASE_SECONDS = 5.0


async def share_devices(session: Session, devices: list[MassStorage | AsyncDevice], *, seconds: float | None = None,
                        stop: asyncio.Event | None = None, attach_timeout: float | None = None,
                        on_event: Callable[[int, int, Event], None] = lambda _i, _c, _e: None) -> list[str]:
    """Plug each device into one of the guest's usbredir channels (in channel order) and answer the
    guest until `seconds` pass, `stop` is set, or the guest has let go of every device; then unplug
    what is left. `on_event(index, channel id, event)` hears each device's events. A device the guest has not
    configured within `attach_timeout` seconds ends it with TimeoutExpired. Returns how each ended."""
    from spicectl import __version__

    channels = sorted(i for t, i in session.channels_available if t == link.USBREDIR)
    if not channels:
        raise NotFound("the guest has no usbredir channels", hint="create it with --usb-redir N (spicectl vm create)")
    if len(devices) > len(channels):
        raise InvalidInput(f"{len(devices)} USB devices, but the guest has {len(channels)} usbredir channel"
                           f"{'' if len(channels) == 1 else 's'}: each device takes one",
                           hint="create the guest with more (--usb-redir N), or plug fewer devices")
    hosts = [RedirHost(d, f"spicectl {__version__}") for d in devices]
    conns = [await session.open_channel(link.USBREDIR, cid) for cid, _ in zip(channels, devices, strict=False)]
    stopping = asyncio.Event()

    async def flush(conn: Connection, host: RedirHost, index: int) -> None:
        # (events first: what the guest did is said even if the peer stops reading what we send)
        for event in host.events:
            on_event(index, channels[index], event)
        host.events.clear()
        out = host.take_output()
        for start in range(0, len(out), CHUNK):
            conn.send(M.MSGC_SPICEVMC_DATA, out[start:start + CHUNK])
        if out:
            await conn.flush()

    async def serve(index: int) -> None:
        conn, host = conns[index], hosts[index]
        loop = asyncio.get_running_loop()
        # set when the pump or an asynchronous device (a host device) changed something the control
        # loop below acts on
        changed = asyncio.Event()
        _wire_async(devices[index], host, loop, changed)
        await flush(conn, host, index)

        async def pump() -> None:
            # the guest's packets are answered here, in the task that read them: one loop pass per
            # packet, not a task and a wait per packet, is what keeps a CD's round trips short
            while host.state not in ("released", "rejected"):
                msg_type, body = await conn.read()
                if msg_type != M.MSG_SPICEVMC_DATA:
                    continue
                before = (host.state, host.attached)
                host.receive(body)
                await flush(conn, host, index)
                if (host.state, host.attached) != before:
                    changed.set()

        pumping = asyncio.ensure_future(pump())
        barrier_at = release_by = None
        attach_by = loop.time() + attach_timeout if attach_timeout is not None else None
        try:
            while host.state not in ("released", "rejected") and not pumping.done():
                if stopping.is_set() and host.state in ("connected", "barrier"):
                    host.release("stopped")
                if host.state == "barrier":
                    barrier_at = barrier_at or loop.time() + BARRIER_SECONDS
                    if loop.time() >= barrier_at:
                        host.barrier_expired()
                if host.state == "releasing":
                    release_by = release_by or loop.time() + RELEASE_SECONDS
                    if loop.time() >= release_by:
                        host.release_expired()
                waiting_attach = host.state == "connected" and not host.attached
                if attach_by is not None and waiting_attach and loop.time() >= attach_by:
                    raise TimeoutExpired(f"the guest did not take USB device {index + 1} within "
                                         f"{attach_timeout:g}s",
                                         hint="is a USB driver running in the guest? (a booted OS, not firmware)")
                await flush(conn, host, index)
                if host.state in ("released", "rejected"):
                    break
                deadlines = [t for t in (barrier_at if host.state == "barrier" else None,
                                         release_by if host.state == "releasing" else None,
                                         attach_by if waiting_attach else None) if t is not None]
                wait = max(0.0, min(deadlines) - loop.time()) if deadlines else None
                changed.clear()
                stopped = asyncio.ensure_future(stopping.wait())
                woken = asyncio.ensure_future(changed.wait())
                try:
                    await asyncio.wait({pumping, stopped, woken}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopped.cancel()
                    woken.cancel()
            if pumping.done():
                pumping.result()   # the channel's errors end the share
        finally:
            if not pumping.done():
                pumping.cancel()
            await asyncio.gather(pumping, return_exceptions=True)

    async def forever() -> None:
        await asyncio.Event().wait()

    async def until_stopped() -> None:
        await run_for(forever(), seconds, stop)
        stopping.set()

    serving = [asyncio.ensure_future(serve(i)) for i in range(len(hosts))]
    served: asyncio.Future = asyncio.ensure_future(asyncio.gather(*serving))
    watcher: asyncio.Future = asyncio.ensure_future(until_stopped())
    try:
        done, _ = await asyncio.wait({served, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if served not in done:
            # stopped: each device is unplugged, its acknowledgement awaited for a while; a guest side
            # that does not even read what we send cannot hold us longer than that
            done, _ = await asyncio.wait({served}, timeout=RELEASE_SECONDS + 1)
        if served in done:
            served.result()
    finally:
        stopping.set()
        for t in (watcher, served, *serving):
            t.cancel()
        await asyncio.gather(watcher, served, *serving, return_exceptions=True)
        for conn in conns:
            conn.close()
        for device in devices:
            device.close()
    return [h.state for h in hosts]


def _wire_async(device, host: RedirHost, loop: asyncio.AbstractEventLoop, changed: asyncio.Event) -> None:
    """An asynchronous device answers from its own threads: its answers reach the host on the loop."""
    if not getattr(device, "asynchronous", False):
        return

    def completed(packet_id: int, status: int, data: bytes) -> None:
        host.complete(packet_id, status, data)
        changed.set()

    def interrupt(endpoint: int, status: int, data: bytes) -> None:
        host.interrupt_data(endpoint, status, data)
        changed.set()

    device.on_complete = lambda *a: loop.call_soon_threadsafe(completed, *a)
    device.on_interrupt = lambda *a: loop.call_soon_threadsafe(interrupt, *a)
