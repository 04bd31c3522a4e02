#!/usr/bin/env bash
# Lint contracts, then the whole test suite (slow integration tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
export NASFORGE_HOME="${NASFORGE_HOME:-$PWD/.nasforge-test}"
export RAY_DISABLE_USAGE_STATS=1 RAY_USAGE_STATS_ENABLED=0
lint-imports
python3 -m ruff check nasforge
python3 -m pytest -p no:cacheprovider "$@"
