"""`spicectl share`: a host folder in the guest, over SPICE's folder-sharing (WebDAV) channel."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import TIMEOUT
from spicectl.cli.screen import run_client, server_options, stopped_by_signals

GUEST_URL = "http://127.0.0.1:9843/"  # where spice-webdavd serves the shared folder inside the guest


@click.command()
@click.argument("name", metavar="GUEST")
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--writable", is_flag=True, help="Let the guest create, change and delete files in DIR "
              "(read-only by default).")
@click.option("--seconds", type=TIMEOUT, default=None, help="Stop after this long (default: until Ctrl-C or "
              "SIGTERM).")
@click.option("--max-upload", metavar="SIZE", default="4G", show_default=True,
              help="The largest file the guest may write in one go (with --writable); larger is refused (413).")
@server_options
@json_option
@pass_app
def share(app: App, name: str, folder: str, writable: bool, seconds: float | None, max_upload: str,
          **opts) -> None:
    """Share DIR with guest GUEST until Ctrl-C, as remote-viewer's "Share folder" does.

    In the guest, spice-webdavd (in spicectl's desktop image) serves DIR at http://127.0.0.1:9843/:
    open dav://127.0.0.1:9843/ in a file manager, or use any WebDAV client. The guest needs
    --folder-sharing (spicectl vm create). DIR is read-only unless --writable; a file the guest
    writes lands whole or not at all (a temporary file beside it, renamed into place).

    \b
      spicectl share web ./reports                    # read-only, until Ctrl-C
      spicectl share web ./inbox --writable --seconds 600 --json
    """
    import time
    from pathlib import Path

    from spicectl.domain.units import parse_size_kib
    from spicectl.session.share import FolderServer

    limit = parse_size_kib(max_upload, what="--max-upload") * 1024
    path = Path(folder)
    access = "read-write" if writable else "read-only"
    out = app.session_output()
    shared = {"name": name, "folder": str(path.resolve()), "writable": writable, "guest_url": GUEST_URL}
    with FolderServer(path, writable=writable, max_upload=limit) as server:
        started = time.monotonic()

        async def work(client):
            stop = stopped_by_signals()
            from spicectl.spice.webdav_link import serve_webdav

            def ready() -> None:   # said once the guest's connections reach us, not before
                out.announce({"event": "sharing", **shared}, f"sharing {path} with {name} ({access}), in the "
                             f"guest at {GUEST_URL}" + ("" if seconds else "; Ctrl-C stops"))

            return await serve_webdav(client, server.connect, seconds=seconds, stop=stop, on_ready=ready)

        carried = run_client(app, name, opts, work, timeout=None, display=False, inputs=False)
    out.announce({"event": "stopped", **shared, "connections": carried,
                  "seconds": round(time.monotonic() - started, 1)},
                 f"stopped sharing {path} with {name} ({carried} guest connection{'' if carried == 1 else 's'})")
