#!/usr/bin/env bash
# What idle TCP connections cost geolb: its RSS with 0 connections, with N
# open connections (each answered one query, then idle), and after they
# close. Runs benches/static.toml's zone on 127.0.0.1:$PORT.
#   BIN=target/release/geolb N=1000 benches/tcp_rss.sh
set -euo pipefail
cd "$(dirname "$0")"
BIN=${BIN:-../target/release/geolb}
N=${N:-1000}
PORT=${PORT:-5313}
ulimit -n $((N + 256))
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
cp example.com.zone "$dir/"
cat >"$dir/geolb.toml" <<CONF
[server]
dns = ["127.0.0.1:$PORT"]
admin_enabled = false
udp_workers = 1
tcp_idle_timeout = "600s"
tcp_max_connections = $((N + 100))
tcp_max_connections_per_client = $((N + 100))

[zones."example.com"]
file = "example.com.zone"
CONF
"$BIN" serve --config "$dir/geolb.toml" 2>/dev/null &
pid=$!
sleep 1.5
rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
# www.example.com A, framed (RFC 7766): length 33, then the message.
q='\x00\x21\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01'
base=$(rss)
echo "0 connections: RSS ${base} KiB"
fds=()
for ((i = 0; i < N; i++)); do
    exec {fd}<>"/dev/tcp/127.0.0.1/$PORT"
    printf "$q" >&"$fd"
    dd bs=512 count=1 status=none <&"$fd" >/dev/null
    fds+=("$fd")
done
sleep 1
open=$(rss)
echo "$N idle connections: RSS ${open} KiB ($(((open - base) * 1024 / N)) bytes per connection)"
for fd in "${fds[@]}"; do exec {fd}>&-; done
sleep 1.5
echo "after they close: RSS $(rss) KiB"
