"""The inputs channel: keys (set 1 scancodes) and the pointer, in the server's mouse mode (client
mode, absolute, once the server says it switched; else relative motion), with no more motion in
flight than two of the server's acknowledgement bunches, as spice-gtk keeps. `Client` owns one
(`client.inputs`); the main channel tells it the mouse mode."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from spicectl.errors import ProtocolError
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.keys import break_code, make_code, parse_combo, text_to_strokes

if TYPE_CHECKING:
    from spicectl.spice.channel_io import Session
    from spicectl.spice.transport import Connection

INPUTS_CAP_KEY_SCANCODE = 0
MOUSE_MODE_WAIT = 2.0      # for the server's answer to a client-mode request (a refusal is silence)
MOTION_WINDOW = 2 * M.INPUTS_MOTION_ACK_BUNCH   # unacknowledged motions in flight, as spice-gtk keeps
MOTION_ACK_WAIT = 5.0


class InputsLink:
    def __init__(self, session: Session) -> None:
        self._session = session
        self.channel: Connection | None = None   # once linked
        self.mouse_modes = 0
        self.mouse_mode = M.MOUSE_MODE_SERVER
        self._mouse_mode_told = asyncio.Event()
        self._motion_acked = asyncio.Event()
        self._motion_unacked = 0
        self._buttons = 0

    def mouse_mode_is(self, supported: int, current: int) -> None:
        """What the main channel says of the mouse mode (its INIT, or a MOUSE_MODE)."""
        self.mouse_modes, self.mouse_mode = supported, current
        self._mouse_mode_told.set()

    def wake(self) -> None:
        """The session failed: whoever waits on the pointer finds out now."""
        self._mouse_mode_told.set()
        self._motion_acked.set()

    async def run(self, ready: asyncio.Event) -> None:
        """The channel's messages, until it closes: INIT (then `ready`), and motion acknowledgements."""
        assert self.channel is not None
        while True:
            msg_type, _body = await self.channel.read()
            if msg_type == M.MSG_INPUTS_INIT:
                ready.set()
            elif msg_type == M.MSG_INPUTS_MOUSE_MOTION_ACK:
                self._motion_unacked = max(0, self._motion_unacked - M.INPUTS_MOTION_ACK_BUNCH)
                self._motion_acked.set()

    def _need_inputs(self) -> Connection:
        self._session.raise_if_failed()
        if self.channel is None:
            raise ProtocolError("the guest has no inputs channel")
        return self.channel

    async def key_down(self, scancode: int) -> None:
        ch = self._need_inputs()
        ch.send(M.MSGC_INPUTS_KEY_DOWN, W.KEY_CODE.pack(code=make_code(scancode)))
        await ch.flush()

    async def key_up(self, scancode: int) -> None:
        ch = self._need_inputs()
        ch.send(M.MSGC_INPUTS_KEY_UP, W.KEY_CODE.pack(code=break_code(scancode)))
        await ch.flush()

    async def send_keys(self, *combos: str, hold: float = 0.05, gap: float = 0.05) -> None:
        """Press each combo ('esc', 'ctrl-alt-delete'): keys down in order, up in reverse."""
        for i, combo in enumerate(combos):
            if i:
                await asyncio.sleep(gap)   # between combinations only: nothing follows the last
            codes = parse_combo(combo)
            for code in codes:
                await self.key_down(code)
            await asyncio.sleep(hold)
            for code in reversed(codes):
                await self.key_up(code)

    async def type_text(self, text: str, *, delay: float = 0.02) -> None:
        shift = 0x2A
        for i, (scancode, shifted) in enumerate(text_to_strokes(text)):
            if i:
                await asyncio.sleep(delay)
            if shifted:
                await self.key_down(shift)
            await self.key_down(scancode)
            await asyncio.sleep(delay)
            await self.key_up(scancode)
            if shifted:
                await self.key_up(shift)

    async def mouse_move(self, x: int, y: int) -> None:
        """Absolute in client mouse mode (a tablet or agent); relative steps from (0,0) otherwise."""
        ch = self._need_inputs()
        wants_client_mode = self.mouse_modes & M.MOUSE_MODE_CLIENT and self.mouse_mode != M.MOUSE_MODE_CLIENT
        main = self._session.main
        if main is not None and wants_client_mode:
            self._mouse_mode_told.clear()
            main.send(M.MSGC_MAIN_MOUSE_MODE_REQUEST, W.MOUSE_MODE_REQUEST.pack(mode=M.MOUSE_MODE_CLIENT))
            await main.flush()
            try:   # the server's MOUSE_MODE says whether it switched; one that cannot stays silent
                await asyncio.wait_for(self._mouse_mode_told.wait(), MOUSE_MODE_WAIT)
            except TimeoutError:
                pass
            self._session.raise_if_failed()
        if self.mouse_mode == M.MOUSE_MODE_CLIENT:
            await self._motion_room(ch)
            ch.send(M.MSGC_INPUTS_MOUSE_POSITION,
                    W.MOUSE_POSITION.pack(x=x, y=y, buttons_state=self._buttons, display_id=0))
            self._motion_unacked += 1
        else:
            # server mode: push to the top-left corner, then move by the offset
            for dx, dy in ((-4096, -4096), (x, y)):
                await self._motion_room(ch)
                ch.send(M.MSGC_INPUTS_MOUSE_MOTION, W.MOUSE_MOTION.pack(dx=dx, dy=dy, buttons_state=self._buttons))
                self._motion_unacked += 1
        await ch.flush()

    async def _motion_room(self, ch: Connection) -> None:
        """Wait until the server has acknowledged enough motion to take one more (a server that stops
        acknowledging is a protocol error, not a pile of queued motion)."""
        while self._motion_unacked >= MOTION_WINDOW:
            await ch.flush()
            self._motion_acked.clear()
            try:
                await asyncio.wait_for(self._motion_acked.wait(), MOTION_ACK_WAIT)
            except TimeoutError:
                raise ProtocolError(f"the server acknowledged none of {self._motion_unacked} pointer motions "
                                    f"in {MOTION_ACK_WAIT:g}s") from None
            self._session.raise_if_failed()

    async def click(self, button: str = "left", *, hold: float = 0.05) -> None:
        await self.mouse_button(button, True)
        await asyncio.sleep(hold)
        await self.mouse_button(button, False)

    async def mouse_button(self, button: str, down: bool) -> None:
        """Press or release 'left', 'middle', 'right', or the wheel's 'up'/'down'."""
        ch = self._need_inputs()
        code = {"left": M.BUTTON_LEFT, "middle": M.BUTTON_MIDDLE, "right": M.BUTTON_RIGHT,
                "up": M.BUTTON_UP, "down": M.BUTTON_DOWN}[button]
        if down:
            self._buttons |= M.BUTTON_MASK.get(code, 0)
        else:
            self._buttons &= ~M.BUTTON_MASK.get(code, 0)
        ch.send(M.MSGC_INPUTS_MOUSE_PRESS if down else M.MSGC_INPUTS_MOUSE_RELEASE,
                W.MOUSE_BUTTON.pack(button=code, buttons_state=self._buttons))
        await ch.flush()
