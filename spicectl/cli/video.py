"""`spicectl record-video`: the guest's screen as a video file."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import TIMEOUT, Integer
from spicectl.cli.screen import run_client, server_options, stopped_by_signals


@click.command("record-video")
@click.argument("name", metavar="GUEST")
@click.option("-o", "--output", metavar="FILE",
              help="The video: .webm (VP9, or VP8), .mkv (VP9, H.264 or VP8) or .mp4 (H.264).")
@click.option("--seconds", type=TIMEOUT, default=None, help="Stop after this long (default: until Ctrl-C or SIGTERM).")
@click.option("--fps", type=Integer(1, 60), default=10, show_default=True,
              help="Frames a second; a still screen is repeated, so time in the video is wall time.")
@click.option("--codec", type=click.Choice(["vp9", "vp8", "h264"]), help="The video codec (default: the "
              "container's first: VP9 for .webm and .mkv, H.264 for .mp4).")
@click.option("--cursor", "with_cursor", is_flag=True, help="Draw the guest's pointer in, where it is.")
@click.option("--background", is_flag=True, help="Record in the session holder and return at once: later "
              "commands on GUEST share its session; `record-video GUEST --stop` ends it.")
@click.option("--stop", is_flag=True, help="End GUEST's background recording (and write its index).")
@server_options
@json_option
@pass_app
def record_video(app: App, name: str, output: str | None, seconds: float | None, fps: int, codec: str | None,
                 with_cursor: bool, background: bool, stop: bool, **opts) -> None:
    """Record guest NAME's screen into a video file until Ctrl-C, SIGTERM or --seconds.

    What the display channel shows, video streams included, at a steady frame rate, encoded by PyAV
    (the [viewer] extra) for low CPU. The file plays after a clean stop; after a SIGKILL it plays up
    to its last second. --json prints one line when recording starts and one when it stops.

    A SPICE server serves one client at a time, so a recording and other commands on the same guest
    share one session: start it with --background (it runs in the session holder, as `screenshot`,
    `type` and `wait-screen` do there), and end it with --stop, which prints what was recorded.

    \b
      spicectl record-video web -o run.webm --seconds 60
      spicectl record-video web -o run.webm --background && ./ci-steps.sh; spicectl record-video web --stop
    """
    import time
    from pathlib import Path

    from spicectl.errors import EnvironmentProblem
    from spicectl.pki.store import check_output_path
    from spicectl.session.video_record import available, plan, record

    if stop:
        _stop(app, name, opts)
        return
    if not output:
        raise click.UsageError("give -o FILE (or --stop)")
    path = Path(output).absolute()   # the holder runs elsewhere
    plan(path, codec)   # the suffix and codec, before connecting
    check_output_path(path)
    why = available()
    if why is not None:
        raise EnvironmentProblem(f"cannot record video: {why}")
    out = app.session_output()
    started = time.monotonic()

    async def work(client):
        stop = stopped_by_signals()

        def recording(r) -> None:
            out.announce({"event": "recording", "name": name, "output": str(path), "width": r.width,
                          "height": r.height, "fps": fps, "codec": r.codec},
                         f"recording {name} into {path} ({r.width}x{r.height}, {r.codec}, {fps} fps)"
                         + ("" if seconds else "; Ctrl-C stops"))

        return await record(client, path, fps=fps, seconds=seconds, stop=stop, cursor=with_cursor, codec=codec,
                            on_started=recording)

    if background:
        _start(app, name, opts, path, fps, seconds, codec, with_cursor)
        return
    result = run_client(app, name, opts, work, timeout=None, inputs=False, cursor=with_cursor)
    out.announce({"event": "stopped", "name": name, "output": str(path), "frames": result.frames,
                  "seconds": round(result.seconds, 2), "wall_seconds": round(time.monotonic() - started, 2)},
                 f"{name}: {result.seconds:.1f}s of video ({result.frames} frames) in {path}")


def _holder(app: App, name: str):
    from spicectl.errors import EnvironmentProblem
    from spicectl.session.server import is_spice_uri

    if app.runtime is None or is_spice_uri(name):
        raise EnvironmentProblem("background recordings run in the session holder, which is off here",
                                 hint="not with SPICECTL_PERSIST=0 or --persist 0, nor for a spice:// URI")
    return app.runtime.warm


def _start(app: App, name: str, opts: dict, path, fps: int, seconds: float | None, codec: str | None,
           cursor: bool) -> None:
    from spicectl.cli.screen import warm_key, warm_server
    from spicectl.session.video_record import record

    async def job(client, stop, started):
        def began(r) -> None:
            if not started.done():
                started.set_result(r)

        return await record(client, path, fps=fps, seconds=seconds, stop=stop, cursor=cursor, codec=codec,
                            on_started=began)

    r = _holder(app, name).start_job(warm_key(app, name, opts), lambda: warm_server(app, name, opts), job,
                                     cursor=cursor)
    if r is None:   # it ended before its first frame (--seconds 0, say): nothing runs now
        raise click.UsageError("the recording ended as soon as it began")
    app.emit({"event": "recording", "name": name, "output": str(path), "width": r.width, "height": r.height,
              "fps": fps, "codec": r.codec, "background": True},
             lambda: app.info(f"recording {name} into {path} in the background ({r.width}x{r.height}, {r.codec}, "
                              f"{fps} fps); `spicectl record-video {name} --stop` ends it"))


def _stop(app: App, name: str, opts: dict) -> None:
    from spicectl.cli.screen import warm_key
    from spicectl.errors import NotFound

    result = _holder(app, name).stop_job(warm_key(app, name, opts))
    if result is None:
        raise NotFound(f"no background recording of {name} runs",
                       hint="a command the holder does not serve (console, vm ...) on the private libvirt ends the "
                            "holder and its recordings, whose files keep what was recorded")
    app.emit({"event": "stopped", "name": name, "frames": result.frames, "seconds": round(result.seconds, 2)},
             lambda: app.info(f"{name}: {result.seconds:.1f}s of video ({result.frames} frames)"))
