"""The playback and record channels at work: the guest's sound as it plays (or recorded for a while),
and a WAV file fed to the guest's microphone at the pace it plays."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from spicectl.errors import ProtocolError
from spicectl.spice import link
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.channel_io import read_by, run_for

if TYPE_CHECKING:
    from spicectl.spice.audio import Playback, Wav
    from spicectl.spice.channel_io import Session


async def playback_messages(session: Session, playback: Playback) -> AsyncIterator[tuple[int, bytes]]:
    """The playback channel's messages as they come, volume and mute included, until the caller stops;
    Opus is announced if `playback` takes it (its `opus_ok`)."""
    if (link.PLAYBACK, 0) not in session.channels_available:
        raise ProtocolError("the guest has no playback channel (no sound card with SPICE audio)")
    caps = (M.PLAYBACK_CAP_VOLUME,) + ((M.PLAYBACK_CAP_OPUS,) if playback.opus_ok else ())
    channel = await session.open_channel(link.PLAYBACK, 0, caps=caps)
    try:
        while True:
            yield await channel.read()
    finally:
        channel.close()

async def record_playback(session: Session, seconds: float, *, opus: bool = True) -> Playback:
    """What the guest plays during the next `seconds`, as PCM: sent raw, or as Opus when `opus`, this
    host decodes it, and the guest's playback compression is on (`Playback.mode` says which came)."""
    from spicectl.spice.audio import Playback, opus_available

    playback = Playback(opus_ok=opus and opus_available(), seconds_kept=seconds, budget=session.budget)

    async def collect() -> None:
        async for msg_type, body in playback_messages(session, playback):
            playback.handle(msg_type, body)

    await run_for(collect(), seconds)
    playback.check_heard()
    return playback

async def play_to_microphone(session: Session, wav: Wav, *, timeout: float = 30,
                             chunk_ms: int = 20) -> float:
    """Feed a WAV file to the guest's microphone once the guest records; the seconds sent.

    The server asks for a format (START) when the guest opens its capture device; the samples go out
    at the pace they play, as a microphone's would (spice-server keeps only a short buffer).
    """
    from spicectl.spice.audio import MIN_RATE, SAMPLE_BYTES, pcm_from_wav

    if (link.RECORD, 0) not in session.channels_available:
        raise ProtocolError("the guest has no record channel (no sound card with SPICE audio)")
    channel = await session.open_channel(link.RECORD, 0)
    try:
        deadline = time.monotonic() + timeout
        while True:
            msg_type, body = await read_by(channel, deadline,
                                            f"the guest did not start recording within {timeout:g}s")
            if msg_type == M.MSG_RECORD_START:
                start = W.RECORD_START.unpack(body)
                break
        if start["format"] != M.AUDIO_FMT_S16:
            raise ProtocolError(f"record channel: sample format {start['format']} is not S16")
        channels, rate = start["channels"], start["frequency"]
        if not (0 < channels <= 8 and MIN_RATE <= rate <= 384_000):
            raise ProtocolError(f"record channel: {channels} channels at {rate} Hz")
        pcm = pcm_from_wav(wav, channels, rate)
        step = channels * SAMPLE_BYTES * rate * chunk_ms // 1000
        began = time.monotonic()
        channel.send(M.MSGC_RECORD_MODE, W.RECORD_MODE.pack(time=0, mode=M.AUDIO_DATA_MODE_RAW))
        channel.send(M.MSGC_RECORD_START_MARK, W.RECORD_START_MARK.pack(time=0))
        for n, pos in enumerate(range(0, len(pcm), step)):
            stamp = n * chunk_ms
            channel.send(M.MSGC_RECORD_DATA, W.RECORD_PACKET.pack(time=stamp & 0xFFFFFFFF) + pcm[pos:pos + step])
            await channel.flush()
            ahead = began + (stamp + chunk_ms) / 1000 - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        return len(pcm) / (channels * SAMPLE_BYTES * rate)
    finally:
        channel.close()
