"""The proxy's signing secret: made 0600 on first use, refused when it could not keep tokens unforgeable."""

from __future__ import annotations

import os

import pytest

from spicectl.errors import InvalidInput
from spicectl.proxy.tokens import SECRET_BYTES, load_secret


def test_first_use_makes_a_private_secret(tmp_path):
    secret = load_secret(tmp_path)
    path = tmp_path / "proxy" / "secret"
    assert len(secret) == SECRET_BYTES and os.stat(path).st_mode & 0o777 == 0o600
    assert load_secret(tmp_path) == secret


@pytest.mark.parametrize("content, mode, message", [
    (b"", 0o600, "holds 0 bytes"),
    (b"short", 0o600, "holds 5 bytes"),
    (os.urandom(64), 0o644, "readable by others (mode 0644)"),
])
def test_a_weak_secret_is_refused(tmp_path, content, mode, message):
    path = tmp_path / "proxy" / "secret"
    path.parent.mkdir()
    path.write_bytes(content)
    path.chmod(mode)
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_secret(tmp_path)


def test_a_directory_where_the_secret_should_be_is_refused(tmp_path):
    (tmp_path / "proxy" / "secret").mkdir(parents=True)
    with pytest.raises(InvalidInput, match="not a regular file"):
        load_secret(tmp_path)


def test_proxy_serve_with_an_empty_secret_exits_with_one_line(run, state_dir):
    path = state_dir / "proxy" / "secret"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    path.chmod(0o600)
    r = run("proxy", "serve", "--listen", "127.0.0.1:0")
    assert r.exit_code == 2 and "holds 0 bytes" in r.stderr
    assert r.stderr.startswith("spicectl: error:") and "Traceback" not in r.stderr
