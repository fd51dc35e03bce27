#!/usr/bin/env bash
# Kept for scripts that call it: `make deps` runs scripts/deps.py, which does it all.
exec python3 "$(dirname "$0")/deps.py" "$@"
