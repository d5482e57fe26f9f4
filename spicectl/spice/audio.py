"""The playback channel's audio, kept as the PCM the guest played, and written as WAV.

A stream is MODE (raw PCM or Opus), START (channels, rate), DATA packets, STOP;
`Playback.handle` is fed the channel's messages. Raw is signed 16-bit
little-endian PCM (SPICE_AUDIO_DATA_MODE_RAW). Opus comes when the client
announces it and the guest's playback compression is on (QEMU's default): one
Opus packet per DATA, decoded with PyAV (FFmpeg's decoder, a well-kept
binding), and only then announced (`opus_available`).
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass, field

from spicectl.errors import InvalidInput, ProtocolError
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.budget import Budget

MAX_CHANNELS = 8
MAX_RATE = 384_000
MIN_RATE = 8_000       # telephone quality; lower is no sound card's, and a 1 Hz stream is a trick
OPUS_RATES = (8_000, 12_000, 16_000, 24_000, 48_000)  # the only rates an Opus decoder runs at
# spice-server's Opus (VBR) sends digital silence as ~6-byte packets (897 bytes for 3 s, measured on the
# desktop guest) and a tone as ~250-byte ones (38 KB): packets this large on average carry sound
OPUS_SOUND_BYTES = 40
SAMPLE_BYTES = 2  # S16


def opus_available() -> bool:
    """Whether Opus packets can be decoded here (PyAV with FFmpeg's Opus decoder)."""
    try:
        import av
    except ImportError:
        return False
    return "opus" in av.codecs_available


class OpusDecoder:
    """Opus packets to S16 PCM, `channels` interleaved at `rate` (SPICE sends 48 kHz)."""

    def __init__(self, channels: int, rate: int) -> None:
        import av

        self._av = av
        self._ctx = av.CodecContext.create("opus", "r")
        self._ctx.sample_rate = rate
        self._ctx.layout = "stereo" if channels == 2 else "mono" if channels == 1 else f"{channels}c"
        self.channels = channels

    def decode(self, packet: bytes) -> bytes:
        import numpy as np

        try:
            frames = self._ctx.decode(self._av.Packet(packet))
        except self._av.error.FFmpegError as exc:
            raise ProtocolError(f"playback channel: a bad Opus packet ({exc})") from None
        out = []
        for frame in frames:
            samples = frame.to_ndarray()  # planar float, one row per channel
            if samples.shape[0] != self.channels:
                raise ProtocolError(f"playback channel: Opus decoded to {samples.shape[0]} channels, "
                                    f"not {self.channels}")
            out.append(np.clip(np.round(samples.T * 32768), -32768, 32767).astype("<i2").tobytes())
        return b"".join(out)


@dataclass
class Playback:
    channels: int = 0
    rate: int = 0
    pcm: bytearray = field(default_factory=bytearray)
    started: bool = False
    seconds_kept: float | None = None  # a recording's length: samples past it are dropped; None keeps none
    budget: Budget = field(default_factory=Budget)
    volume: tuple[float, ...] = ()   # per channel, 0..1, as the guest's mixer last said (with PLAYBACK_CAP_VOLUME)
    muted: bool = False
    opus_ok: bool = False            # the client announced Opus (PLAYBACK_CAP_OPUS)
    mode: int = M.AUDIO_DATA_MODE_RAW
    received: int = 0                # audio bytes as they came over the wire (compressed, for Opus)
    packets: int = 0                 # DATA messages
    dropped: int = 0                 # PCM bytes past `seconds_kept`
    _opus: OpusDecoder | None = None

    def handle(self, msg_type: int, body: bytes) -> bytes:
        """Follow one playback-channel message; a DATA message's samples are returned (b"" otherwise)."""
        if msg_type == M.MSG_PLAYBACK_START:
            start = W.PLAYBACK_START.unpack(body)
            if start["format"] != M.AUDIO_FMT_S16:
                raise ProtocolError(f"playback channel: sample format {start['format']} is not S16")
            if not (0 < start["channels"] <= MAX_CHANNELS and MIN_RATE <= start["frequency"] <= MAX_RATE):
                raise ProtocolError(f"playback channel: {start['channels']} channels at {start['frequency']} Hz")
            if self.mode == M.AUDIO_DATA_MODE_OPUS and start["frequency"] not in OPUS_RATES:
                raise ProtocolError(f"playback channel: Opus at {start['frequency']} Hz")
            if self.started and (start["channels"], start["frequency"]) != (self.channels, self.rate):
                raise ProtocolError("playback channel: the audio format changed within one recording")
            self.channels, self.rate, self.started = start["channels"], start["frequency"], True
            self._opus = None
        elif msg_type == M.MSG_PLAYBACK_MODE:
            mode = W.PLAYBACK_MODE.unpack(body)["mode"]
            if mode == M.AUDIO_DATA_MODE_OPUS and not self.opus_ok:
                raise ProtocolError("playback channel: the server sent Opus, which this client did not announce")
            if mode not in (M.AUDIO_DATA_MODE_RAW, M.AUDIO_DATA_MODE_OPUS):
                raise ProtocolError(f"playback channel: the server chose audio mode {mode}, not raw PCM or Opus")
            if mode == M.AUDIO_DATA_MODE_OPUS and self.started and self.rate not in OPUS_RATES:
                raise ProtocolError(f"playback channel: Opus at {self.rate} Hz")
            self.mode = mode
        elif msg_type == M.MSG_PLAYBACK_DATA:
            if not self.started:
                raise ProtocolError("playback channel: audio data before START")
            samples = body[W.PLAYBACK_PACKET.size:]
            self.received += len(samples)
            self.packets += 1
            if self.mode == M.AUDIO_DATA_MODE_OPUS:
                if self._opus is None:
                    self._opus = OpusDecoder(self.channels, self.rate)
                samples = self._opus.decode(samples)
            frame = self.channels * SAMPLE_BYTES
            if len(samples) % frame:
                raise ProtocolError(f"playback channel: {len(samples)} bytes is not whole {frame}-byte frames")
            self._keep(samples)
            return samples
        elif msg_type == M.MSG_PLAYBACK_VOLUME:
            count = body[0] if body else 0
            if not 0 < count <= MAX_CHANNELS or len(body) < 1 + 2 * count:
                raise ProtocolError(f"playback channel: a volume message of {len(body)} bytes for {count} channels")
            self.volume = tuple(int.from_bytes(body[1 + 2 * i:3 + 2 * i], "little") / 0xFFFF for i in range(count))
        elif msg_type == M.MSG_PLAYBACK_MUTE:
            if not body:
                raise ProtocolError("playback channel: an empty mute message")
            self.muted = bool(body[0])
        # STOP, LATENCY: nothing to keep
        return b""

    def _keep(self, samples: bytes) -> None:
        """Keep what the recording's length holds. A server that sends audio faster than it plays has
        broken the protocol once it has sent four times the recording's length (and a second)."""
        if self.seconds_kept is None:
            return
        room = int(self.seconds_kept * self.rate) * self.channels * SAMPLE_BYTES - len(self.pcm)
        kept = samples[:max(0, room)]
        self.dropped += len(samples) - len(kept)
        if self.dropped > (3 * self.seconds_kept + 1) * self.rate * self.channels * SAMPLE_BYTES:
            raise ProtocolError(f"playback channel: the server sent {self.seconds + self.dropped_seconds:.1f}s of "
                                f"audio within a {self.seconds_kept:g}s recording")
        if kept:
            self.budget.set("audio", len(self.pcm) + len(kept), f"{self.seconds_kept:g}s of audio")
            self.pcm += kept

    def check_heard(self) -> None:
        """A recording of Opus that carried sound must not decode to silence: that is a wrong result,
        not a quiet guest (ProtocolError, saying what came)."""
        if self.mode != M.AUDIO_DATA_MODE_OPUS or not self.packets or not self.pcm:
            return
        import numpy as np

        if self.received / self.packets > OPUS_SOUND_BYTES and not np.frombuffer(self.pcm, np.uint8).any():
            raise ProtocolError(f"playback channel: {self.packets} Opus packets ({self.received} bytes, "
                                f"{self.received // self.packets} a packet: sound, not silence) decoded to silence",
                                hint="record the exact samples instead: --raw")

    @property
    def dropped_seconds(self) -> float:
        return self.dropped / (self.channels * SAMPLE_BYTES * self.rate) if self.started else 0.0

    @property
    def seconds(self) -> float:
        return len(self.pcm) / (self.channels * SAMPLE_BYTES * self.rate) if self.started else 0.0

    def wav(self) -> bytes:
        """The recording as a WAV file (an empty one, at 48 kHz stereo, if the guest played nothing)."""
        buf = io.BytesIO()
        with wave.open(buf, "wb") as out:
            out.setnchannels(self.channels or 2)
            out.setsampwidth(SAMPLE_BYTES)
            out.setframerate(self.rate or 48000)
            out.writeframes(bytes(self.pcm))
        return buf.getvalue()


@dataclass
class Wav:
    """A 16-bit PCM WAV file the user gave, checked: its channels, rate and samples."""

    channels: int
    rate: int
    frames: bytes

    @property
    def seconds(self) -> float:
        return len(self.frames) / (self.channels * SAMPLE_BYTES * self.rate)


def read_wav(data: bytes, what: str = "the WAV file") -> Wav:
    """A WAV file's header and samples, or InvalidInput saying what is wrong with it (a file the user
    passes is bad input, not a broken peer)."""
    try:
        with wave.open(io.BytesIO(data)) as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            if width != SAMPLE_BYTES:
                raise InvalidInput(f"{what} has {8 * width}-bit samples; 16-bit PCM is needed",
                                   hint="convert it, e.g. sox IN -b 16 -e signed-integer OUT.wav")
            if not 0 < channels <= MAX_CHANNELS or not MIN_RATE <= rate <= MAX_RATE:
                raise InvalidInput(f"{what} has {channels} channels at {rate} Hz; a sound card takes 1 to "
                                   f"{MAX_CHANNELS} channels at {MIN_RATE} to {MAX_RATE} Hz")
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise InvalidInput(f"{what} is not a 16-bit PCM WAV file ({exc})") from None
    if len(frames) % (channels * SAMPLE_BYTES):
        raise InvalidInput(f"{what} ends inside a frame")
    return Wav(channels, rate, frames)


def pcm_from_wav(wav: Wav, channels: int, rate: int) -> bytes:
    """A WAV file's samples as S16 PCM with `channels` and `rate` (what the guest's microphone asked for).

    Mono is spread to every channel, extra channels are dropped, and other rates are resampled
    linearly: a test tone or a recorded voice, not studio work.
    """
    import numpy as np

    samples = np.frombuffer(wav.frames, "<i2").reshape(-1, wav.channels)
    if wav.rate != rate and len(samples):
        positions = np.arange(0, len(samples) * rate // wav.rate) * (wav.rate / rate)
        samples = np.stack([np.interp(positions, np.arange(len(samples)), samples[:, c])
                            for c in range(wav.channels)], axis=1).round().astype("<i2")
    out = np.zeros((len(samples), channels), "<i2")
    for c in range(channels):
        out[:, c] = samples[:, min(c, wav.channels - 1)]
    return out.tobytes()
