#!/usr/bin/env bash
# Install Prometheus, promtool, Alertmanager and amtool from Debian's packages if missing (the tests
# start their own servers on free ports; the packages' own services are not used).
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v amtool >/dev/null \
  && { command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null; }; then
  exit 0
fi
echo "installing Prometheus and Alertmanager from Debian's packages..." >&2
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >&2
