#!/usr/bin/env bash
# Side-by-side load test of geolb and its peers on one machine, with the
# project's own load generator (examples/loadgen.rs). The server is pinned to
# CPU 0, the load generator to CPU 1; each pair runs back to back, so read
# the ratios, not the absolute numbers (shared machines are noisy).
#
#   benches/run.sh                 # geolb alone: static, negatives, geo (needs GeoLite2-City, see below)
#   PEERS="gdnsd nsd" benches/run.sh   # plus gdnsd (geo, static) and NSD (static) when installed
#   SCALING=1 benches/run.sh       # plus 1 vs 2 UDP workers (see the scaling section below)
#   RELOAD=1 benches/run.sh        # plus geo throughput under a reload / GeoIP swap every second
#   FIXED=50000 benches/run.sh     # plus server CPU per query and mean latency at that rate (dnsperf)
#
# The City database is not shipped: the 2018 GeoLite2-City snapshot published on
# PyPI is fetched into geoip/GeoLite2-City.mmdb (with pip or curl).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10}
PEERS=${PEERS:-}
RUN=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$RUN"' EXIT

if [ ! -f geoip/GeoLite2-City.mmdb ]; then
  echo "fetching GeoLite2-City (2018) from PyPI into geoip/ ..."
  mkdir -p "$RUN/dl"
  if command -v pip >/dev/null; then
    pip download --no-deps maxminddb-geolite2==2018.703 -d "$RUN/dl" -q
  elif command -v curl >/dev/null; then
    url=$(curl -fsS https://pypi.org/simple/maxminddb-geolite2/ |
      grep -o 'https://[^"#]*maxminddb[-_]geolite2-2018.703.tar.gz' | head -1)
    curl -fsSL -o "$RUN/dl/maxminddb-geolite2-2018.703.tar.gz" "$url"
  else
    echo "need pip or curl to fetch GeoLite2-City; or put a City database at geoip/GeoLite2-City.mmdb" >&2
    exit 1
  fi
  tar xzf "$RUN"/dl/maxminddb-geolite2-*.tar.gz -C "$RUN/dl"
  cp "$RUN"/dl/maxminddb-geolite2-*/_maxminddb_geolite2/GeoLite2-City.mmdb geoip/
fi
cargo build --release --bin geolb --example loadgen
GEOLB=target/release/geolb
LOAD=target/release/examples/loadgen

wait_up() { # port
  for _ in $(seq 1 100); do
    "$LOAD" "127.0.0.1:$1" positive 1 1 1 2>/dev/null | grep -q 'recv=[1-9]' && return 0
    sleep 0.2
  done
  echo "server on port $1 did not answer" >&2; return 1
}
load() { # port mix
  taskset -c 1 "$LOAD" "127.0.0.1:$1" "$2" "$SECS" | sed -n 's/.*qps=\([0-9]*\).*/\1/p'
}
serve() { # name port command...
  local port=$2; shift 2
  taskset -c 0 "$@" >"$RUN/server.log" 2>&1 &
  SERVER=$!
  wait_up "$port"
}
stop() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; sleep 0.5; }
cpu_ticks() { # utime + stime of a process and its descendants (NSD forks its servers)
  local t=0 p
  for p in $1 $(pgrep -P "$1"); do
    [ "$p" = "$1" ] || { t=$((t + $(cpu_ticks "$p"))); continue; }
    # Fields after the command name, which may hold spaces ("nsd: main").
    t=$((t + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0)))
  done
  echo "$t"
}

declare -A QPS
serve geolb 5312 "$GEOLB" serve --config benches/geo.toml
for mix in static positive nxdomain nodata geo-ecs; do QPS[geolb,$mix]=$(load 5312 $mix); done
grep -o 'geo decisions compiled.*' "$RUN/server.log" | head -1 || true
echo "geolb RSS: $(ps -o rss= -p "$SERVER") KiB"
stop

# Fixed rate: the static mix (200 hosts, 10 % NXDOMAIN) at $FIXED queries per
# second with dnsperf; server CPU per query from /proc (utime + stime of the
# whole process) and dnsperf's mean latency.
fixed() { # name port
  [ -n "${FIXED:-}" ] || return 0
  command -v dnsperf >/dev/null || { echo "fixed rate: dnsperf not installed"; return 0; }
  if [ ! -f "$RUN/static.txt" ]; then
    { for i in $(seq 1 900); do echo "host$(( (i * 7) % 200 + 1 )).example.com A"; done
      for i in $(seq 1 100); do echo "nx$i.example.com A"; done
    } | shuf --random-source=<(yes) >"$RUN/static.txt"
  fi
  local t0 t1 out
  t0=$(cpu_ticks "$SERVER")
  out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$2" -d "$RUN/static.txt" -l "$SECS" -c 4 -q 100 -Q "$FIXED" 2>&1)
  t1=$(cpu_ticks "$SERVER")
  echo "$out" | awk -v n="$1" -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '
    /Queries completed/ { q = $3 } /Average Latency/ { lat = $4 * 1e6 }
    END { if (q > 0) printf "fixed: %-6s %d queries, %.2f us server CPU per query, %.0f us mean latency\n", n, q, 1e6 * t / hz / q, lat }'
}
serve geolb 5312 "$GEOLB" serve --config benches/geo.toml
fixed geolb 5312
stop

for peer in $PEERS; do
  case $peer in
    gdnsd)
      command -v gdnsd >/dev/null || { echo "gdnsd not installed"; continue; }
      d=$RUN/gdnsd; mkdir -p "$d/config/zones" "$d/config/geoip" "$d/run" "$d/state"
      sed "s|edns_client_subnet => true|edns_client_subnet => true\n  run_dir => $d/run\n  state_dir => $d/state|" benches/peers/gdnsd/config >"$d/config/config"
      cp benches/example.com.zone "$d/config/zones/example.com"
      echo 'geo 60 DYNA geoip!geo_www' >>"$d/config/zones/example.com"
      ln -sf "$PWD/geoip/GeoLite2-City.mmdb" "$d/config/geoip/City.mmdb"
      serve gdnsd 5311 gdnsd -c "$d/config" start
      for mix in static geo-ecs; do QPS[gdnsd,$mix]=$(load 5311 $mix); done
      fixed gdnsd 5311
      stop ;;
    nsd)
      command -v nsd >/dev/null || { echo "nsd not installed"; continue; }
      d=$RUN/nsd; mkdir -p "$d"
      cp benches/example.com.zone "$d/"
      sed "s|RUNDIR|$d|g" benches/peers/nsd.conf >"$d/nsd.conf"
      serve nsd 5311 nsd -d -c "$d/nsd.conf"
      QPS[nsd,static]=$(load 5311 static)
      fixed nsd 5311
      stop ;;
  esac
done

printf '%-10s %-10s %10s\n' server mix qps
for k in "${!QPS[@]}"; do printf '%-10s %-10s %10s\n' "${k%%,*}" "${k#*,}" "${QPS[$k]}"; done | sort
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo "negative/positive: NXDOMAIN $(ratio "${QPS[geolb,nxdomain]}" "${QPS[geolb,positive]}"), NODATA $(ratio "${QPS[geolb,nodata]}" "${QPS[geolb,positive]}")"
[ -n "${QPS[gdnsd,geo-ecs]:-}" ] && echo "geo-ecs geolb/gdnsd: $(ratio "${QPS[geolb,geo-ecs]}" "${QPS[gdnsd,geo-ecs]}")"
[ -n "${QPS[gdnsd,static]:-}" ] && echo "static geolb/gdnsd: $(ratio "${QPS[geolb,static]}" "${QPS[gdnsd,static]}")"
[ -n "${QPS[nsd,static]:-}" ] && echo "static geolb/nsd: $(ratio "${QPS[geolb,static]}" "${QPS[nsd,static]}")"

# Scaling: 1 UDP worker on CPU 0 (load on CPU 1), then 2 workers on CPUs 0-1
# with the load generator on the same two CPUs (a 2-core machine has no third
# core for it). Throughput is then bounded by the load generator, so the
# figure that shows scaling is queries per second per core of server CPU
# actually used (from /proc utime+stime): equal per-core rates mean the
# workers add throughput in proportion to the cores they get.
# Reloads under full load: the geo mix with a SIGHUP every second, and with
# the City database replaced every second (renamed over, as geoipupdate
# does; two hard links alternate so the swap itself costs nothing), each
# bracketed by runs without either.
if [ -n "${RELOAD:-}" ]; then
  d=$RUN/reload; mkdir -p "$d"
  cp geoip/GeoLite2-City.mmdb "$d/City.a"; cp "$d/City.a" "$d/City.b"; ln "$d/City.a" "$d/City.mmdb"
  cp benches/example.com.zone "$d/"
  sed 's|^city = .*|city = "City.mmdb"\nwatch_interval = "1s"|' benches/geo.toml >"$d/geo.toml"
  serve geolb 5312 "$GEOLB" serve --config "$d/geo.toml"
  every_second() { # command...
    for i in $(seq 1 "$SECS"); do sleep 1; "$@" "$i"; done }
  hup() { kill -HUP "$SERVER"; }
  swap() { if [ $(($1 % 2)) -eq 0 ]; then f=City.a; else f=City.b; fi
           ln -f "$d/$f" "$d/City.tmp" && mv -f "$d/City.tmp" "$d/City.mmdb"; }
  b1=$(load 5312 geo-ecs)
  every_second hup & bg=$!; r=$(load 5312 geo-ecs); wait $bg
  b2=$(load 5312 geo-ecs)
  every_second swap & bg=$!; g=$(load 5312 geo-ecs); wait $bg
  b3=$(load 5312 geo-ecs)
  stop
  echo "reload: geo-ecs without: $b1 $b2 $b3 qps"
  echo "reload: SIGHUP every second: $r qps ($(ratio "$r" $(((b1 + b2) / 2))) of the runs around it), $(grep -c 'reload succeeded' "$RUN/server.log") reloads logged"
  echo "reload: GeoIP swap every second: $g qps ($(ratio "$g" $(((b2 + b3) / 2))) of the runs around it), $(grep -c 'GeoIP database reloaded' "$RUN/server.log") swaps applied"
fi

if [ -n "${SCALING:-}" ]; then
  hz=$(getconf CLK_TCK)
  for spec in "1 0 1" "2 0,1 0,1"; do
    set -- $spec
    taskset -c "$2" "$GEOLB" serve --config benches/geo.toml --udp-workers "$1" >"$RUN/server.log" 2>&1 &
    SERVER=$!
    wait_up 5312
    t0=$(cpu_ticks "$SERVER")
    q=$(taskset -c "$3" "$LOAD" 127.0.0.1:5312 static "$SECS" 16 64 | sed -n 's/.*qps=\([0-9]*\).*/\1/p')
    t1=$(cpu_ticks "$SERVER")
    stop
    awk -v w="$1" -v q="$q" -v t=$((t1 - t0)) -v hz="$hz" -v s="$SECS" 'BEGIN {
      cores = t / hz / s
      printf "scaling: %d worker(s): %d qps, %.2f server cores, %.0f qps per server core\n", w, q, cores, q / cores }'
  done
fi
true
