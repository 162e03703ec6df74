#!/usr/bin/env bash
# dist.sh: reproducible release archives (make dist; docs/operations.md,
# "Release archives").
#
#   scripts/dist.sh OUTDIR
#
# For each target it builds custosd and custos (cgo: the PKCS#11 binding
# needs a C compiler for the target) with -trimpath, no build id and the
# version stamped in, and packs them with the systemd units in the layout
# deploy/custosd.service expects:
#
#   custos-VERSION-linux-ARCH/usr/local/bin/{custosd,custos,custos-kms-plugin}
#   custos-VERSION-linux-ARCH/etc/systemd/system/custosd{.service,-grpc.socket,-raft.socket}
#   custos-VERSION-linux-ARCH/usr/share/doc/custos/{README.md,LICENSE,NOTICE,*.md,licenses/}
#
# into OUTDIR/custos-VERSION-linux-ARCH.tar.gz (sorted names, owner 0:0,
# every time the commit's time, gzip without a name or time), then writes
# OUTDIR/SHA256SUMS. The same commit, Go release and C compiler give the
# same bytes: `make dist-check` builds twice with separate build caches and
# compares. linux/amd64 is always built; linux/arm64 only where the cross
# compiler aarch64-linux-gnu-gcc is installed (Debian: gcc-aarch64-linux-gnu),
# else it says so and skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/dist.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH
GO=${GO:-go}
pkg=github.com/custos-kms/custos/internal/version
ldflags="-s -w -buildid= -X $pkg.version=$VERSION -X $pkg.commit=$COMMIT"

targets="amd64"
if command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then
	targets="$targets arm64"
else
	echo "dist.sh: aarch64-linux-gnu-gcc not found: skipping linux/arm64 (apt-get install gcc-aarch64-linux-gnu to build it)" >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Licence texts of every module linked into the binaries.
licenses() {
	local dest=$1
	{
		"$GO" list -deps -f '{{with .Module}}{{.Path}} {{.Dir}}{{end}}' ./cmd/custosd ./cmd/custos
		(cd k8s && "$GO" list -deps -f '{{with .Module}}{{.Path}} {{.Dir}}{{end}}' ./cmd/custos-kms-plugin)
	} | sort -u | while read -r path dir; do
			[ -n "$dir" ] && [ "$path" != github.com/custos-kms/custos ] && [ "$path" != github.com/custos-kms/custos/k8s ] || continue
			for f in "$dir"/LICENSE* "$dir"/LICENCE* "$dir"/COPYING* "$dir"/NOTICE*; do
				[ -f "$f" ] || continue
				mkdir -p "$dest/$path"
				cp "$f" "$dest/$path/"
				chmod 0644 "$dest/$path/$(basename "$f")"
			done
		done
}

for arch in $targets; do
	name="custos-$VERSION-linux-$arch"
	root="$work/$name"
	install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system" "$root/usr/share/doc/custos/licenses"
	cc=gcc
	[ "$arch" = arm64 ] && cc=aarch64-linux-gnu-gcc
	for cmd in custosd custos; do
		CGO_ENABLED=1 GOOS=linux GOARCH=$arch CC=$cc "$GO" build -trimpath -buildvcs=false \
			-ldflags "$ldflags" -o "$root/usr/local/bin/$cmd" "./cmd/$cmd"
	done
	# The Kubernetes KMS v2 plugin (its own module, k8s/; no cgo: static).
	(cd k8s && CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$GO" build -trimpath -buildvcs=false \
		-ldflags "$ldflags" -o "$root/usr/local/bin/custos-kms-plugin" ./cmd/custos-kms-plugin)
	install -m 0644 deploy/custosd.service deploy/custosd-grpc.socket deploy/custosd-raft.socket "$root/etc/systemd/system/"
	install -m 0644 README.md LICENSE NOTICE docs/*.md "$root/usr/share/doc/custos/"
	licenses "$root/usr/share/doc/custos/licenses"
	chmod -R u+rwX,go+rX,go-w "$root"
	tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
		--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
		-C "$work" -cf - "$name" | gzip -9 -n >"$out/$name.tar.gz"
	echo "dist.sh: $out/$name.tar.gz"
done
(cd "$out" && sha256sum custos-"$VERSION"-linux-*.tar.gz >SHA256SUMS)
cat "$out/SHA256SUMS"
