#!/usr/bin/env bash
# Test-only system packages: Debian's chromium for the MLflow UI browser test.
set -u
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "test-setup: could not install chromium; the browser test will be skipped" >&2
  else
    echo "test-setup: chromium missing and apt-get unavailable; the browser test will be skipped" >&2
  fi
fi
exit 0
