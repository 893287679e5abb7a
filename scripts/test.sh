#!/usr/bin/env bash
# Create .venv in the repo, install drupelet with its test extras (when missing or out
# of date), then run
# mypy (node/ and providers/, config in pyproject.toml) and pytest.
# Extra arguments are passed to pytest, e.g. scripts/test.sh -k natsserver -x
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=scripts/_venv.sh
source "$repo/scripts/_venv.sh"

ensure_venv
ensure_system_tools
# the versions the SD image ships (images/constraints.txt) are the versions tested here;
# installed only when the venv is missing or out of date
ensure_installed test

VENV="$VENV" bash "$repo/scripts/typecheck.sh"
"$VENV/bin/python" -m pytest -q "$@"
