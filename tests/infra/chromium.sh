#!/usr/bin/env bash
# Install Debian's Chromium if missing: the dashboard's browser test drives it with Playwright
# (executable_path=/usr/bin/chromium; `playwright install` is never run, no browser is downloaded).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "installing chromium from Debian's packages..." >&2
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2
