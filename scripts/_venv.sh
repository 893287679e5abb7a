# Sourced by scripts/*.sh: ensure_venv creates $VENV (default: <repo>/.venv).
# On Debian/Ubuntu, `python3 -m venv` needs the python3-venv package; when venv
# creation fails and we are root with apt-get, install it and try again.

VENV="${VENV:-$repo/.venv}"
PYTHON="${PYTHON:-python3}"

ensure_venv() {
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        return 0
    fi
    if ! "$PYTHON" -m venv "$VENV"; then
        # A failed attempt leaves a venv without pip behind; start over.
        rm -rf "$VENV"
        if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            echo "python3 -m venv failed; installing python3-venv" >&2
            export DEBIAN_FRONTEND=noninteractive
            apt-get update
            apt-get install -y python3-venv
            "$PYTHON" -m venv "$VENV"
        else
            echo "python3 -m venv failed; install python3-venv (as root: apt-get install -y python3-venv)" >&2
            return 1
        fi
    fi
}
