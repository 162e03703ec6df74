#!/usr/bin/env bash
# pki.sh: issue custos's certificates from an existing CA with openssl
# (docs/certificates.md). Every key is ECDSA P-256, every signature
# SHA-256 (CRYPTREC), every key file 0600.
#
#   scripts/pki.sh --ca-cert CA.pem --ca-key CA-KEY.pem [--out DIR] [--days N] KIND NAME [HOST...]
#
# KIND:
#   node ID HOST...   a node: CN custos-node:ID, serverAuth + clientAuth,
#                     SANs HOST... (DNS names or IP addresses its peers and
#                     clients dial); gRPC server, forwarding and Raft (tls.cert)
#   client NAME       an application, operator, auditor or officer's client
#                     certificate: CN NAME (the principal), clientAuth only
#   xks HOST...       the XKS front door's server certificate (xks.cert):
#                     serverAuth, SANs HOST... (AWS KMS itself requires one
#                     from a public CA; this is for private test endpoints)
#
# Writes DIR/<file>.pem (certificate, then the CA certificate: a chain) and
# DIR/<file>-key.pem, where <file> is node-ID, client-NAME or xks-HOST. It
# refuses to overwrite either.
set -euo pipefail

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

ca_cert="" ca_key="" out="." days=365
while [ $# -gt 0 ]; do
	case $1 in
	--ca-cert) ca_cert=$2; shift 2 ;;
	--ca-key) ca_key=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--days) days=$2; shift 2 ;;
	-h|--help) usage ;;
	--*) echo "pki.sh: unknown flag $1" >&2; usage ;;
	*) break ;;
	esac
done
[ -n "$ca_cert" ] && [ -n "$ca_key" ] && [ $# -ge 2 ] || usage
kind=$1 name=$2
shift 2
command -v openssl >/dev/null 2>&1 || { echo "pki.sh: openssl not found (apt-get install openssl)" >&2; exit 1; }

# The names custos accepts (a node id names files and a Raft server).
valid='^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'
sans=()
add_sans() {
	local h
	for h in "$@"; do
		if [[ $h =~ ^[0-9.]+$ || $h == *:* ]]; then sans+=("IP:$h"); else sans+=("DNS:$h"); fi
	done
}
case $kind in
node)
	[[ $name =~ $valid ]] || { echo "pki.sh: invalid node id \"$name\"" >&2; exit 2; }
	[ $# -ge 1 ] || { echo "pki.sh: node $name: name at least one HOST its peers dial" >&2; exit 2; }
	cn="custos-node:$name" file="node-$name" eku="serverAuth,clientAuth"
	add_sans "$@"
	;;
client)
	[[ $name =~ $valid ]] || { echo "pki.sh: invalid principal name \"$name\"" >&2; exit 2; }
	[ $# -eq 0 ] || { echo "pki.sh: client certificates take no hosts" >&2; exit 2; }
	cn=$name file="client-$name" eku="clientAuth"
	;;
xks)
	cn=$name file="xks-$name" eku="serverAuth"
	add_sans "$name" "$@"
	;;
*) usage ;;
esac

mkdir -p "$out"
cert="$out/$file.pem" key="$out/$file-key.pem"
for f in "$cert" "$key"; do
	[ ! -e "$f" ] || { echo "pki.sh: $f exists; remove it to issue a new one" >&2; exit 1; }
done

ext=$(mktemp) csr=$(mktemp) tmpkey=$(mktemp "$out/.key.XXXXXX") tmpcert=$(mktemp "$out/.cert.XXXXXX")
trap 'rm -f "$ext" "$csr" "$tmpkey" "$tmpcert"' EXIT
{
	echo "basicConstraints = critical, CA:FALSE"
	echo "keyUsage = critical, digitalSignature"
	echo "extendedKeyUsage = $eku"
	echo "subjectKeyIdentifier = hash"
	echo "authorityKeyIdentifier = keyid"
	if [ ${#sans[@]} -gt 0 ]; then
		(IFS=,; echo "subjectAltName = ${sans[*]}")
	fi
} >"$ext"

umask 077
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmpkey" 2>/dev/null
openssl req -new -key "$tmpkey" -subj "/CN=$cn" -out "$csr"
openssl x509 -req -in "$csr" -CA "$ca_cert" -CAkey "$ca_key" -set_serial "0x$(openssl rand -hex 16)" -sha256 \
	-days "$days" -extfile "$ext" -out "$tmpcert" 2>/dev/null
cat "$ca_cert" >>"$tmpcert"
chmod 0644 "$tmpcert"
mv "$tmpkey" "$key"
mv "$tmpcert" "$cert"
echo "pki.sh: $cert (CN=$cn, $eku${sans[*]:+, ${sans[*]}}), key $key"
