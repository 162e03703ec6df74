#!/bin/sh
# init-token.sh DIR LABEL [PIN]: create a private SoftHSM2 configuration in DIR
# (DIR/softhsm2.conf, tokens in DIR/tokens) and initialise a token LABEL in it.
# The SO PIN and the user PIN are both PIN (default 1234): for development only.
# Prints the SOFTHSM2_CONF line to export. Re-running with an existing label
# leaves the token alone.
set -eu

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
	echo "usage: $0 DIR LABEL [PIN]" >&2
	exit 2
fi
dir=$1
label=$2
pin=${3:-1234}

if ! command -v softhsm2-util >/dev/null 2>&1; then
	echo "init-token.sh: softhsm2-util not found; run softhsm/install.sh (or make test) first" >&2
	exit 1
fi

mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
conf="$dir/softhsm2.conf"
cat >"$conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
CONF

SOFTHSM2_CONF=$conf
export SOFTHSM2_CONF
if softhsm2-util --show-slots 2>/dev/null | sed -n 's/^[[:space:]]*Label:[[:space:]]*//p' | sed 's/[[:space:]]*$//' | grep -qxF -- "$label"; then
	echo "init-token.sh: token '$label' already exists in $dir/tokens"
else
	softhsm2-util --init-token --free --label "$label" --so-pin "$pin" --pin "$pin"
fi
echo "export SOFTHSM2_CONF=$conf"
