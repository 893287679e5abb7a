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

# The unit tests run systemd-analyze and systemd-sysusers (tests/test_systemd.py),
# util-linux's setpriv (the embedded nats-server dies with its node), and node with npm
# (the JavaScript test component is built with componentize-js from npm). A minimal
# Debian container may lack them; as root with apt-get, install them.
ensure_system_tools() {
    local missing=()
    command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
    command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]} for the tests" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}"
    else
        echo "the tests need ${missing[*]} (as root: apt-get install -y ${missing[*]})" >&2
        return 1
    fi
}

# ensure_installed EXTRA: install drupelet (editable, with EXTRA, at the versions of
# images/constraints.txt) into $VENV only when it is missing or out of date. A stamp file
# in $VENV keys the install on a hash of pyproject.toml, the constraints and EXTRA, so a
# second run installs nothing, says nothing and needs no network. pip's output (and the
# build backend's deprecation banners) goes to a log that is shown only if pip fails.
ensure_installed() {
    local extra="$1"
    local stamp="$VENV/.drupelet-installed-$extra"
    local key
    key="$(cat "$repo/pyproject.toml" "$repo/images/constraints.txt" | sha256sum | cut -d' ' -f1)-$extra"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$key" && -x "$VENV/bin/drupelet" ]]; then
        return 0
    fi
    local log="$VENV/pip-install.log"
    echo "installing drupelet[$extra] into $VENV (first run, or pyproject.toml/constraints changed) ..." >&2
    if ! PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q -c "$repo/images/constraints.txt" \
            -e "$repo[$extra]" >"$log" 2>&1; then
        cat "$log" >&2
        echo "pip install failed (log: $log)" >&2
        return 1
    fi
    echo "$key" >"$stamp"
}
