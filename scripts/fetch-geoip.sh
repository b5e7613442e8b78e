#!/usr/bin/env bash
# fetch-geoip.sh DEST_DIR
#
# Installs the free IP-to-country database of the npm package
# @ip-location-db/geo-whois-asn-country-mmdb (IPv4 and IPv6 in one file,
# flat records {"country_code": "CZ"}) as DEST_DIR/country.mmdb, for rule R9.
# The package is fetched with `npm pack` from the registry npm is configured
# for, so nothing is executed from it. The file is replaced atomically: a
# running relayguard either sees the old database or the complete new one.
#
# The data is licensed CC BY 4.0; the script prints the attribution the
# package carries, which must accompany any use of the database.
set -euo pipefail

readonly PACKAGE=@ip-location-db/geo-whois-asn-country-mmdb
readonly MMDB=geo-whois-asn-country.mmdb
readonly LICENSE_FILE=NRO_LICENSE

die() {
	printf 'fetch-geoip: %s\n' "$*" >&2
	exit 1
}

[[ $# -eq 1 && -n $1 ]] || die "usage: $0 DEST_DIR"
dest=$1

command -v npm >/dev/null 2>&1 || die "npm is not installed or not on PATH; install Node.js/npm (Debian: apt-get install npm) and retry"
command -v tar >/dev/null 2>&1 || die "tar is not installed or not on PATH"

mkdir -p -- "$dest" || die "cannot create destination directory $dest"
[[ -w $dest ]] || die "destination directory $dest is not writable"
[[ ! -d $dest/country.mmdb ]] || die "$dest/country.mmdb is a directory"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fetch-geoip.XXXXXX")
staged=
cleanup() {
	rm -rf -- "$tmp"
	if [[ -n $staged ]]; then rm -f -- "$staged"; fi
}
trap cleanup EXIT

printf 'fetch-geoip: npm pack %s\n' "$PACKAGE" >&2
(cd "$tmp" && npm pack --silent "$PACKAGE" >"$tmp/pack.out") ||
	die "npm pack $PACKAGE failed (is the npm registry reachable?)"

tarballs=("$tmp"/*.tgz)
[[ ${#tarballs[@]} -eq 1 && -f ${tarballs[0]} ]] ||
	die "npm pack $PACKAGE did not produce exactly one tarball in $tmp"
tarball=${tarballs[0]}

mkdir "$tmp/x"
tar -xzf "$tarball" -C "$tmp/x" ||
	die "cannot extract $tarball"
pkgdir=$tmp/x/package
[[ -s $pkgdir/$MMDB ]] ||
	die "$PACKAGE no longer contains package/$MMDB; its contents are: $(tar -tzf "$tarball" | tr '\n' ' ')"
[[ -s $pkgdir/$LICENSE_FILE ]] ||
	die "$PACKAGE no longer contains package/$LICENSE_FILE; check its licence before using the data"

# Every MaxMind DB file carries this marker before its metadata.
LC_ALL=C grep -aq $'\xab\xcd\xefMaxMind.com' "$pkgdir/$MMDB" ||
	die "package/$MMDB in $PACKAGE is not a MaxMind DB file"

version=$(sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "$pkgdir/package.json" | head -n 1)

staged=$(mktemp "$dest/.country.mmdb.XXXXXX")
cp -- "$pkgdir/$MMDB" "$staged"
chmod 0644 "$staged"
sync -- "$staged" 2>/dev/null || true
mv -f -- "$staged" "$dest/country.mmdb"
staged=

size=$(wc -c <"$dest/country.mmdb")
printf 'Installed %s (%s bytes) from %s@%s\n' "$dest/country.mmdb" "$((size))" "$PACKAGE" "${version:-unknown}"
printf '\nLicence: CC BY 4.0 (Creative Commons Attribution 4.0 International)\n'
printf 'Attribution, as stated by the package (%s):\n' "$LICENSE_FILE"
sed 's/^/  /' "$pkgdir/$LICENSE_FILE"
printf '\n'
