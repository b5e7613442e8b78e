#!/usr/bin/env bash
# Start relayguard on loopback with the sample configuration of etc/: the
# same files an operator installs, with only the paths moved under VAR_DIR.
# Usage: scripts/run.sh BINARY VAR_DIR
set -euo pipefail
bin=$1 var=$2
mkdir -p "$var"
cfg="$var/relayguard.toml"
etc=$(cd "$(dirname "$0")/../etc" && pwd)

# Each substitution must match, so that this script cannot drift from etc/.
subst() { # KEY OLD NEW
	grep -q "^$1 = \"$2\"" "$cfg.tmp" || { echo "run.sh: $1 = \"$2\" not found in etc/relayguard.toml" >&2; exit 1; }
	sed -i "s#^$1 = \"$2\"#$1 = \"$3\"#" "$cfg.tmp"
}
cp "$etc/relayguard.toml" "$cfg.tmp"
subst directory /etc/relayguard/directory.toml "$etc/directory.toml"
subst database /var/lib/relayguard/country.mmdb "$(cd "$var" && pwd)/country.mmdb"
subst dir /var/lib/relayguard/state "$(cd "$var" && pwd)/state"
subst socket /run/relayguard/admin.sock "$(cd "$var" && pwd)/admin.sock"
subst spool_dir /var/lib/relayguard/spool "$(cd "$var" && pwd)/spool"
mv "$cfg.tmp" "$cfg"

"$bin" check-config --config "$cfg"
echo "policyd: policy service 127.0.0.1:10040, milter 127.0.0.1:10041, Dovecot auth policy 127.0.0.1:10042,"
echo "  admin socket $var/admin.sock (e.g. $bin blocks --socket $var/admin.sock)."
echo "contentfilter: 127.0.0.1:10025, next hop 127.0.0.1:10026; it asks clamd on 127.0.0.1:3310 and"
echo "  rspamd on 127.0.0.1:11333 (without them, messages are deferred or pass unscanned, as configured)."
echo "Ctrl-C stops both."
"$bin" policyd --config "$cfg" &
policyd=$!
"$bin" contentfilter --config "$cfg" &
filter=$!
trap 'kill -TERM $policyd $filter 2>/dev/null; wait' INT TERM
wait -n $policyd $filter
status=$?
kill -TERM $policyd $filter 2>/dev/null
wait
exit $status
