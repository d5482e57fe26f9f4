"""The guest's sound on this host's default output, for `spicectl view`.

PortAudio (through the sounddevice binding; Debian's libportaudio2) plays to the host's default
device: PipeWire or PulseAudio through ALSA on a desktop, or whatever ALSA's configuration names.
Samples go into a bounded buffer that PortAudio's callback drains, so a slow device never stalls
the SPICE channels: past MAX_BACKLOG_SECONDS the oldest samples are dropped, and an empty buffer
plays silence. The guest's mixer (volume, mute) scales what is played.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import numpy as np

from spicectl.errors import EnvironmentProblem

MAX_BACKLOG_SECONDS = 0.5
BLOCK_FRAMES = 480   # 10 ms at 48 kHz, PortAudio's unit of work


def speaker_problem() -> str | None:
    """Why sound cannot be played here, or None if it can."""
    try:
        import sounddevice  # noqa: F401  (loads PortAudio, so a missing library shows here)
    except (ImportError, OSError) as exc:
        return f"no PortAudio ({exc}); Debian: apt-get install libportaudio2"
    return None


class Speaker:
    """One open output stream of `channels` S16 channels at `rate` Hz."""

    def __init__(self, channels: int, rate: int, device: str | None = None) -> None:
        import sounddevice as sd

        self.channels, self.rate = channels, rate
        self._frame = 2 * channels
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._gain = np.ones(channels)
        self.frames_played = 0
        self.frames_dropped = 0
        try:
            self._stream = sd.RawOutputStream(samplerate=rate, channels=channels, dtype="int16", device=device,
                                              blocksize=BLOCK_FRAMES, callback=self._fill)
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise EnvironmentProblem(f"cannot play {channels} channels at {rate} Hz here: {exc}") from None

    def set_mixer(self, volume: tuple[float, ...], muted: bool) -> None:
        gain = np.zeros(self.channels) if muted else np.ones(self.channels)
        if volume and not muted:
            gain[:] = [volume[min(i, len(volume) - 1)] for i in range(self.channels)]
        self._gain = gain

    def write(self, pcm: bytes) -> None:
        if not (self._gain == 1).all():
            samples = np.frombuffer(pcm, "<i2").reshape(-1, self.channels) * self._gain
            pcm = samples.round().astype("<i2").tobytes()
        with self._lock:
            self._buffer += pcm
            excess = len(self._buffer) - int(MAX_BACKLOG_SECONDS * self.rate) * self._frame
            if excess > 0:
                excess += -excess % self._frame
                del self._buffer[:excess]
                self.frames_dropped += excess // self._frame

    def _fill(self, out, frames: int, _time, _status) -> None:  # PortAudio's thread
        want = frames * self._frame
        with self._lock:
            have = min(want, len(self._buffer))
            out[:have] = self._buffer[:have]
            del self._buffer[:have]
        out[have:want] = bytes(want - have)
        self.frames_played += have // self._frame

    def close(self) -> None:
        if not self._stream.closed:
            self._stream.stop()
            self._stream.close()


LIKELY_FORMAT = (2, 48000)   # channels and rate QEMU's SPICE audio plays at, until the guest's START says


async def play_guest_sound(client, device: str | None, on_note: Callable[[str], None],
                           on_played: Callable[[float], None] = lambda _s: None) -> None:
    """The guest's playback channel on this host's output, following its mixer, until cancelled;
    `on_note` hears why there is no sound, `on_played` the seconds handed to the output."""
    from spicectl.spice import link
    from spicectl.spice import messages as M
    from spicectl.spice.audio import Playback, opus_available

    if (link.PLAYBACK, 0) not in client.channels_available:
        on_note("no sound: the guest has no sound card with SPICE audio")
        return
    problem = speaker_problem()
    if problem is not None:
        on_note(f"no sound: {problem}")
        return
    playback = Playback(opus_ok=opus_available())  # keeps nothing; Opus where the guest compresses playback

    async def open_speaker(channels: int, rate: int) -> Speaker | None:
        try:
            return await asyncio.to_thread(Speaker, channels, rate, device)
        except EnvironmentProblem as exc:
            on_note(f"no sound: {exc.message}")
            return None

    # opened before the guest plays, and kept open between sounds: a sound server can take a second or
    # more to start a new stream, and a desktop starts and stops playback with every sound it makes
    speaker = await open_speaker(*LIKELY_FORMAT)
    if speaker is None:
        return
    try:
        from spicectl.spice.audio_link import playback_messages

        async for msg_type, body in playback_messages(client, playback):
            samples = playback.handle(msg_type, body)
            if msg_type == M.MSG_PLAYBACK_START and (speaker.channels, speaker.rate) != (playback.channels,
                                                                                        playback.rate):
                speaker.close()
                speaker = await open_speaker(playback.channels, playback.rate)
                if speaker is None:
                    return
            if msg_type in (M.MSG_PLAYBACK_START, M.MSG_PLAYBACK_VOLUME, M.MSG_PLAYBACK_MUTE):
                speaker.set_mixer(playback.volume, playback.muted)
            elif samples:
                speaker.write(samples)
                on_played(len(samples) / (2 * playback.channels * playback.rate))
    finally:
        if speaker is not None:
            speaker.close()
