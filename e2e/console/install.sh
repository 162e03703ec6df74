#!/bin/sh
# Installs what the console's browser test needs when it is missing:
# Debian's chromium (apt-get) and the pinned playwright-core (npm ci, from package-lock.json;
# it never downloads a browser of its own). Idempotent.
set -eu
cd "$(dirname "$0")"
# apt-get waits for the dpkg lock (a fresh machine's unattended upgrades)
# up to 10 minutes instead of failing at once.
APT_WAIT="-o DPkg::Lock::Timeout=600"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
if ! command -v chromium >/dev/null 2>&1; then
	echo "+ $SUDO apt-get install -y chromium"
	$SUDO apt-get $APT_WAIT update
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get $APT_WAIT install -y chromium
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	echo "+ $SUDO apt-get install -y nodejs npm"
	$SUDO apt-get $APT_WAIT update
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get $APT_WAIT install -y nodejs npm
fi
want=$(node -p 'require("./package.json").dependencies["playwright-core"]')
have=$(node -p 'try { require("./node_modules/playwright-core/package.json").version } catch { "" }')
if [ "$want" != "$have" ]; then
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
fi
