#!/usr/bin/env bash
# What the status page's live map costs a node: GET /v1/map.svg over a
# synthetic City database of N /24 networks in 30 countries — the first
# drawing (the walk, kept), the same again (kept drawing), a conditional
# request (304), a drain (a new drawing from the kept walk), 20 requests at
# once after another change (one drawing shared) — with the node's RSS
# before the first request and after.
#   cargo build --release --bin geolb --example build_geoip
#   BIN=target/release/geolb N=300000 benches/page_map.sh
set -euo pipefail
BIN=$(realpath "${BIN:-$(dirname "$0")/../target/release/geolb}")
BUILD=$(realpath "${BUILD:-$(dirname "$BIN")/examples/build_geoip}")
cd "$(dirname "$0")"
N=${N:-300000}
PORT=${PORT:-28153}
dir=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
cp example.com.zone "$dir/"
awk -v n="$N" 'BEGIN {
  split("EU DE 51 10|EU FR 46 2|EU GB 54 -2|EU IT 42 12|EU ES 40 -4|EU PL 52 19|EU SE 62 15|EU NL 52 5|NA US 39 -98|NA CA 56 -106|NA MX 23 -102|SA BR -10 -55|SA AR -34 -64|SA CL -30 -71|SA CO 4 -72|AS JP 36 138|AS CN 35 103|AS IN 21 78|AS KR 36 128|AS ID -2 118|AS TH 15 101|AS VN 16 107|OC AU -25 133|OC NZ -41 174|AF ZA -29 24|AF NG 9 8|AF EG 27 30|AF KE 0 38|EU RU 60 90|AS TR 39 35", c, "|");
  srand(7); print "layout = \"geoip2\"";
  for (i = 0; i < n; i++) {
    split(c[int(rand() * 30) + 1], f, " ");
    printf "[[network]]\ncidr = \"%d.%d.%d.0/24\"\ncontinent = \"%s\"\ncountry = \"%s\"\ncity = \"c\"\nlocation = [%.2f, %.2f]\n",
      11 + int(i / 65536), int(i / 256) % 256, i % 256, f[1], f[2], f[3] + rand() * 8 - 4, f[4] + rand() * 12 - 6;
  }
}' >"$dir/city.toml"
"$BUILD" "$dir/city.toml" "$dir/city.mmdb"
cat >"$dir/geolb.toml" <<CONF
[server]
dns = ["127.0.0.1:$((PORT + 1))"]
admin = "127.0.0.1:$PORT"
udp_workers = 1

[geoip]
city = "city.mmdb"

[regions]
eu = { location = [50.1, 8.7] }
us = { location = [39.0, -77.5] }
ap = { location = [35.7, 139.7] }

[pools]
eu-web = { region = "eu", endpoints = [{ address = "10.1.0.1" }] }
us-web = { region = "us", endpoints = [{ address = "10.2.0.1" }] }
ap-web = { region = "ap", endpoints = [{ address = "10.3.0.1" }] }

[zones."example.com"]
file = "example.com.zone"

[zones."example.com".services.app]
pools = ["eu-web", "us-web", "ap-web"]
chain = ["healthy", "geo", "failover", "first_n"]
first_n = 1
geo = { default = ["eu", "us"], continent = { NA = ["us", "eu"], SA = ["us", "eu"], AS = ["ap", "us"], OC = ["ap", "us"] } }
CONF
"$BIN" serve --config "$dir/geolb.toml" 2>/dev/null &
pid=$!
api="http://127.0.0.1:$PORT"
for _ in $(seq 50); do curl -sf "$api/v1/ready" >/dev/null && break; sleep 0.2; done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
get() {
    curl -s -o /dev/null -D - -w 'wall %{time_total}s\n' "$@" "$api/v1/map.svg" |
        awk 'tolower($1) ~ /^(http|x-geolb-map-walked|x-geolb-map-walk-ms|x-geolb-map-draw-ms|wall)/ {printf "%s %s  ", $1, $2} END {print ""}'
}
echo "RSS before the first map: $(rss) KiB"
echo "first:       $(get)"
echo "again:       $(get)"
etag=$(curl -sI "$api/v1/map.svg" | awk 'tolower($1) == "etag:" {print $2}' | tr -d '\r')
echo "If-None-Match: $(get -H "If-None-Match: $etag")"
curl -s -X POST -d '{"target": "eu", "for": "10m"}' "$api/v1/drain" >/dev/null
echo "eu drained:  $(get)"
echo "RSS with the walk kept: $(rss) KiB"
curl -s -X POST -d '{"target": "us", "for": "10m"}' "$api/v1/drain" >/dev/null
echo "us drained too, 20 requests at once (one drawing: the same draw time):"
for _ in $(seq 20); do get & done | sed 's/wall.*//' | sort | uniq -c
