#!/usr/bin/env bash
# Install nginx from Debian's packages if missing (nginx-light: the catalog's onboarding tests run it
# as "a server no one here wrote"; the package's own service is not used, each test starts its own
# nginx on a free port of 127.0.0.1).
set -euo pipefail
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
echo "installing nginx from Debian's packages..." >&2
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >&2 \
  || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >&2
# the package may start its own server on port 80: the tests never use it
if command -v systemctl >/dev/null; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
