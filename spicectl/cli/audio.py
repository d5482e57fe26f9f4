"""`spicectl record-audio`: what a guest plays, through spicectl's own SPICE client, as a WAV file."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import TIMEOUT
from spicectl.cli.screen import CONNECT_ALLOWANCE, run_client, server_options

MAX_SECONDS = 3600
MAX_WAV_BYTES = 256 << 20


@click.command("record-audio")
@click.argument("name", metavar="GUEST")
@click.option("-o", "--output", required=True, metavar="WAV", help="WAV file to write.")
@click.option("--seconds", type=TIMEOUT, default=5, show_default=True, help="How long to record.")
@click.option("--raw", is_flag=True, help="Ask for raw PCM only: the exact samples, even where the guest's "
              "playback compression is on (Opus otherwise: compressed, lossy).")
@server_options
@json_option
@pass_app
def record_audio(app: App, name: str, output: str, seconds: float, raw: bool, **opts) -> None:
    """Record what guest GUEST plays on its sound card for --seconds, into a WAV file.

    The audio arrives over SPICE's playback channel as Opus (decoded here) when the guest's playback
    compression is on, as QEMU has it by default, or as raw 16-bit PCM (--raw, or compression off);
    the file has the guest's channels and rate. A guest that plays nothing gives an empty recording.
    """
    from pathlib import Path

    from spicectl.errors import InvalidInput
    from spicectl.pki.store import atomic_write, check_output_path

    if seconds > MAX_SECONDS:
        raise InvalidInput(f"--seconds {seconds:g} is over the limit of {MAX_SECONDS}")
    path = Path(output)
    check_output_path(path)

    from spicectl.spice import messages as M

    async def work(client):
        from spicectl.spice.audio_link import record_playback

        return await record_playback(client, seconds, opus=not raw)

    playback = run_client(app, name, opts, work, timeout=seconds + CONNECT_ALLOWANCE, display=False, inputs=False)
    atomic_write(path, playback.wav(), 0o644)
    codec = "opus" if playback.mode == M.AUDIO_DATA_MODE_OPUS else "raw"
    data = {"name": name, "output": str(path), "seconds": round(playback.seconds, 3),
            "channels": playback.channels, "rate": playback.rate, "codec": codec, "received_bytes": playback.received}
    shape = f"{playback.channels} channels, {playback.rate} Hz, {codec}" if playback.started \
        else "the guest played nothing"
    app.emit(data, lambda: app.info(f"{name}: {playback.seconds:.1f}s of audio ({shape}) saved to {path}"))


@click.command("play-audio")
@click.argument("name", metavar="GUEST")
@click.argument("wav", metavar="WAV")
@click.option("--timeout", type=TIMEOUT, default=30, show_default=True,
              help="Seconds to wait for the guest to start recording.")
@server_options
@json_option
@pass_app
def play_audio(app: App, name: str, wav: str, timeout: float, **opts) -> None:
    """Feed WAV (16-bit PCM) to guest GUEST's microphone, once something in the guest records.

    The samples go out at the pace they play, converted to the channels and rate the guest asked for.
    """
    from pathlib import Path

    from spicectl.files import read_bytes
    from spicectl.spice.audio import read_wav

    sound = read_wav(read_bytes(Path(wav), what="WAV file", limit=MAX_WAV_BYTES), what=wav)

    async def work(client):
        from spicectl.spice.audio_link import play_to_microphone

        return await play_to_microphone(client, sound, timeout=timeout)

    # the wait for the guest to record, then the sound at the pace it plays
    seconds = run_client(app, name, opts, work, timeout=timeout + sound.seconds + CONNECT_ALLOWANCE, display=False,
                         inputs=False)
    app.emit({"name": name, "input": wav, "seconds": round(seconds, 3)},
             lambda: app.info(f"{name}: {seconds:.1f}s of {wav} played into the guest's microphone"))
