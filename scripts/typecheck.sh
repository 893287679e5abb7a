#!/usr/bin/env bash
# Strict mypy over drupelet.node and drupelet.providers. The folders are mapped to those
# package names by pyproject.toml, which mypy cannot read; a tree of symlinks in
# .typecheck/ gives mypy the same layout the installed package has.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
python="${VENV:-$repo/.venv}/bin/python"
mkdir -p .typecheck/drupelet
for part in node providers actors; do
    ln -sfn "../../$part" ".typecheck/drupelet/$part"
done
cd .typecheck
exec "$python" -m mypy --config-file ../pyproject.toml -p drupelet.node -p drupelet.providers "$@"
