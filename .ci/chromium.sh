#!/usr/bin/env bash
# Install Debian's chromium (headless) for the test that opens the run report in a browser.
# Safe to run twice; does nothing when a chromium is already on PATH.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "chromium.sh: chromium is not installed; run as root or apt-get install chromium" >&2
  exit 2
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
apt-get clean
