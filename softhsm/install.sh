#!/bin/sh
# install.sh: make sure SoftHSM2 (libsofthsm2.so, softhsm2-util) and OpenSC
# (pkcs11-tool) are installed. Idempotent: does nothing when all are present.
# Debian/Ubuntu only (apt-get); runs as root or through sudo.
set -eu

have_module() {
	if [ -n "${CUSTOS_PKCS11_MODULE:-}" ] && [ -f "$CUSTOS_PKCS11_MODULE" ]; then
		return 0
	fi
	for p in /usr/lib/softhsm/libsofthsm2.so \
		/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
		/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so; do
		[ -f "$p" ] && return 0
	done
	return 1
}

missing=""
have_module || missing="$missing libsofthsm2.so"
command -v softhsm2-util >/dev/null 2>&1 || missing="$missing softhsm2-util"
command -v pkcs11-tool >/dev/null 2>&1 || missing="$missing pkcs11-tool"

if [ -z "$missing" ]; then
	echo "softhsm/install.sh: SoftHSM2 and OpenSC already installed"
	exit 0
fi

echo "softhsm/install.sh: missing:$missing; installing softhsm2 and opensc"
if ! command -v apt-get >/dev/null 2>&1; then
	echo "softhsm/install.sh: apt-get not found; install SoftHSM2 (softhsm2) and OpenSC (opensc) with your package manager" >&2
	exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO="sudo"
	else
		echo "softhsm/install.sh: not root and sudo not found; run as root: apt-get update && apt-get install -y softhsm2 opensc" >&2
		exit 1
	fi
fi

echo "+ ${SUDO:+$SUDO }apt-get update"
if ! $SUDO apt-get update; then
	echo "softhsm/install.sh: apt-get update failed" >&2
	exit 1
fi
echo "+ ${SUDO:+$SUDO }apt-get install -y softhsm2 opensc"
if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y softhsm2 opensc; then
	echo "softhsm/install.sh: apt-get install -y softhsm2 opensc failed" >&2
	exit 1
fi

missing=""
have_module || missing="$missing libsofthsm2.so"
command -v softhsm2-util >/dev/null 2>&1 || missing="$missing softhsm2-util"
command -v pkcs11-tool >/dev/null 2>&1 || missing="$missing pkcs11-tool"
if [ -n "$missing" ]; then
	echo "softhsm/install.sh: still missing after install:$missing" >&2
	exit 1
fi
echo "softhsm/install.sh: done"
