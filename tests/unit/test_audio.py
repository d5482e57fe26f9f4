"""Audio over SPICE: the playback channel's PCM kept as WAV, and a WAV made into what the microphone asked for."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from spicectl.errors import InvalidInput, ProtocolError
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.audio import Playback, pcm_from_wav, read_wav
from spicectl.spice.budget import Budget


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(samples.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def test_playback_keeps_the_pcm_and_writes_it_as_wav():
    p = Playback(seconds_kept=1.0)
    p.handle(M.MSG_PLAYBACK_MODE, W.PLAYBACK_MODE.pack(time=0, mode=M.AUDIO_DATA_MODE_RAW))
    p.handle(M.MSG_PLAYBACK_START, W.PLAYBACK_START.pack(channels=2, format=M.AUDIO_FMT_S16, frequency=48000,
                                                         time=0))
    p.handle(M.MSG_PLAYBACK_DATA, W.PLAYBACK_PACKET.pack(time=0) + bytes(48000 * 4))
    assert p.seconds == 1.0
    with wave.open(io.BytesIO(p.wav())) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getnframes()) == (2, 48000, 48000)


def test_playback_refuses_codecs_it_did_not_announce_and_ragged_frames():
    with pytest.raises(ProtocolError, match="did not announce"):
        Playback().handle(M.MSG_PLAYBACK_MODE, W.PLAYBACK_MODE.pack(time=0, mode=M.AUDIO_DATA_MODE_OPUS))
    with pytest.raises(ProtocolError, match="not raw PCM or Opus"):
        Playback(opus_ok=True).handle(M.MSG_PLAYBACK_MODE, W.PLAYBACK_MODE.pack(
            time=0, mode=M.AUDIO_DATA_MODE_CELT_0_5_1))
    p = Playback()
    with pytest.raises(ProtocolError, match="before START"):
        p.handle(M.MSG_PLAYBACK_DATA, W.PLAYBACK_PACKET.pack(time=0) + bytes(4))
    p.handle(M.MSG_PLAYBACK_START, W.PLAYBACK_START.pack(channels=2, format=M.AUDIO_FMT_S16, frequency=8000, time=0))
    with pytest.raises(ProtocolError, match="whole"):
        p.handle(M.MSG_PLAYBACK_DATA, W.PLAYBACK_PACKET.pack(time=0) + bytes(3))


def test_a_mono_wav_becomes_the_stereo_rate_the_microphone_asked_for_and_keeps_its_pitch():
    rate = 8000
    t = np.arange(rate) / rate
    tone = (np.sin(2 * np.pi * 1000 * t) * 10000)[:, None]
    pcm = np.frombuffer(pcm_from_wav(read_wav(wav_bytes(tone, rate)), 2, 48000), "<i2").reshape(-1, 2)
    assert pcm.shape == (48000, 2) and (pcm[:, 0] == pcm[:, 1]).all()
    spectrum = np.abs(np.fft.rfft(pcm[:, 0].astype(float)))
    assert abs(np.fft.rfftfreq(len(pcm), 1 / 48000)[spectrum.argmax()] - 1000) < 2


def test_a_file_that_is_not_16_bit_pcm_wav_is_bad_input():
    with pytest.raises(InvalidInput, match="not a 16-bit PCM WAV"):
        read_wav(b"RIFFjunk")


def wav_header(rate: int, channels: int = 1, width: int = 2, frames: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate or 1)  # the wave module writes no rate 0: patched in below
        out.writeframes(frames)
    data = bytearray(buf.getvalue())
    data[24:28] = rate.to_bytes(4, "little")
    return bytes(data)


@pytest.mark.parametrize("rate", [0, 1, 8, 7999, 384_001])
def test_a_wav_at_a_rate_no_sound_card_takes_is_bad_input(rate):
    # rate 0 divided by zero, 1 Hz asked for 71 GiB when resampled to 48 kHz
    with pytest.raises(InvalidInput, match=f"at {rate} Hz"):
        read_wav(wav_header(rate, frames=bytes(1 << 20)))


@pytest.mark.parametrize("width", [1, 3, 4])
def test_a_wav_of_8_24_or_32_bit_samples_is_bad_input(width):
    with pytest.raises(InvalidInput, match=f"{8 * width}-bit samples"):
        read_wav(wav_header(48000, width=width, frames=bytes(width * 100)))


def test_play_audio_refuses_a_bad_wav_with_exit_2_before_connecting(run, tmp_path):
    wav = tmp_path / "slow.wav"
    wav.write_bytes(wav_header(8, frames=bytes(1 << 20)))
    r = run("play-audio", "no-such-guest", str(wav))
    assert r.exit_code == 2, r.stderr
    assert "at 8 Hz" in r.stderr


def test_the_guests_mixer_volume_and_mute_are_followed_and_samples_handed_on():
    p = Playback()
    p.handle(M.MSG_PLAYBACK_START, W.PLAYBACK_START.pack(channels=2, format=M.AUDIO_FMT_S16, frequency=48000,
                                                         time=0))
    p.handle(M.MSG_PLAYBACK_VOLUME, bytes([2]) + (0xFFFF).to_bytes(2, "little") + (0x8000).to_bytes(2, "little"))
    assert p.volume == (1.0, 0x8000 / 0xFFFF)
    p.handle(M.MSG_PLAYBACK_MUTE, b"\x01")
    assert p.muted
    assert p.handle(M.MSG_PLAYBACK_DATA, W.PLAYBACK_PACKET.pack(time=0) + b"\x01\x00\x02\x00") == b"\x01\x00\x02\x00"
    assert not p.pcm  # no recording: handed on, not kept


@pytest.mark.parametrize("body", [b"", bytes([0]), bytes([3, 0, 0]), bytes([9]) + bytes(18)])
def test_a_malformed_volume_message_is_a_protocol_error(body):
    with pytest.raises(ProtocolError, match="volume message"):
        Playback().handle(M.MSG_PLAYBACK_VOLUME, body)


def opus_packets(samples: np.ndarray) -> list[bytes]:
    """Stereo S16 samples as 20 ms Opus packets, from libopus (a peer encoder: FFmpeg's libopus in PyAV)."""
    import av

    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = 48000, "stereo", "s16", 96000
    enc.open()
    packets = []
    for i in range(0, len(samples) - 959, 960):
        frame = av.AudioFrame.from_ndarray(samples[i:i + 960].reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 48000
        packets += [bytes(p) for p in enc.encode(frame)]
    return packets


def test_opus_playback_is_decoded_to_pcm_at_the_tones_pitch():
    rate = 48000
    tone = (np.sin(2 * np.pi * 440 * np.arange(rate) / rate) * 12000).astype("<i2")
    p = Playback(opus_ok=True, seconds_kept=1.0)
    p.handle(M.MSG_PLAYBACK_MODE, W.PLAYBACK_MODE.pack(time=0, mode=M.AUDIO_DATA_MODE_OPUS))
    p.handle(M.MSG_PLAYBACK_START, W.PLAYBACK_START.pack(channels=2, format=M.AUDIO_FMT_S16, frequency=rate, time=0))
    for packet in opus_packets(np.stack([tone, tone], axis=1)):
        p.handle(M.MSG_PLAYBACK_DATA, W.PLAYBACK_PACKET.pack(time=0) + packet)
    left = np.frombuffer(bytes(p.pcm), "<i2").reshape(-1, 2)[:, 0].astype(float)
    assert 0.9 < p.seconds <= 1.0
    assert p.received < len(p.pcm) / 8  # what came over the wire: compressed
    peak = np.fft.rfftfreq(len(left), 1 / rate)[np.abs(np.fft.rfft(left)).argmax()]
    assert abs(peak - 440) < 2 and 8000 < np.abs(left).max() < 16000


def test_a_garbled_opus_packet_is_a_protocol_error_or_decodes():
    p = Playback(opus_ok=True)
    p.handle(M.MSG_PLAYBACK_MODE, W.PLAYBACK_MODE.pack(time=0, mode=M.AUDIO_DATA_MODE_OPUS))
    p.handle(M.MSG_PLAYBACK_START, W.PLAYBACK_START.pack(channels=2, format=M.AUDIO_FMT_S16, frequency=48000, time=0))
    rng = np.random.default_rng(5)
    for _ in range(200):
        try:
            p.handle(M.MSG_PLAYBACK_DATA, W.PLAYBACK_PACKET.pack(time=0) + rng.bytes(int(rng.integers(0, 400))))
        except ProtocolError:
            pass


def start(p: Playback, rate: int = 48000, channels: int = 2) -> None:
    p.handle(M.MSG_PLAYBACK_START, W.PLAYBACK_START.pack(channels=channels, format=M.AUDIO_FMT_S16, frequency=rate,
                                                         time=0))


def test_a_recording_keeps_no_more_than_its_length_of_a_flood():
    p = Playback(seconds_kept=5.0)
    start(p)
    second = W.PLAYBACK_PACKET.pack(time=0) + bytes(48000 * 4)
    for _ in range(12):  # 12 s sent at once, faster than any sound card plays
        p.handle(M.MSG_PLAYBACK_DATA, second)
    assert p.seconds == 5.0 and len(p.pcm) == 5 * 48000 * 4
    with pytest.raises(ProtocolError, match="within a 5s recording"):
        for _ in range(10):
            p.handle(M.MSG_PLAYBACK_DATA, second)


@pytest.mark.parametrize("rate", [1, 7, 7999])
def test_a_playback_rate_no_sound_card_plays_is_a_protocol_error(rate):
    with pytest.raises(ProtocolError, match=f"at {rate} Hz"):
        start(Playback(seconds_kept=3.0), rate)


def test_opus_only_at_the_rates_opus_runs_at():
    p = Playback(opus_ok=True, seconds_kept=3.0)
    p.handle(M.MSG_PLAYBACK_MODE, W.PLAYBACK_MODE.pack(time=0, mode=M.AUDIO_DATA_MODE_OPUS))
    with pytest.raises(ProtocolError, match="Opus at 44100 Hz"):
        start(p, 44100)


def test_a_recording_counts_against_the_sessions_budget():
    p = Playback(seconds_kept=3600.0, budget=Budget(64 << 20))
    start(p, 384000, 8)
    second = W.PLAYBACK_PACKET.pack(time=0) + bytes(384000 * 16 // 4)
    with pytest.raises(ProtocolError, match="memory budget"):
        for _ in range(4 * 60):
            p.handle(M.MSG_PLAYBACK_DATA, second)


def test_opus_that_carried_sound_but_decoded_to_silence_is_not_a_recording(monkeypatch):
    # seen on a desktop guest playing a tone: 3 of 7 recordings all zero although ~38 KB of Opus came
    rate = 48000
    tone = (np.sin(2 * np.pi * 1000 * np.arange(rate) / rate) * 12000).astype("<i2")
    packets = opus_packets(np.stack([tone, tone], axis=1))

    def record(decode_to_silence: bool) -> Playback:
        p = Playback(opus_ok=True, seconds_kept=1.0)
        p.handle(M.MSG_PLAYBACK_MODE, W.PLAYBACK_MODE.pack(time=0, mode=M.AUDIO_DATA_MODE_OPUS))
        start(p)
        if decode_to_silence:
            p.handle(M.MSG_PLAYBACK_DATA, W.PLAYBACK_PACKET.pack(time=0) + packets[0])
            assert p._opus is not None
            monkeypatch.setattr(p._opus, "decode", lambda packet: bytes(960 * 4))
        for packet in packets[int(decode_to_silence):]:
            p.handle(M.MSG_PLAYBACK_DATA, W.PLAYBACK_PACKET.pack(time=0) + packet)
        return p

    record(False).check_heard()   # the tone: heard
    silent = record(True)
    silent.pcm[:] = bytes(len(silent.pcm))
    with pytest.raises(ProtocolError, match="decoded to silence"):
        silent.check_heard()


def test_opus_of_real_silence_is_a_quiet_recording():
    p = Playback(opus_ok=True, seconds_kept=1.0)
    p.handle(M.MSG_PLAYBACK_MODE, W.PLAYBACK_MODE.pack(time=0, mode=M.AUDIO_DATA_MODE_OPUS))
    start(p)
    for packet in opus_packets(np.zeros((48000, 2), "<i2")):
        p.handle(M.MSG_PLAYBACK_DATA, W.PLAYBACK_PACKET.pack(time=0) + packet)
    p.check_heard()
    assert not np.frombuffer(bytes(p.pcm), "<i2").any()
