# Shared by scripts/demo and scripts/test: idempotent installs of what spicectl needs.
# Sourced, not run. Everything here is safe to repeat; a second run does no network work.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SPICECTL_VENV:-$ROOT/.venv}"
export DEBIAN_FRONTEND=noninteractive

log() { printf '==> %s\n' "$*" >&2; }

# Base packages: a Python that can build libvirt-python, libvirt's schemas and clients;
# pixman, which the SPICE client loads to draw DRAW_COMPOSITE as spice-server's own canvas does.
BASE_PACKAGES=(python3 python3-venv python3-dev gcc pkg-config libvirt-dev libvirt0 libvirt-clients openssl libpixman-1-0)

ensure_apt() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    if [ "$(id -u)" != 0 ]; then
      log "missing Debian packages: ${missing[*]} (run as root, or install them)"; return 1
    fi
    log "installing ${missing[*]}"
    if [ ! -f /var/lib/apt/spicectl-updated ] || [ -n "$(find /var/lib/apt/spicectl-updated -mmin +720)" ]; then
      apt-get update -q >&2 && touch /var/lib/apt/spicectl-updated
    fi
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
}

ensure_venv() {
  ensure_apt "${BASE_PACKAGES[@]}"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    /usr/bin/python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.spicectl-installed"
  local want
  # what the install builds from: the dependencies, and the compiled decoders (built in place by the hook)
  want="$(cat "$ROOT/pyproject.toml" "$ROOT/hatch_build.py" "$ROOT"/spicectl/spice/codecs/*.c | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing spicectl and its dependencies into $VENV"
    "$VENV/bin/pip" install -q --upgrade pip >&2
    "$VENV/bin/pip" install -q -e "$ROOT[test]" >&2
    echo "$want" > "$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}
