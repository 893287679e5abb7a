#!/usr/bin/env bash
# The long fuzz of a running node (tests/test_fuzz.py, strategies in tests/fuzzing.py):
# hostile and random payloads on every control subject, every provider-call subject and
# an actor's delivery subject of a real node over a real nats-server. Prints the counts
# (sent, answered, unanswered, malformed replies, replies by code) and fails on any
# unanswered request, malformed or internal reply, error in the node's log, or change of
# the node's actors, links, labels, lattice state or buckets.
#
#   scripts/fuzz.sh                 100,000 messages (about 35,000 per kind of subject)
#   scripts/fuzz.sh 300000          that many messages
#   scripts/fuzz.sh --seconds 60    as many as fit in 60 s (at least one round of each kind)
#
# The default test run (scripts/test.sh) sends 700 of each kind.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=scripts/_venv.sh
source "$repo/scripts/_venv.sh"

messages=100000
seconds=0
case "${1:-}" in
    --seconds) seconds="${2:?--seconds takes a number}"; messages=1500 ;;
    "") ;;
    *[!0-9]*) echo "usage: scripts/fuzz.sh [MESSAGES] | --seconds N" >&2; exit 2 ;;
    *) messages="$1" ;;
esac

ensure_venv
ensure_system_tools
ensure_installed test

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
DRUPELET_FUZZ_EXAMPLES=$(( (messages + 2) / 3 )) DRUPELET_FUZZ_SECONDS="$seconds" \
    "$VENV/bin/python" -m pytest -q -s -p no:cacheprovider tests/test_fuzz.py >"$log" 2>&1 || status=$?
grep -E '^(fuzz |[0-9]+ (passed|failed)|FAILED|E )' "$log" | cut -c1-400 || true
exit "$status"
