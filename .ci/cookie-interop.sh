#!/usr/bin/env bash
# DNS cookies against other implementations' clients: dig (BIND) and kdig
# (Knot) each learn geolb's server cookie, send it back, and geolb counts
# every second query as carrying a valid one. Needs target/debug/geolb
# (cargo test builds it) and installs dig/kdig when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v dig >/dev/null || ! command -v kdig >/dev/null; then
  apt-get update -qq && apt-get install -y -qq dnsutils knot-dnsutils >/dev/null
fi
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cp zones/*.zone "$dir/"
cat > "$dir/g.toml" <<TOML
[server]
dns = ["127.0.0.1:25353"]
admin = "127.0.0.1:28053"
udp_workers = 1
[zones."example.com"]
file = "example.com.zone"
[cookies]
enabled = true
TOML
target/debug/geolb serve --config "$dir/g.toml" >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 50); do dig +short +tries=1 +time=1 @127.0.0.1 -p 25353 example.com SOA >/dev/null 2>&1 && break; sleep 0.2; done
q=(@127.0.0.1 -p 25353 example.com SOA)
c=$(dig +cookie "${q[@]}" | awk '/; COOKIE:/ {print $3}' || true) 
[ "${#c}" = 48 ] || { echo "dig: no server cookie in the reply"; exit 1; }
dig +cookie="$c" "${q[@]}" | grep -q 'COOKIE: .* (good)' || { echo "dig: the renewed cookie is not good"; exit 1; }
k=$(kdig +cookie "${q[@]}" | awk '/COOKIE:/ {print $3}' || true)
[ "${#k}" = 48 ] || { echo "kdig: no server cookie in the reply"; exit 1; }
kdig +cookie="$k" "${q[@]}" | grep -q 'status: NOERROR' || { echo "kdig: the second query failed"; exit 1; }
valid=$(curl -s 127.0.0.1:28053/v1/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["cookies"]["valid"])')
[ "$valid" -ge 2 ] || { echo "geolb counted $valid valid server cookies, want 2 (dig's and kdig's)"; exit 1; }
echo "cookie interop: dig and kdig learned and returned a valid server cookie"
