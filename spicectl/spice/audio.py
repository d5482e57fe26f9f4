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

from spicectl.errors import ProtocolError
from spicectl.spice import messages as M
from spicectl.spice import wire as W

MAX_CHANNELS = 8
MAX_RATE = 384_000
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
    limit: int = 1 << 30   # bytes kept at most
    volume: tuple[float, ...] = ()   # per channel, 0..1, as the guest's mixer last said (with PLAYBACK_CAP_VOLUME)
    muted: bool = False
    opus_ok: bool = False            # the client announced Opus (PLAYBACK_CAP_OPUS)
    mode: int = M.AUDIO_DATA_MODE_RAW
    received: int = 0                # audio bytes as they came over the wire (compressed, for Opus)
    _opus: OpusDecoder | None = None

    def handle(self, msg_type: int, body: bytes) -> bytes:
        """Follow one playback-channel message; a DATA message's samples are returned (b"" otherwise)."""
        if msg_type == M.MSG_PLAYBACK_START:
            start = W.PLAYBACK_START.unpack(body)
            if start["format"] != M.AUDIO_FMT_S16:
                raise ProtocolError(f"playback channel: sample format {start['format']} is not S16")
            if not (0 < start["channels"] <= MAX_CHANNELS and 0 < start["frequency"] <= MAX_RATE):
                raise ProtocolError(f"playback channel: {start['channels']} channels at {start['frequency']} Hz")
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
            self.mode = mode
        elif msg_type == M.MSG_PLAYBACK_DATA:
            if not self.started:
                raise ProtocolError("playback channel: audio data before START")
            samples = body[W.PLAYBACK_PACKET.size:]
            self.received += len(samples)
            if self.mode == M.AUDIO_DATA_MODE_OPUS:
                if self._opus is None:
                    self._opus = OpusDecoder(self.channels, self.rate)
                samples = self._opus.decode(samples)
            frame = self.channels * SAMPLE_BYTES
            if len(samples) % frame:
                raise ProtocolError(f"playback channel: {len(samples)} bytes is not whole {frame}-byte frames")
            if len(self.pcm) + len(samples) <= self.limit:
                self.pcm += samples
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


def pcm_from_wav(data: bytes, channels: int, rate: int) -> bytes:
    """A WAV file's samples as S16 PCM with `channels` and `rate` (what the guest's microphone asked for).

    Mono is spread to every channel, extra channels are dropped, and other rates are resampled
    linearly: a test tone or a recorded voice, not studio work.
    """
    import numpy as np

    try:
        with wave.open(io.BytesIO(data)) as wav:
            if wav.getsampwidth() != SAMPLE_BYTES:
                raise ProtocolError(f"the WAV file has {8 * wav.getsampwidth()}-bit samples; 16-bit PCM is needed")
            src_channels, src_rate = wav.getnchannels(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ProtocolError(f"not a PCM WAV file ({exc})") from None
    samples = np.frombuffer(frames, "<i2").reshape(-1, src_channels)
    if src_rate != rate and len(samples):
        positions = np.arange(0, len(samples) * rate // src_rate) * (src_rate / rate)
        samples = np.stack([np.interp(positions, np.arange(len(samples)), samples[:, c])
                            for c in range(src_channels)], axis=1).round().astype("<i2")
    out = np.zeros((len(samples), channels), "<i2")
    for c in range(channels):
        out[:, c] = samples[:, min(c, src_channels - 1)]
    return out.tobytes()
