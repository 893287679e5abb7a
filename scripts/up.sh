#!/usr/bin/env bash
# Create .venv in the repo, install drupelet, and run a demo node with an embedded
# NATS server and the counter example actor. Arguments go to `drupelet up`.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=scripts/_venv.sh
source "$repo/scripts/_venv.sh"

ensure_venv
"$VENV/bin/python" -m pip install --upgrade pip
"$VENV/bin/python" -m pip install -e '.[build]'

exec "$VENV/bin/drupelet" up --demo "$@"
