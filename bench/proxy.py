"""The WebSocket session proxy against websockify (PyPI), side by side on loopback, plus raw TCP and socat.

    .venv/bin/python bench/proxy.py throughput [--mib 256] [--repeat 3]
    .venv/bin/python bench/proxy.py concurrency [--sessions 1000] [--rounds 20]
    .venv/bin/python bench/proxy.py soak [--seconds 600]

All traffic stays on 127.0.0.1. Both proxies run as separate processes relaying to the same
stand-in guest. For throughput the guest (source or sink) and the client (a raw socket that
writes pre-masked frames and reads without parsing) are lean processes of their own, so the
relays are what is measured; the many-session runs use an echo guest in this process and
Python websockets clients. Missing peers are installed: socat by apt, websockify by pip.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SPICECTL, ensure_apt, ensure_pip  # noqa: E402

TOKEN_TTL = 60  # the tokens the bench mints: a realistic lifetime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port}") from None
            time.sleep(0.05)


async def echo_guest(reader, writer) -> None:
    """The stand-in guest for the many-session runs: echoes what it gets."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def tree(pid: int) -> list[int]:
    out = [pid]
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for kid in kids:
        out += tree(int(kid))
    return out


class Peers:
    """Our proxy and websockify, both relaying to the stand-in guest; with `tls_guest_port`, a second
    websockify (--ssl-target) for a guest that speaks TLS, as QEMU's TLS port does."""

    def __init__(self, guest_port: int, tls_guest_port: int | None = None) -> None:
        from spicectl.proxy.tokens import Signer, load_secret

        ensure_pip("websockify")
        self.state = Path(tempfile.mkdtemp(prefix="spicectl-bench-"))
        self.signer = Signer(load_secret(self.state))
        self.guest_port, self.tls_guest_port = guest_port, tls_guest_port
        self.ours_port, self.wsf_port, self.wsf_tls_port = free_port(), free_port(), free_port()
        self.env = {**os.environ, "SPICECTL_STATE_DIR": str(self.state)}
        self.ours = subprocess.Popen([SPICECTL, "-q", "proxy", "serve", "--listen", f"127.0.0.1:{self.ours_port}"],
                                     env=self.env, stderr=subprocess.DEVNULL)
        self.wsf = subprocess.Popen([sys.executable, "-m", "websockify", f"127.0.0.1:{self.wsf_port}",
                                     f"127.0.0.1:{guest_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs = [self.ours, self.wsf]
        wait_listening(self.ours_port)
        wait_listening(self.wsf_port)
        if tls_guest_port:
            # websockify verifies the guest with the default CA store: point that at spicectl's CA
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "websockify", "--ssl-target", f"127.0.0.1:{self.wsf_tls_port}",
                 f"127.0.0.1:{tls_guest_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={**os.environ, "SSL_CERT_FILE": str(self.state / "ca" / "ca-cert.pem")}))
            wait_listening(self.wsf_tls_port)

    def guest_certificate(self) -> tuple[str, str]:
        """spicectl's CA in the state dir, and a server certificate for 127.0.0.1 from it."""
        out = self.state / "guest-cert"
        for args in (["ca", "init"], ["cert", "issue", "server", "--host", "127.0.0.1", "--out", str(out)]):
            subprocess.run([SPICECTL, "-q", *args], env=self.env, check=True, stdout=subprocess.DEVNULL)
        return str(out / "server-cert.pem"), str(out / "server-key.pem")

    def url(self, which: str, ttl: float = TOKEN_TTL) -> str:
        tls = which.endswith("TLS to the guest")
        if which.startswith("spicectl"):
            # spent tokens are remembered until they expire: a realistic TTL keeps that bounded
            token, _ = self.signer.mint(guest="bench", host="127.0.0.1", kind="ws", ttl=ttl, tls=tls,
                                        port=self.tls_guest_port if tls else self.guest_port)
            return f"ws://127.0.0.1:{self.ours_port}/websockify?token={token}"
        return f"ws://127.0.0.1:{self.wsf_tls_port if tls else self.wsf_port}/"

    def pids(self, which: str) -> list[int]:
        return tree(self.ours.pid if which == "spicectl" else self.wsf.pid)

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
            p.wait(10)
        shutil.rmtree(self.state, ignore_errors=True)


FAST_CLIENT = r"""
import base64, os, socket, sys, time
from urllib.parse import urlsplit
CRLF = "\r\n"
mode, url, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
u = urlsplit(url)
s = socket.create_connection((u.hostname, u.port))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
extra = b""
if u.scheme == "ws":
    key = base64.b64encode(os.urandom(16)).decode()
    path = (u.path or "/") + ("?" + u.query if u.query else "")
    lines = [f"GET {path} HTTP/1.1", f"Host: {u.hostname}:{u.port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: binary", "", ""]
    s.sendall(CRLF.join(lines).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert b" 101 " in head.split(b"\r\n")[0], head[:200]
    extra = head.split(b"\r\n\r\n", 1)[1]
start = time.perf_counter()
if mode == "down":
    got = len(extra)
    buf = bytearray(4 << 20)
    while got < total:
        n = s.recv_into(buf)
        if not n:
            break
        got += n
else:
    payload = b"\xa5" * 65536
    if u.scheme == "ws":  # one masked frame, sent again and again (the mask may repeat)
        mask = b"\x01\x02\x03\x04"
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload[:4])) * 16384
        frame = bytes((0x82, 0x80 | 127)) + (65536).to_bytes(8, "big") + mask + masked
    else:
        frame = payload
    for _ in range(total // 65536):
        s.sendall(frame)
    s.recv(1)  # the bench ends us once the guest has everything
print(total / (time.perf_counter() - start) / 1e6)
"""


GUEST_PROCESS = r"""
import socket, ssl, sys, time
listener = socket.socket(fileno=int(sys.argv[1]))
mode, total = sys.argv[2], int(sys.argv[3])
tls = None
if len(sys.argv) > 5:  # certificate and key: speak TLS, as QEMU's TLS port does
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(sys.argv[4], sys.argv[5])
block = b"\x5a" * 65536
buf = bytearray(1 << 20)
while True:
    conn, _ = listener.accept()
    try:
        if tls:
            conn = tls.wrap_socket(conn, server_side=True)
        if mode == "source":
            for _ in range(total // len(block)):
                conn.sendall(block)
        else:
            got, first = 0, 0.0
            while got < total:
                n = conn.recv_into(buf)
                if not n:
                    break
                first = first or time.perf_counter()
                got += n
            if got:  # probes that connect and leave (socat's start-up check) report nothing
                print(got / (time.perf_counter() - first) / 1e6, flush=True)
    except OSError:
        pass
    conn.close()
"""


class GuestProcess:
    """The stand-in guest for throughput: a lean process of blocking socket calls (as QEMU's C server
    would be), so that the proxies, not the stand-in, compete for the two cores. It serves one
    direction: 'source' sends `total` bytes to each connection, 'sink' reads `total` bytes and
    prints the MB/s it saw from first byte to last."""

    def __init__(self, listener: socket.socket, mode: str, total: int, cert: tuple[str, str] = ()) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", GUEST_PROCESS, str(listener.fileno()), mode, str(total),
                                      *cert], pass_fds=[listener.fileno()], stdout=subprocess.PIPE, text=True)

    def sink_rate(self) -> float:
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def fast_client(mode: str, url: str, total: int, guest: GuestProcess, stall_after: float) -> float | None:
    """A client that costs next to nothing (raw socket, no frame parsing), in its own process,
    so that the proxies rather than the client limit the figures. None if the relay stalled."""
    proc = subprocess.Popen([sys.executable, "-c", FAST_CLIENT, mode, url, str(total)], stdout=subprocess.PIPE,
                            text=True)
    out = guest.proc.stdout if mode == "up" else proc.stdout
    try:
        if not select.select([out], [], [], stall_after)[0]:
            return None
        line = out.readline().strip()
        return float(line) if line else None
    finally:
        proc.kill()
        proc.wait()


def throughput(args) -> None:
    ensure_apt("socat")
    listeners = {}
    for kind in ("plain", "tls"):
        listeners[kind] = socket.socket()
        listeners[kind].bind(("127.0.0.1", 0))
        listeners[kind].listen(16)
    gport, tls_gport = (listeners[k].getsockname()[1] for k in ("plain", "tls"))
    peers = Peers(gport, tls_gport)
    cert = peers.guest_certificate()
    socat_port = free_port()
    socat = subprocess.Popen(["socat", f"TCP-LISTEN:{socat_port},bind=127.0.0.1,fork,reuseaddr",
                              f"TCP:127.0.0.1:{gport}"], stderr=subprocess.DEVNULL)
    wait_listening(socat_port)
    total = args.mib * 1024 * 1024
    plain = ("raw loopback", "socat (TCP)", "websockify", "spicectl")
    tls = ("websockify, TLS to the guest", "spicectl, TLS to the guest")
    try:
        rates: dict[tuple[str, str], float] = {}
        stalled: dict[tuple[str, str], int] = {}
        for direction, mode, guest_mode in (("guest→browser", "down", "source"), ("browser→guest", "up", "sink")):
            for names, listener, guest_cert in ((plain, listeners["plain"], ()), (tls, listeners["tls"], cert)):
                guest = GuestProcess(listener, guest_mode, total, guest_cert)
                try:
                    runs: dict[str, list[float]] = {n: [] for n in names}
                    for _ in range(args.repeat):  # interleaved, so a slow spell of the machine hits every peer
                        for name in names:
                            url = {"raw loopback": f"tcp://127.0.0.1:{gport}",
                                   "socat (TCP)": f"tcp://127.0.0.1:{socat_port}"}.get(name) or peers.url(name)
                            rate = fast_client(mode, url, total, guest, args.stall_after)
                            if rate is None:
                                stalled[direction, name] = stalled.get((direction, name), 0) + 1
                                guest.close()  # it may still report the stalled run: start afresh
                                guest = GuestProcess(listener, guest_mode, total, guest_cert)
                            else:
                                runs[name].append(rate)
                finally:
                    guest.close()
                rates.update({(direction, n): statistics.median(v) if v else 0.0 for n, v in runs.items()})
        print(f"{args.mib} MiB, 64 KiB frames/writes, median of {args.repeat}, MB/s "
              "(raw-socket client and stand-in guest each in their own process)")
        for direction in ("guest→browser", "browser→guest"):
            r = {n: rates[direction, n] for n in plain + tls}
            print(f"  {direction}: " + ", ".join(f"{n} {r[n]:.0f}" for n in plain))
            print(f"    spicectl / websockify = {r['spicectl'] / r['websockify']:.2f}; "
                  f"spicectl / raw loopback = {r['spicectl'] / r['raw loopback']:.2f}")
            ratio = f"{r[tls[1]] / r[tls[0]]:.2f}" if r[tls[0]] else "n/a"
            print(f"    TLS to the guest: websockify {r[tls[0]]:.0f}, spicectl {r[tls[1]]:.0f}; "
                  f"spicectl / websockify = {ratio}")
        for (direction, name), n in sorted(stalled.items()):
            print(f"  stalled: {name}, {direction}: {n} of {args.repeat} runs gave nothing for "
                  f"{args.stall_after:.0f} s (not counted)")
    finally:
        socat.terminate()
        peers.close()
        for listener in listeners.values():
            listener.close()


async def concurrency(args) -> None:
    from websockets.asyncio.client import connect

    server = await asyncio.start_server(echo_guest, "127.0.0.1", 0, backlog=4096)
    peers = Peers(server.sockets[0].getsockname()[1])
    try:
        for name in ("websockify", "spicectl"):
            conns, failed = [], 0
            for i in range(0, args.sessions, 50):
                got = await asyncio.gather(*(connect(peers.url(name), compression=None, subprotocols=["binary"],
                                                     open_timeout=60) for _ in range(min(50, args.sessions - i))),
                                           return_exceptions=True)
                conns += [c for c in got if not isinstance(c, BaseException)]
                failed += sum(isinstance(c, BaseException) for c in got)
            rtts: list[float] = []

            async def pingpong(ws, rtts=rtts):
                nonlocal failed
                try:
                    for _ in range(args.rounds):
                        start = time.perf_counter()
                        await ws.send(b"x" * 64)
                        await ws.recv()
                        rtts.append(time.perf_counter() - start)
                except Exception:
                    failed += 1

            await asyncio.gather(*(pingpong(ws) for ws in conns))
            rss = rss_kib(peers.pids(name))
            procs = len(peers.pids(name))
            await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
            rtts.sort()
            print(f"{name:<10} {args.sessions} sessions ({failed} failed) x {args.rounds} round trips: p50 "
                  f"{rtts[len(rtts) // 2] * 1000:.2f} ms, p99 {rtts[int(len(rtts) * 0.99)] * 1000:.2f} ms; "
                  f"RSS {rss / 1024:.0f} MiB in {procs} process(es)")
            await asyncio.sleep(1)
    finally:
        peers.close()
        server.close()


async def soak(args) -> None:
    from websockets.asyncio.client import connect

    server = await asyncio.start_server(echo_guest, "127.0.0.1", 0, backlog=1024)
    peers = Peers(server.sockets[0].getsockname()[1])
    pid = peers.ours.pid
    try:
        async def one():
            async with connect(peers.url("spicectl"), compression=None, subprotocols=["binary"]) as ws:
                await ws.send(b"hello")
                await ws.recv()

        for _ in range(50):
            await one()  # warm up
        start_rss, start_fds = rss_kib([pid]), fds(pid)
        n, start = 0, time.monotonic()
        samples = []
        while time.monotonic() - start < args.seconds:
            await asyncio.gather(*(one() for _ in range(20)))
            n += 20
            if n % 2000 == 0:
                samples.append((time.monotonic() - start, n, rss_kib([pid]), fds(pid)))
        await asyncio.sleep(1)
        end_rss, end_fds = rss_kib([pid]), fds(pid)
        print(f"soak {args.seconds:.0f}s: {n} sessions opened and closed; proxy RSS {start_rss} -> {end_rss} KiB, "
              f"open fds {start_fds} -> {end_fds}")
        # the proxy remembers each spent token until it expires (TOKEN_TTL): that many sessions
        # in the last TTL seconds is what its memory should follow, not the run's length
        for t, count, rss, f in samples[:: max(1, len(samples) // 10)]:
            remembered = count - max((c for u, c, *_ in samples if u <= t - TOKEN_TTL), default=0)
            print(f"  t={t:>4.0f}s rss={rss} KiB fds={f} spent tokens not yet expired≈{remembered}")
    finally:
        peers.close()
        server.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--mib", type=int, default=256)
    t.add_argument("--repeat", type=int, default=3)
    t.add_argument("--stall-after", type=float, default=30, metavar="SECONDS",
                   help="a run with no result after this long counts as stalled (websockify --ssl-target stalls "
                   "browser→guest here)")
    c = sub.add_parser("concurrency")
    c.add_argument("--sessions", type=int, default=1000)
    c.add_argument("--rounds", type=int, default=20)
    s = sub.add_parser("soak")
    s.add_argument("--seconds", type=float, default=600)
    args = ap.parse_args()
    if args.what == "throughput":
        throughput(args)
    else:
        asyncio.run({"concurrency": concurrency, "soak": soak}[args.what](args))


if __name__ == "__main__":
    main()
