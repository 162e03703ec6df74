#!/usr/bin/env bash
# upgrade-check.sh: upgrade a node's data from an older revision's custosd
# to this checkout's, with real binaries (docs/upgrades.md).
#
#   scripts/upgrade-check.sh OLD_REV
#
# Builds custosd and custos at OLD_REV (a git worktree) and here; runs the
# old `custosd dev` on a fresh data directory (its own SoftHSM token),
# creates a key, encrypts, decrypts, disables and re-enables it, exports the
# ledger; stops it; starts the new custosd on the same directory, and checks
# that it starts, decrypts the old file, moves the cluster to its state
# machine version, creates a key, and that an export of the whole ledger —
# old records and new — verifies. Exit 0 on success.
set -euo pipefail
old=${1:?usage: scripts/upgrade-check.sh OLD_REV}
cd "$(dirname "$0")/.."
work=$(mktemp -d)
cleanup() {
	[ -n "${pid:-}" ] && kill -INT "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	git worktree remove --force "$work/src" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
git worktree add --detach "$work/src" "$old" >/dev/null
(cd "$work/src" && go build -o "$work/old/" ./cmd/custosd ./cmd/custos)
go build -o "$work/new/" ./cmd/custosd ./cmd/custos
data=$work/data

# start BIN: custosd dev on $data, in the background; waits until it serves.
start() {
	"$1/custosd" dev --data-dir "$data" --listen 127.0.0.1:0 >"$work/$(basename "$1").log" 2>&1 &
	pid=$!
	for _ in $(seq 600); do
		if [ -f "$data/client.env" ] && (set -a; . "$data/client.env"; "$1/custos" key list >/dev/null 2>&1); then
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || { cat "$work/$(basename "$1").log" >&2; echo "upgrade-check: $1/custosd exited" >&2; exit 1; }
		sleep 0.1
	done
	echo "upgrade-check: $1/custosd did not serve within 60 s" >&2
	exit 1
}
stop() { kill -INT "$pid"; wait "$pid" || true; pid=""; }
cli() { (set -a; . "$data/client.env"; "$@"); }

echo "upgrade-check: $old"
start "$work/old"
c=$work/old/custos
cli "$c" key create payroll >/dev/null
echo "payroll 2026-12" >"$work/plain.txt"
cli "$c" encrypt --key payroll "$work/plain.txt" "$work/plain.cst"
cli "$c" decrypt --justification CUSTOMER_INITIATED "$work/plain.cst" "$work/out-old.txt"
cli "$c" key disable payroll >/dev/null
cli "$c" key enable payroll >/dev/null
stop

echo "upgrade-check: this checkout ($(git rev-parse --short HEAD))"
start "$work/new"
c=$work/new/custos
cli "$c" decrypt --justification CUSTOMER_INITIATED "$work/plain.cst" "$work/out-new.txt"
cmp "$work/plain.txt" "$work/out-new.txt"
# Every server (the one) runs the new release: the cluster moves to its
# state machine version within seconds (docs/upgrades.md).
for _ in $(seq 300); do
	if cli "$c" audit list --operation STATE_MACHINE_UPGRADE 2>/dev/null | grep -q STATE_MACHINE_UPGRADE; then
		break
	fi
	sleep 0.1
done
cli "$c" audit list --operation STATE_MACHINE_UPGRADE | grep STATE_MACHINE_UPGRADE
cli "$c" key create after-upgrade >/dev/null
cli "$c" audit pubkey >"$work/keys.pem"
cli "$c" audit export "$work/ledger.export"
cli "$c" audit verify --pubkey "$work/keys.pem" "$work/ledger.export"
stop
echo "upgrade-check: $old -> $(git rev-parse --short HEAD): the upgraded node serves the old data and its ledger verifies"
