#!/usr/bin/env bash
# The hardware demo (`drupelet up --demo`): two nodes, a laptop and a simulated Pi, on
# their own nats-servers, the thermometer and counter examples built on first use.
# Creates .venv in the repo and installs drupelet[build] into it only when it is missing
# or pyproject.toml/images/constraints.txt changed (then it runs offline). Arguments go to
# `drupelet up --demo` (e.g. --no-auto-press, --nats URL).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=scripts/_venv.sh
source "$repo/scripts/_venv.sh"

ensure_venv
ensure_installed build

exec "$VENV/bin/drupelet" up --demo "$@"
