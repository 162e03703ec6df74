#!/bin/sh
# install.sh: make sure SoftHSM2 (libsofthsm2.so, softhsm2-util), OpenSC
# (pkcs11-tool), NSS's certutil (libnss3-tools: .ci/run makes an NSS key
# database for `custos hsm check`, docs/operations.md), NSS softokn (libnss3:
# the OAEP-SHA256 transport test) and the Debian Python packages of the Python client
# (clients/python: python3-grpcio, python3-protobuf, python3-cryptography,
# for /usr/bin/python3) are installed (python3-grpc-tools, needed only to
# regenerate the Python stubs, is left to clients/python/gen.sh) and openssl
# (scripts/pki.sh) are installed, after checking that the Go release go.mod
# names is there. Idempotent: does nothing when all are present.
# Debian/Ubuntu only (apt-get); runs as root or through sudo; waits for a
# dpkg lock held by another apt (unattended upgrades at boot).
set -eu

# custos is built with the Go release go.mod names (or newer): say so
# before anything else fails on it.
need_go=$(sed -n 's/^go \([0-9][0-9.]*\)$/\1/p' "$(dirname "$0")/../go.mod")
if ! command -v go >/dev/null 2>&1; then
	echo "softhsm/install.sh: go not found: custos needs Go $need_go or newer (https://go.dev/doc/install; put its bin directory on PATH)" >&2
	exit 1
fi
have_go=$(go env GOVERSION | sed 's/^go//')
if [ "$(printf '%s\n%s\n' "$need_go" "$have_go" | sort -V | head -n1)" != "$need_go" ]; then
	echo "softhsm/install.sh: go $have_go is too old: custos needs Go $need_go or newer (go.mod)" >&2
	exit 1
fi

# A fresh cloud machine often runs unattended-upgrades at boot, holding
# dpkg's lock for minutes: apt-get waits for it (up to 10 min) instead of
# failing at once.
APT_WAIT="-o DPkg::Lock::Timeout=600"

# The Python client tests (go test ./clients/python/) use the system
# interpreter, whatever python3 is first on PATH.
PYTHON=/usr/bin/python3
PY_PACKAGES="python3-grpcio python3-protobuf python3-cryptography"

have_python() {
	[ -x "$PYTHON" ] && "$PYTHON" -c 'import grpc, google.protobuf, cryptography' >/dev/null 2>&1
}

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

# Where Debian's libnss3 puts NSS softokn (hsm/pkcs11/qualify's tests).
NSS_SOFTOKN=/usr/lib/x86_64-linux-gnu/libsoftokn3.so

missing=""
packages=""
have_module || missing="$missing libsofthsm2.so"
command -v softhsm2-util >/dev/null 2>&1 || missing="$missing softhsm2-util"
command -v pkcs11-tool >/dev/null 2>&1 || missing="$missing pkcs11-tool"
[ -n "$missing" ] && packages="softhsm2 opensc"
if ! command -v certutil >/dev/null 2>&1; then
	missing="$missing certutil"
	packages="${packages:+$packages }libnss3-tools"
fi
# NSS softokn (package libnss3): the tests run the RSA-OAEP-SHA256 key
# transport between two of its tokens (SoftHSM has no OAEP-SHA256 wrap).
if [ "$(uname -m)" = x86_64 ] && [ ! -f "$NSS_SOFTOKN" ]; then
	missing="$missing libsoftokn3.so"
	packages="${packages:+$packages }libnss3"
fi
# openssl: scripts/pki.sh, the production certificate recipe (and its test).
if ! command -v openssl >/dev/null 2>&1; then
	missing="$missing openssl"
	packages="${packages:+$packages }openssl"
fi
if ! have_python; then
	missing="$missing python3-modules(grpc,google.protobuf,cryptography)"
	packages="${packages:+$packages }python3 $PY_PACKAGES"
fi

if [ -z "$missing" ]; then
	echo "softhsm/install.sh: SoftHSM2, OpenSC, certutil, openssl and the Python client packages already installed"
	exit 0
fi

echo "softhsm/install.sh: missing:$missing; installing $packages"
if ! command -v apt-get >/dev/null 2>&1; then
	echo "softhsm/install.sh: apt-get not found; install $packages with your package manager" >&2
	exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO="sudo"
	else
		echo "softhsm/install.sh: not root and sudo not found; run as root: apt-get update && apt-get install -y $packages" >&2
		exit 1
	fi
fi

echo "+ ${SUDO:+$SUDO }apt-get $APT_WAIT update (waits for another apt or dpkg to finish)"
# shellcheck disable=SC2086
if ! $SUDO apt-get $APT_WAIT update; then
	echo "softhsm/install.sh: apt-get update failed" >&2
	exit 1
fi
echo "+ ${SUDO:+$SUDO }apt-get $APT_WAIT install -y $packages"
# $packages is a list of package names: split it.
# shellcheck disable=SC2086
if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get $APT_WAIT install -y $packages; then
	echo "softhsm/install.sh: apt-get install -y $packages failed" >&2
	exit 1
fi

missing=""
have_module || missing="$missing libsofthsm2.so"
command -v softhsm2-util >/dev/null 2>&1 || missing="$missing softhsm2-util"
command -v pkcs11-tool >/dev/null 2>&1 || missing="$missing pkcs11-tool"
command -v certutil >/dev/null 2>&1 || missing="$missing certutil"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
if [ "$(uname -m)" = x86_64 ] && [ ! -f "$NSS_SOFTOKN" ]; then
	missing="$missing libsoftokn3.so"
fi
if ! have_python; then
	missing="$missing python3-modules(grpc,google.protobuf,cryptography; $PYTHON -c 'import grpc, google.protobuf, cryptography' fails)"
fi
if [ -n "$missing" ]; then
	echo "softhsm/install.sh: still missing after install:$missing" >&2
	exit 1
fi
echo "softhsm/install.sh: done"
