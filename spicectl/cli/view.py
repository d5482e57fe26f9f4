"""`spicectl view`: a guest's screen in a window of spicectl's own (Tk), for hosts without remote-viewer."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import TIMEOUT
from spicectl.cli.screen import run_client, server_options
from spicectl.cli.usb import UsbPlugs, usb_plug_options
from spicectl.spice import messages as M


@click.command()
@click.argument("name", metavar="GUEST")
@click.option("--close-after", type=TIMEOUT, metavar="SECONDS",
              help="Close the window after SECONDS (for scripts: with --json, what was drawn is printed).")
@click.option("--mute", is_flag=True, help="Do not play the guest's sound (played on this host's default output "
              "otherwise).")
@click.option("--audio-device", metavar="NAME", help="Play on this output instead (a PortAudio device name or "
              "number; python3 -m sounddevice lists them).")
@click.option("--video-codec", "video_codecs", multiple=True, metavar="CODEC",
              type=click.Choice([name for name, _, _ in M.VIDEO_CODECS.values()]),
              help="Ask for video streams in CODEC first (repeatable, best first): VP8, H.264 and the rest "
                   "compress better than MJPEG, where the host's spice-server has a GStreamer encoder for them.")
@click.option("--share", "share", metavar="DIR", type=click.Path(file_okay=False),
              help="Share DIR with the guest while the window is open, as `spicectl share` does.")
@click.option("--writable", is_flag=True, help="With --share: let the guest change DIR (read-only by default).")
@usb_plug_options
@server_options
@json_option
@pass_app
def view(app: App, name: str, close_after: float | None, mute: bool, audio_device: str | None,
         video_codecs: tuple[str, ...], share: str | None, writable: bool, usb_cds: tuple[str, ...],
         usb_disks: tuple[str, ...], usb_writable: bool, **opts) -> None:
    """Show guest GUEST's screen in a window, with its keyboard and mouse, until the window is closed.

    A click in the window grabs keyboard and pointer; Shift+F12 releases them. With the guest's agent
    running, resizing the window resizes the guest's screen and the clipboard is shared both ways
    (text). The guest's sound plays on this host's default output, at the guest's mixer volume
    (PortAudio; Debian: libportaudio2). --share DIR shares a folder meanwhile (in the guest:
    http://127.0.0.1:9843/, spice-webdavd); --usb-cd ISO and --usb-disk IMG plug emulated USB devices
    in (as `spicectl usb share`), unplugged when the window closes. Needs an X display and Tk
    (Debian: python3-tk). Through a proxy: `spicectl connect GUEST --builtin --view --proxy ws`.
    """
    import contextlib
    from pathlib import Path

    from spicectl.session.share import FolderServer
    from spicectl.session.viewer import view as show

    if writable and not share:
        raise click.UsageError("--writable needs --share DIR")

    def shown() -> None:
        app.info(f"{name}: window open (click in it to grab, Shift+F12 releases)")

    with (FolderServer(Path(share), writable=writable) if share else contextlib.nullcontext() as folder,
          UsbPlugs(app, name, usb_cds, usb_disks, usb_writable) as plugs):
        async def work(client):
            return await show(client, f"{name} (spicectl)", on_shown=shown, close_after=close_after,
                              sound=not mute, audio_device=audio_device, share=folder.connect if folder else None,
                              on_sharing=lambda: app.info(f"{name}: sharing {share} with the guest"),
                              on_note=lambda m: app.warn(f"{name}: {m}"), usb_devices=plugs.devices,
                              on_usb=plugs.on_event)

        stats = run_client(app, name, opts, work, timeout=None, allow_partial=True, prefer_video=video_codecs)
    data = {"name": name, "seconds": round(stats.seconds, 1), "frames_drawn": stats.frames_drawn,
            "display_messages": stats.display_messages, "stream_frames": stats.stream_frames,
            "audio_seconds": round(stats.audio_seconds, 1), "share_connections": stats.share_connections,
            "cpu_seconds": round(stats.cpu_seconds, 2)}
    sound_note = f", {stats.audio_seconds:.1f}s of the guest's sound played" if stats.audio_seconds else ""
    app.emit(data, lambda: app.info(f"{name}: window closed after {stats.seconds:.0f}s{sound_note}"))
