#!/usr/bin/env bash
# Side-by-side load test of geolb and its peers on one machine, with the
# project's own load generator (examples/loadgen.rs). The server is pinned to
# CPU 0, the load generator to CPU 1; each pair runs back to back, so read
# the ratios, not the absolute numbers (shared machines are noisy).
#
#   benches/run.sh                 # geolb alone: static, positive, NXDOMAIN, NODATA, geo (needs GeoLite2-City, see below)
#   PEERS="gdnsd nsd" benches/run.sh   # plus paired runs against gdnsd (geo, static) and NSD (static) when installed
#   FIXED=50000 benches/run.sh     # plus server CPU per query and mean latency at that rate (dnsperf)
#   SCALING=1 benches/run.sh       # plus 1 core vs 2 cores (see the scaling section below)
#   RELOAD=1 benches/run.sh        # plus geo throughput under a reload / GeoIP swap every second
#   ABUSE=1 benches/run.sh         # plus the abuse defences: static QPS with RRL / cookies on against off (dnsperf),
#                                  # geo + ECS QPS with both on against off and against Knot with its own on,
#                                  # and legitimate clients' answers under a reflection flood (see that section)
#   ALONE=0 ABUSE=1 benches/run.sh # only that (ALONE=0 skips the geolb-alone mixes); ABUSE="geo flood" picks parts
#                                  # (needs dig, dnsperf, jq, curl, and for geo: apt-get install knot knot-module-geoip)
#   GEOLB=/path/geolb LOAD=/path/loadgen benches/run.sh   # measure a given build (no cargo build)
#
# REPS (default 3) rounds of every throughput mix, PAIRS (default 5) pairs of
# fixed-rate runs, SECS (default 10) seconds each. Against a peer both servers
# run side by side on CPU 0 and the runs alternate (geolb first, then the
# peer first, ...), so a drift in the machine's speed falls on both alike;
# each pair gives a ratio geolb/peer, reported as the geometric mean of the
# ratios with a 95 % confidence interval (Student's t over the log ratios).
#
# The City database is not shipped: the 2018 GeoLite2-City snapshot published on
# PyPI is fetched into geoip/GeoLite2-City.mmdb (with pip or curl).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10}
REPS=${REPS:-3}
PAIRS=${PAIRS:-5}
PEERS=${PEERS:-}
RUN=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$RUN"' EXIT
# shellcheck source=benches/lib.sh
. benches/lib.sh

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
# GEOLB=path/to/geolb measures that binary instead of building this tree's
# (e.g. two builds against the same peer, one run after the other).
if [ -z "${GEOLB:-}" ] || [ -z "${LOAD:-}" ]; then
  cargo build --release --bin geolb --example loadgen --example knot_geo
fi
GEOLB=${GEOLB:-target/release/geolb}
LOAD=${LOAD:-target/release/examples/loadgen}
KNOT_GEO=${KNOT_GEO:-target/release/examples/knot_geo}

wait_up() { # port
  for _ in $(seq 1 100); do
    "$LOAD" "127.0.0.1:$1" positive 1 1 1 2>/dev/null | grep -q 'recv=[1-9]' && return 0
    sleep 0.2
  done
  echo "server on port $1 did not answer" >&2; return 1
}
# Its output line goes to $RUN/load.log too, after $TAG when set.
load() { # port mix [loadgen options...]
  local port=$1 mix=$2 out; shift 2
  out=$(taskset -c 1 "$LOAD" "127.0.0.1:$port" "$mix" "$SECS" "$@")
  echo "${TAG:-} $out" >>"$RUN/load.log"
  echo "$out" | sed -n 's/.*qps=\([0-9]*\).*/\1/p'
}
# One throughput run against a server: "qps busy", busy being the share of
# the run's wall time the server's threads were on a CPU.
load_busy() { # pid port mix [loadgen options...]
  local pid=$1 t0 t1 w0 w1 q; shift
  t0=$(cpu_ns "$pid"); w0=$(date +%s%N)
  q=$(load "$@")
  w1=$(date +%s%N); t1=$(cpu_ns "$pid")
  awk -v q="$q" -v c=$((t1 - t0)) -v w=$((w1 - w0)) 'BEGIN { printf "%d %.3f\n", q, (w > 0 ? c / w : 0) }'
}
serve() { # name port command...
  local name=$1 port=$2; shift 2
  taskset -c 0 "$@" >"$RUN/$name.log" 2>&1 &
  SERVER=$!
  wait_up "$port"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# geolb alone: every mix REPS times, the order rotating from round to round.
# ALONE=0 skips this part (to run only the sections asked for below).
mixes="static positive nxdomain nodata geo-ecs"
if [ "${ALONE:-1}" != 0 ]; then
serve geolb 5312 "$GEOLB" serve --config benches/geo.toml
declare -A ALONE
: >"$RUN/negatives"
for rep in $(seq 1 "$REPS"); do
  declare -A got=()
  set -- $mixes; for _ in $(seq 2 "$rep"); do set -- "${@:2}" "$1"; done
  for mix in "$@"; do got[$mix]=$(load 5312 "$mix"); ALONE[$mix]="${ALONE[$mix]:-} ${got[$mix]}"; done
  echo "${got[nxdomain]} ${got[positive]} ${got[nodata]}" >>"$RUN/negatives"
done
grep -o 'geo decisions compiled.*' "$RUN/geolb.log" | head -1 || true
echo "geolb RSS after the runs: $(ps -o rss= -p "$SERVER") KiB"
stop "$SERVER"
for mix in $mixes; do echo "geolb alone: $mix $(echo "${ALONE[$mix]}" | median) qps (median of $(echo "${ALONE[$mix]}" | wc -w | tr -d ' '):${ALONE[$mix]})"; done
awk '{ print $1, $2 }' "$RUN/negatives" | paired "NXDOMAIN-only / positive-only QPS" 0 NXDOMAIN
awk '{ print $3, $2 }' "$RUN/negatives" | paired "NODATA-only / positive-only QPS" 0 NODATA
fi

static_mix() { # the fixed-rate query file: 200 hosts, 10 % NXDOMAIN
  [ -f "$RUN/static.txt" ] && return 0
  { for i in $(seq 1 900); do echo "host$(( (i * 7) % 200 + 1 )).example.com A"; done
    for i in $(seq 1 100); do echo "nx$i.example.com A"; done
  } | shuf --random-source=<(yes) >"$RUN/static.txt"
}
# One dnsperf run against a server with the static query file:
# "server_us_per_query mean_latency_us qps".
dnsperf_once() { # pid port dnsperf-options...
  local pid=$1 port=$2 t0 t1 out; shift 2
  t0=$(cpu_ns "$pid")
  out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$RUN/static.txt" -l "$SECS" "$@" 2>&1)
  t1=$(cpu_ns "$pid")
  echo "$out" | awk -v t=$((t1 - t0)) '
    /Queries completed/ { q = $3 } /Average Latency/ { lat = $4 * 1e6 } /Queries per second/ { qps = $4 }
    END { if (q > 0) printf "%.3f %.1f %d\n", t / 1e3 / q, lat, qps; else print "0 0 0" }'
}
# One fixed-rate run: "server_us_per_query mean_latency_us".
fixed_once() { dnsperf_once "$1" "$2" -c 4 -q 100 -Q "$FIXED" | cut -d' ' -f1,2; }
if [ -n "${FIXED:-}" ] && ! command -v dnsperf >/dev/null; then
  echo "fixed rate: dnsperf not installed, skipped"; FIXED=
fi
if [ -n "${FIXED:-}" ]; then
  static_mix
  serve geolb 5312 "$GEOLB" serve --config benches/geo.toml
  fixed_once "$SERVER" 5312 >/dev/null # warm-up
  r=$(fixed_once "$SERVER" 5312)
  echo "geolb alone: fixed $FIXED qps: ${r% *} us server CPU per query, ${r#* } us mean latency"
  stop "$SERVER"
fi

# A peer's command line on port 5311 (configs from benches/peers/), or
# nothing when it is not installed.
peer_cmd() { # name
  local d
  case $1 in
    gdnsd)
      command -v gdnsd >/dev/null || return 0
      d=$RUN/gdnsd; mkdir -p "$d/config/zones" "$d/config/geoip" "$d/run" "$d/state"
      sed "s|edns_client_subnet => true|edns_client_subnet => true\n  run_dir => $d/run\n  state_dir => $d/state|" benches/peers/gdnsd/config >"$d/config/config"
      cp benches/example.com.zone "$d/config/zones/example.com"
      echo 'geo 60 DYNA geoip!geo_www' >>"$d/config/zones/example.com"
      ln -sf "$PWD/geoip/GeoLite2-City.mmdb" "$d/config/geoip/City.mmdb"
      echo "gdnsd -c $d/config start" ;;
    nsd)
      command -v nsd >/dev/null || return 0
      d=$RUN/nsd; mkdir -p "$d"
      cp benches/example.com.zone "$d/"
      sed "s|RUNDIR|$d|g" benches/peers/nsd.conf >"$d/nsd.conf"
      echo "nsd -d -c $d/nsd.conf" ;;
    *) echo "unknown peer $1 (gdnsd, nsd)" >&2 ;;
  esac
}

# Against each peer: geolb with the equivalent config (gdnsd serves the geo
# zone, NSD only the static one) and the peer, side by side.
for peer in $PEERS; do
  cmd=$(peer_cmd "$peer")
  [ -n "$cmd" ] || { echo "$peer: not installed, skipped"; continue; }
  case $peer in nsd) conf=benches/static.toml; pmixes="static" ;; *) conf=benches/geo.toml; pmixes="static geo-ecs" ;; esac
  serve geolb 5312 "$GEOLB" serve --config "$conf"; G=$SERVER
  # shellcheck disable=SC2086
  serve "$peer" 5311 $cmd; P=$SERVER
  for mix in $pmixes; do : >"$RUN/$peer.$mix"; done
  for rep in $(seq 1 "$REPS"); do
    for mix in $pmixes; do
      if [ $((rep % 2)) -eq 1 ]; then g=$(load_busy "$G" 5312 "$mix"); p=$(load_busy "$P" 5311 "$mix")
      else p=$(load_busy "$P" 5311 "$mix"); g=$(load_busy "$G" 5312 "$mix"); fi
      echo "$g $p" >>"$RUN/$peer.$mix"
      echo "$peer round $rep: $mix geolb ${g% *} qps (server busy ${g#* }), $peer ${p% *} qps (busy ${p#* })"
    done
  done
  if [ -n "${FIXED:-}" ]; then
    static_mix
    fixed_once "$G" 5312 >/dev/null; fixed_once "$P" 5311 >/dev/null # warm-up
    : >"$RUN/$peer.fixed"
    for i in $(seq 1 "$PAIRS"); do
      if [ $((i % 2)) -eq 1 ]; then g=$(fixed_once "$G" 5312); p=$(fixed_once "$P" 5311)
      else p=$(fixed_once "$P" 5311); g=$(fixed_once "$G" 5312); fi
      echo "$g $p" >>"$RUN/$peer.fixed"
      echo "$peer pair $i at $FIXED qps: geolb ${g% *} us/query ${g#* } us latency; $peer ${p% *} us/query ${p#* } us latency"
    done
  fi
  echo "$peer RSS after the runs, with its child processes: $(for c in "$P" $(pgrep -P "$P"); do ps -o rss= -p "$c"; done | awk '{ t += $1 } END { print t }') KiB"
  stop "$G" "$P"
  for mix in $pmixes; do
    awk '{ print $1, $3 }' "$RUN/$peer.$mix" | paired "$mix QPS, geolb / $peer" 0
    awk '{ print $1 / $2, $3 / $4 }' "$RUN/$peer.$mix" | paired "$mix QPS per second of server CPU, geolb / $peer" 0
    awk '{ g += $2; p += $4; n++ } END { if (n) printf "%s: server busy %.1f %% of each run (geolb), %.1f %% (%s); at 100 %% the server, not the generator, sets the pace\n", m, 100 * g / n, 100 * p / n, peer }' m="$mix" peer="$peer" "$RUN/$peer.$mix"
  done
  if [ -n "${FIXED:-}" ]; then
    awk '{ print $1, $3 }' "$RUN/$peer.fixed" | paired "server CPU per query at $FIXED qps, geolb / $peer" 1
    awk '{ print $2, $4 }' "$RUN/$peer.fixed" | paired "mean latency at $FIXED qps, geolb / $peer" 1
    awk '{ g += $1; gl += $2; p += $3; pl += $4; n++ } END { if (n) printf "means at %s qps: geolb %.2f us/query, %.1f us latency; %s %.2f us/query, %.1f us latency\n", r, g / n, gl / n, peer, p / n, pl / n }' r="$FIXED" peer="$peer" "$RUN/$peer.fixed"
  fi
done

# Reloads under full load: the geo mix with a SIGHUP every second, and with
# the City database replaced every second (renamed over, as geoipupdate
# does; two hard links alternate so the swap itself costs nothing), each
# against the mean of the runs without either just before and after it.
if [ -n "${RELOAD:-}" ]; then
  d=$RUN/reload; mkdir -p "$d"
  cp geoip/GeoLite2-City.mmdb "$d/City.a"; cp "$d/City.a" "$d/City.b"; ln "$d/City.a" "$d/City.mmdb"
  cp benches/example.com.zone "$d/"
  sed 's|^city = .*|city = "City.mmdb"\nwatch_interval = "1s"|' benches/geo.toml >"$d/geo.toml"
  serve geolb 5312 "$GEOLB" serve --config "$d/geo.toml"
  every_second() { # command...: once a second while a run lasts
    local end=$((SECONDS + SECS))
    while sleep 1 && [ "$SECONDS" -lt "$end" ]; do "$@"; echo "$1" >>"$RUN/reload.sent"; done }
  : >"$RUN/reload.sent"
  sent() { grep -cx "$1" "$RUN/reload.sent" || true; }
  hup() { kill -HUP "$SERVER"; }
  swap() { # to whichever copy is not in place now
    if [ "$d/City.mmdb" -ef "$d/City.a" ]; then f=City.b; else f=City.a; fi
    ln -f "$d/$f" "$d/City.tmp" && mv -f "$d/City.tmp" "$d/City.mmdb"; }
  : >"$RUN/reload.hup"; : >"$RUN/reload.swap"
  b=$(load 5312 geo-ecs)
  rss0=$(ps -o rss= -p "$SERVER")
  for rep in $(seq 1 "$REPS"); do
    every_second hup & bg=$!; r=$(load 5312 geo-ecs); wait $bg
    b2=$(load 5312 geo-ecs)
    every_second swap & bg=$!; g=$(load 5312 geo-ecs); wait $bg
    b3=$(load 5312 geo-ecs)
    echo "$r $(((b + b2) / 2))" >>"$RUN/reload.hup"; echo "$g $(((b2 + b3) / 2))" >>"$RUN/reload.swap"
    echo "reload round $rep: without $b, SIGHUP every second $r, without $b2, GeoIP swap every second $g, without $b3 qps"
    b=$b3
  done
  sleep 3 # let a build still in progress finish on the now idle CPU
  swaps=$(grep -c 'GeoIP database reloaded' "$RUN/geolb.log" || true)
  echo "geolb RSS: ${rss0// /} KiB before the reload rounds, $(ps -o rss= -p "$SERVER" | tr -d ' ') KiB after them ($swaps GeoIP swaps)"
  stop "$SERVER"
  paired "geo QPS with a SIGHUP reload every second / without" 0 "with reloads" <"$RUN/reload.hup"
  paired "geo QPS with a GeoIP swap every second / without" 0 "with swaps" <"$RUN/reload.swap"
  echo "reload: $(grep -c 'reload succeeded' "$RUN/geolb.log") reloads for $(sent hup) SIGHUPs and $(grep -c 'GeoIP database reloaded' "$RUN/geolb.log") GeoIP swaps for $(sent swap) new files"
  # gdnsd 3 does not reopen a changed GeoIP file: a new database (or config)
  # takes a `gdnsdctl replace`, a new daemon that loads everything (on the
  # same CPU, inherited) and then takes the sockets over. The same rounds
  # with a replace every second.
  case " $PEERS " in *" gdnsd "*)
    cmd=$(peer_cmd gdnsd)
    if [ -n "$cmd" ] && command -v gdnsdctl >/dev/null; then
      serve gdnsd 5311 $cmd
      ctl="gdnsdctl -c $RUN/gdnsd/config"
      replace() { $ctl replace >>"$RUN/gdnsd.replace.log" 2>&1 || true; }
      : >"$RUN/reload.gdnsd"
      b=$(load 5311 geo-ecs)
      for rep in $(seq 1 "$REPS"); do
        every_second replace & bg=$!; r=$(load 5311 geo-ecs); wait $bg
        b2=$(load 5311 geo-ecs)
        echo "$r $(((b + b2) / 2))" >>"$RUN/reload.gdnsd"
        echo "gdnsd reload round $rep: without $b, gdnsdctl replace every second $r, without $b2 qps"
        b=$b2
      done
      $ctl stop >/dev/null 2>&1 || true
      stop "$SERVER"
      paired "gdnsd geo QPS with a gdnsdctl replace every second / without" 0 "with replaces" <"$RUN/reload.gdnsd"
      echo "gdnsd: $(grep -c 'Exiting cleanly at request of new daemon' "$RUN/gdnsd.log") replaces completed of $(sent replace) requested"
    fi ;;
  esac
fi

# The abuse defences (ABUSE=1 runs all three parts; ABUSE="geo flood"
# names some of them):
#   static  what the defences cost an answer on the static zone (dnsperf)
#   geo     geo + ECS answers with RRL and cookies on against off, and
#           against Knot with its RRL and cookies on (loadgen)
#   flood   legitimate clients' answers under a reflection flood from one /24
# One cookie secret for every server, geolb and Knot alike (both make
# RFC 9018 server cookies), so one server cookie is valid at all of them.
if [ -n "${ABUSE:-}" ]; then
  parts=$ABUSE; [ "$parts" = 1 ] && parts="static geo flood"
  command -v dig >/dev/null || { echo "abuse: needs dig (apt-get install dnsutils)"; exit 1; }
  d=$RUN/abuse; mkdir -p "$d"; cp benches/example.com.zone "$d/"
  secret=e5e973e5a6b2a43f48e7dc849e37bfcf
  echo "$secret" >"$d/cookie.key"
  rrl=$'[rrl]\nenabled = true\nrate = 1000000\n'
  cookies=$'[cookies]\nenabled = true\nsecret_file = "cookie.key"\n'
  # A server cookie for queries from 127.0.0.1 with client cookie
  # 0102030405060708: "client and server cookie" in hex.
  server_cookie() { # port
    local c
    c=$(dig +cookie=0102030405060708 @127.0.0.1 -p "$1" example.com SOA | awk '/; COOKIE:/ {print $3}')
    [ "${#c}" = 48 ] || { echo "abuse: no server cookie from the server on port $1" >&2; return 1; }
    echo "$c"
  }
fi

# What the abuse defences cost an answer: four servers of the static zone
# side by side on CPU 0 — off, [rrl] on (rate 1 000 000/s: nobody is
# limited, every answer is accounted), [cookies] on, both — each loaded by
# dnsperf at full speed with the static query file, every query carrying a
# COOKIE option with a valid server cookie (a server with cookies on
# verifies it and makes a fresh one for each reply; with cookies off the
# option is ignored). REPS rounds, the order rotating; each ratio is taken
# within a round.
if [[ " ${parts:-} " == *" static "* ]]; then
  command -v dnsperf >/dev/null || { echo "abuse: needs dnsperf (apt-get install dnsperf)"; exit 1; }
  static_mix
  { cat benches/static.toml; } >"$d/off.toml"
  { cat benches/static.toml; echo "$rrl"; } >"$d/rrl.toml"
  { cat benches/static.toml; echo "$cookies"; } >"$d/cookies.toml"
  { cat benches/static.toml; echo "$rrl"; echo "$cookies"; } >"$d/both.toml"
  declare -A PORT=([off]=5321 [rrl]=5322 [cookies]=5323 [both]=5324) PID=()
  for v in off rrl cookies both; do
    serve "abuse-$v" "${PORT[$v]}" "$GEOLB" serve --config "$d/$v.toml" --dns "127.0.0.1:${PORT[$v]}"
    PID[$v]=$SERVER
  done
  cookie=$(server_cookie "${PORT[cookies]}")
  # dnsperf at full speed: "qps server_us_per_query".
  flat_out() { dnsperf_once "$1" "$2" -c 4 -q 200 -E "10:$cookie" | awk '{ print $3, $1 }'; }
  for v in off rrl cookies both; do flat_out "${PID[$v]}" "${PORT[$v]}" >/dev/null; done # warm-up
  for v in rrl cookies both; do : >"$RUN/abuse.$v"; done
  for rep in $(seq 1 "$REPS"); do
    declare -A got=()
    set -- off rrl cookies both; for _ in $(seq 2 "$rep"); do set -- "${@:2}" "$1"; done
    for v in "$@"; do got[$v]=$(flat_out "${PID[$v]}" "${PORT[$v]}"); done
    for v in rrl cookies both; do echo "${got[$v]} ${got[off]}" >>"$RUN/abuse.$v"; done
    echo "abuse round $rep: off ${got[off]% *} qps (${got[off]#* } us/query), rrl ${got[rrl]% *} (${got[rrl]#* }), cookies ${got[cookies]% *} (${got[cookies]#* }), both ${got[both]% *} (${got[both]#* })"
  done
  stop "${PID[@]}"
  for v in rrl cookies both; do
    awk '{ print $1, $3 }' "$RUN/abuse.$v" | paired "static QPS with $v on / off" 0 "$v on"
    awk '{ print $2, $4 }' "$RUN/abuse.$v" | paired "server CPU per answer with $v on / off" 1 "$v on"
  done
fi

# Geo + ECS with the defences on: four servers side by side on CPU 0, all
# answering geo.example.com from the full GeoLite2-City by the ECS address —
#   off      geolb, benches/geo.toml
#   both     the same build and config with [rrl] (rate 1 000 000/s, slip 2:
#            nobody is limited) and [cookies] on
#   knot     Knot DNS with mod-cookies and mod-rrl (rate-limit 8000, slip 2:
#            Knot 3.2 keeps a bucket's tokens in 16 bits and adds up to
#            4 s of refill to up to 4 s of allowance before capping, so from
#            a rate of 8192 up the count can wrap and limit far below the
#            rate), edns-client-subnet on, 1 UDP worker, and mod-geoip in
#            geodb mode
#            on the same database: a view per country, subdivision and city,
#            each answering the datacenter nearest to most of its addresses
#            (the file is written by examples/knot_geo.rs)
#   knotnet  the same Knot with mod-geoip in subnet mode: the database's IPv4
#            networks joined into runs of one nearest datacenter and cut
#            into CIDR blocks (knot_geo --subnet), so Knot, like geolb,
#            answers from a table compiled ahead rather than reading the
#            database per query, with geolb's answer for every address
# — each loaded in turn by loadgen's geo-ecs mix at full speed from
# 127.0.0.1, every query carrying the same valid server cookie ("-cookie");
# then off, both and knot again with queries without a cookie ("-none"),
# so that RRL accounts every answer (a valid cookie exempts a query from
# RRL, in Knot as in geolb), sent from 32 client /24s (127.0.1.1 to
# 127.0.32.1, 32 sockets × 8 queries in flight) so that no prefix comes
# near Knot's rate. REPS rounds, the order rotating; ratios within rounds.
# The replies with TC=1 and the generator's stalls (200 ms without a
# reply) over the measured runs are printed: both 0 when nobody was limited.
if [[ " ${parts:-} " == *" geo "* ]]; then
  command -v knotd >/dev/null && ls /usr/lib/*/knot/modules-*/geoip.so >/dev/null 2>&1 ||
    { echo "abuse geo: needs Knot DNS and its geoip module (apt-get install knot knot-module-geoip)"; exit 1; }
  knot_version=$(knotd --version | head -1)
  g=$RUN/abuse-geo; mkdir -p "$g"
  cp benches/example.com.zone "$g/"; cp "$d/cookie.key" "$g/"
  sed "s|^city = .*|city = \"$PWD/geoip/GeoLite2-City.mmdb\"|" benches/geo.toml >"$g/off.toml"
  { cat "$g/off.toml"; echo "${rrl}slip = 2"; echo "$cookies"; } >"$g/both.toml"
  [ -x "$KNOT_GEO" ] || cargo build --release --example knot_geo
  dcs="38.9,-77.0=192.0.2.101 50.1,8.7=192.0.2.102 1.35,103.8=192.0.2.103 37.4,-122.1=192.0.2.104"
  # A Knot server on PORT in DIR, mod-geoip in MODE: the zone with a
  # default geo record (the first datacenter, what geolb answers a client
  # it cannot locate) and the response file.
  knot_server() { # dir port mode
    mkdir -p "$1"
    { cat benches/example.com.zone; echo 'geo 60 IN A 192.0.2.101'; } >"$1/example.com.zone"
    # shellcheck disable=SC2086
    "$KNOT_GEO" $([ "$3" = subnet ] && echo --subnet) geoip/GeoLite2-City.mmdb geo.example.com $dcs >"$1/geo.conf"
    cat >"$1/knot.conf" <<KNOT
server:
    listen: 127.0.0.1@$2
    rundir: $1
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    edns-client-subnet: on
database:
    storage: $1/db
mod-cookies:
  - id: bench
    secret: 0x$secret
mod-rrl:
  - id: bench
    rate-limit: 8000
    slip: 2
mod-geoip:
  - id: geo
    config-file: $1/geo.conf
    ttl: 60
    mode: $3
    geodb-file: $PWD/geoip/GeoLite2-City.mmdb
    geodb-key: [ country/iso_code, subdivisions/0/iso_code, (id)city/geoname_id ]
template:
  - id: default
    storage: $1
    zonefile-sync: -1
    journal-content: none
    global-module: [ mod-cookies/bench, mod-rrl/bench ]
zone:
  - domain: example.com
    file: example.com.zone
    module: mod-geoip/geo
KNOT
    serve "knot-$3" "$2" knotd -c "$1/knot.conf"
  }
  declare -A GPORT=([off]=5331 [both]=5332 [knot]=5333 [knotnet]=5334) GPID=()
  for v in off both; do
    serve "geo-$v" "${GPORT[$v]}" "$GEOLB" serve --config "$g/$v.toml" --dns "127.0.0.1:${GPORT[$v]}"
    GPID[$v]=$SERVER
  done
  knot_server "$g/knot" 5333 geodb; GPID[knot]=$SERVER
  knot_server "$g/knotnet" 5334 subnet; GPID[knotnet]=$SERVER
  cookie=$(server_cookie "${GPORT[both]}")
  kc=$(dig +cookie="$cookie" @127.0.0.1 -p 5333 example.com SOA | grep -c 'COOKIE: .* (good)' || true)
  [ "$kc" = 1 ] || { echo "abuse geo: Knot does not take geolb's server cookie"; exit 1; }
  # Same answers? A sample of the geo-ecs mix's kind of query (random /24s)
  # asked of geolb and of each Knot.
  for i in $(seq 1 "${AGREE:-500}"); do
    echo "+short +subnet=$((RANDOM % 223 + 1)).$((RANDOM % 256)).$((RANDOM % 256)).0/24 geo.example.com A"
  done >"$g/sample"
  dig -p 5331 @127.0.0.1 -f "$g/sample" >"$g/sample.geolb"
  for v in knot knotnet; do
    agree=$(paste -d' ' "$g/sample.geolb" <(dig -p "${GPORT[$v]}" @127.0.0.1 -f "$g/sample") |
      awk '{ n++; s += ($1 == $2 && $1 != ""); a[$1]++ } END {
        printf "%d of %d (geolb answered:", s, n; for (k in a) printf " %s %d", k, a[k]; printf ")" }')
    echo "geo answers: $v's equal geolb's for $agree random client /24s"
  done
  echo "Knot: $knot_version"
  many=$(seq 1 32 | sed 's/.*/127.0.&.1/' | paste -sd,)
  geo_load() { # server-cookie|server-none: "qps busy"
    local o=(4 64 --cookie "$cookie")
    [ "${1#*-}" = none ] && o=(32 8 --source "$many")
    TAG=$1 load_busy "${GPID[${1%-*}]}" "${GPORT[${1%-*}]}" geo-ecs "${o[@]}"
  }
  runs="off-cookie both-cookie knot-cookie knotnet-cookie off-none both-none knot-none"
  for v in $runs; do geo_load "$v" >/dev/null; done # warm-up
  : >"$RUN/abuse.geo"; : >"$RUN/load.log"
  for rep in $(seq 1 "$REPS"); do
    declare -A got=()
    set -- $runs; for _ in $(seq 2 "$rep"); do set -- "${@:2}" "$1"; done
    for v in "$@"; do got[$v]=$(geo_load "$v"); done
    line=""; for v in $runs; do line="$line ${got[$v]}"; done
    echo "$line" >>"$RUN/abuse.geo"
    echo "abuse geo round $rep (qps, server busy):$(for v in $runs; do printf ' %s %s (%s);' "$v" "${got[$v]% *}" "${got[$v]#* }"; done)"
  done
  stop "${GPID[@]}"
  # Columns (qps, busy): off-cookie 1 2, both-cookie 3 4, knot-cookie 5 6,
  # knotnet-cookie 7 8, off-none 9 10, both-none 11 12, knot-none 13 14.
  geo_ratio() { # label column-a column-b who
    awk -v a="$2" -v b="$3" '{ print $a, $b }' "$RUN/abuse.geo" | paired "geo+ECS QPS, $1" 0 "$4"
    # Answers per second of server CPU: what the server does with the CPU
    # it gets, steadier than QPS when other work takes CPU 0 now and then.
    awk -v a="$2" -v b="$3" '{ print $a / $(a + 1), $b / $(b + 1) }' "$RUN/abuse.geo" |
      paired "geo+ECS QPS per second of server CPU, $1" 0 "$4"
  }
  geo_ratio "RRL + cookies on / off (queries with a valid cookie)" 3 1 on
  geo_ratio "RRL + cookies on / off (queries without a cookie, 32 prefixes)" 11 9 on
  geo_ratio "RRL + cookies on, geolb / Knot geodb (valid cookie)" 3 5 geolb
  geo_ratio "RRL + cookies on, geolb / Knot subnet (valid cookie)" 3 7 geolb
  geo_ratio "RRL + cookies on, geolb / Knot geodb (no cookie, 32 prefixes)" 11 13 geolb
  awk '{ for (i = 2; i <= 14; i += 2) b[i] += $i; n++ } END { if (n) printf "server busy, mean share of each run: off %.1f %%, both %.1f %%, knot %.1f %%, knotnet %.1f %% (valid cookie); off %.1f %%, both %.1f %%, knot %.1f %% (no cookie)\n", 100 * b[2] / n, 100 * b[4] / n, 100 * b[6] / n, 100 * b[8] / n, 100 * b[10] / n, 100 * b[12] / n, 100 * b[14] / n }' "$RUN/abuse.geo"
  awk '{ for (i = 2; i <= NF; i++) { if ($i ~ /^tc=/) t[$1] += substr($i, 4); if ($i ~ /^window_resets=/) r[$1] += substr($i, 15) } }
    END { printf "over the measured geo runs, replies with TC=1 / stalls of the generator (200 ms without a reply; TC=1 replies mean someone was limited):"
      for (k in t) printf " %s %d/%d", k, t[k], r[k]; printf "\n" }' "$RUN/load.log"
fi

# A reflection flood: geolb of the static zone with [rrl] rate = LIMIT
# (default 1000) and slip 2; one flooder from 127.0.9.0/24 sends the same
# query (example.com ANY, what a reflection attack sends in its victim's
# name) at FLOOD (default 10 × LIMIT) queries a second, while legitimate
# clients from PREFIXES (default 8) other /24s (127.0.1.1, 127.0.2.1, ...)
# send the static mix at LEGIT (default 2000) queries a second each: under
# the limit for each name and for NXDOMAIN. Both loads run open loop
# (loadgen --rate) on CPU 1, the server on CPU 0. Each round runs the
# legitimate load alone and with the flood, the order alternating; the
# ratio is of their answered queries per second. The flood's fate comes
# from its replies (full, TC=1) and geolb's /v1/status rrl counters.
if [[ " ${parts:-} " == *" flood "* ]]; then
  command -v jq >/dev/null && command -v curl >/dev/null || { echo "abuse flood: needs jq and curl"; exit 1; }
  LIMIT=${LIMIT:-1000}; FLOOD=${FLOOD:-$((10 * LIMIT))}; PREFIXES=${PREFIXES:-8}; LEGIT=${LEGIT:-2000}
  f=$RUN/abuse-flood; mkdir -p "$f"; cp benches/example.com.zone "$f/"
  { cat benches/static.toml; printf '[rrl]\nenabled = true\nrate = %s\nslip = 2\n' "$LIMIT"; } >"$f/rrl.toml"
  serve flood 5341 "$GEOLB" serve --config "$f/rrl.toml" --dns 127.0.0.1:5341 --admin 127.0.0.1:5342
  src=$(seq 1 "$PREFIXES" | sed 's/.*/127.0.&.1/' | paste -sd,)
  legit() { taskset -c 1 "$LOAD" 127.0.0.1:5341 static "$SECS" "$PREFIXES" --rate $((PREFIXES * LEGIT)) --source "$src"; }
  flood() { taskset -c 1 "$LOAD" 127.0.0.1:5341 any "$SECS" 1 --rate "$FLOOD" --source 127.0.9.1 >"$RUN/flood.out"; }
  field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
  rrl_totals() { curl -fsS http://127.0.0.1:5342/v1/status | jq -r '.rrl | [(.dropped | add), (.slipped | add), .dropped.large, .slipped.large] | @tsv'; }
  legit >/dev/null # warm-up
  : >"$RUN/abuse.flood"; : >"$RUN/abuse.flooder"
  for rep in $(seq 1 "$REPS"); do
    for order in $([ $((rep % 2)) -eq 1 ] && echo "alone flooded" || echo "flooded alone"); do
      if [ "$order" = alone ]; then
        a=$(legit)
      else
        r0=$(rrl_totals)
        flood & fl=$!
        b=$(legit); wait "$fl"
        r1=$(rrl_totals)
      fi
    done
    read -r d0 s0 dl0 sl0 <<<"$r0"; read -r d1 s1 dl1 sl1 <<<"$r1"
    fo=$(cat "$RUN/flood.out")
    echo "$(echo "$b" | field qps) $(echo "$a" | field qps) $(echo "$b" | field answered) $(echo "$a" | field answered)" >>"$RUN/abuse.flood"
    echo "$(echo "$fo" | field sent) $(echo "$fo" | field recv) $(echo "$fo" | field tc) $((dl1 - dl0)) $((sl1 - sl0)) $((d1 - d0 - dl1 + dl0)) $((s1 - s0 - sl1 + sl0))" >>"$RUN/abuse.flooder"
    echo "flood round $rep: legitimate alone $(echo "$a" | field qps) qps answered (share $(echo "$a" | field answered)), under the flood $(echo "$b" | field qps) (share $(echo "$b" | field answered)); flood: sent $(echo "$fo" | field sent), replies $(echo "$fo" | field recv) of which TC $(echo "$fo" | field tc); rrl dropped $((d1 - d0)), slipped $((s1 - s0))"
  done
  stop "$SERVER"
  paired "legitimate clients' answered QPS under a flood from one /24 at $FLOOD qps (${FLOOD}/${LIMIT} of the limit) / without" 0 "under the flood" <"$RUN/abuse.flood"
  awk '{ a += $3; b += $4; n++ } END { if (n) printf "legitimate clients (%s /24s at %s qps each): answered share %.4f under the flood, %.4f without\n", p, l, a / n, b / n }' p="$PREFIXES" l="$LEGIT" "$RUN/abuse.flood"
  awk '{ s += $1; r += $2; t += $3; dl += $4; sl += $5; od += $6; os += $7 } END { if (s) printf "flood: %d queries sent; replies %.1f %% (full %.1f %%, truncated %.1f %%), none %.1f %%; rrl counters over the flooded runs: large dropped %d, slipped %d (%.1f %% of the flood sent: %.1f %% dropped, %.1f %% slipped); other classes dropped %d, slipped %d\n", s, 100 * r / s, 100 * (r - t) / s, 100 * t / s, 100 * (s - r) / s, dl, sl, 100 * (dl + sl) / s, 100 * dl / s, 100 * sl / s, od, os }' "$RUN/abuse.flooder"
fi

# Scaling: one core against two, where each core runs one UDP worker and
# one load generator (in its `block` mode, so the two share the core). A
# 2-core machine has no spare core for the generator, so it is part of what
# each core carries, and two cores should answer twice what one does:
#   1 core   geolb with 1 worker on CPU 0, the generator on CPU 0
#   pinned   geolb with 2 workers on CPUs 0-1 and udp_cpu_affinity (each
#            worker pinned, packets steered to the worker on the CPU that
#            received them), a generator on each CPU
#   hashed   the same 2 workers without affinity: the kernel spreads the
#            packets over the workers by hash, so half cross CPUs
#   procs    two separate geolb processes of one worker each, one per CPU,
#            each loaded by the generator on its CPU: share-nothing, the
#            ideal for two cores here
# The four run back to back in each round, in an order that rotates from
# round to round; every ratio is taken within a round.
if [ -n "${SCALING:-}" ]; then
  SCALE_MIX=${SCALE_MIX:-geo-ecs}
  gen() { # cpu port: one generator, its QPS into $RUN/q.<cpu>
    taskset -c "$1" "$LOAD" "127.0.0.1:$2" "$SCALE_MIX" "$SECS" 4 64 block |
      sed -n 's/.*qps=\([0-9]*\).*/\1/p' >"$RUN/q.$1"
  }
  scale_run() { # one | pinned | hashed | procs: prints the total QPS
    local pids="" total=0 c
    case $1 in
      one) taskset -c 0 "$GEOLB" serve --config benches/geo.toml --udp-workers 1 --udp-cpu-affinity >"$RUN/geolb.log" 2>&1 & pids=$! ;;
      pinned) taskset -c 0,1 "$GEOLB" serve --config benches/geo.toml --udp-workers 2 --udp-cpu-affinity >"$RUN/geolb.log" 2>&1 & pids=$! ;;
      hashed) taskset -c 0,1 "$GEOLB" serve --config benches/geo.toml --udp-workers 2 >"$RUN/geolb.log" 2>&1 & pids=$! ;;
      procs)
        taskset -c 0 "$GEOLB" serve --config benches/geo.toml --udp-workers 1 >"$RUN/geolb.log" 2>&1 & pids=$!
        taskset -c 1 "$GEOLB" serve --config benches/geo.toml --udp-workers 1 --dns 127.0.0.1:5313 >"$RUN/geolb2.log" 2>&1 & pids="$pids $!"
        wait_up 5313 ;;
    esac
    wait_up 5312
    rm -f "$RUN"/q.*
    case $1 in
      one) gen 0 5312 ;;
      procs) gen 0 5312 & g=$!; gen 1 5313 & wait $g $! ;;
      *) gen 0 5312 & g=$!; gen 1 5312 & wait $g $! ;;
    esac
    # shellcheck disable=SC2086
    stop $pids
    for c in "$RUN"/q.*; do total=$((total + $(cat "$c"))); done
    echo "$total"
  }
  : >"$RUN/scaling"
  kinds="one pinned hashed procs"
  for rep in $(seq 1 "$REPS"); do
    declare -A sq=()
    set -- $kinds; for _ in $(seq 2 "$rep"); do set -- "${@:2}" "$1"; done
    for k in "$@"; do sq[$k]=$(scale_run "$k"); done
    echo "${sq[one]} ${sq[pinned]} ${sq[hashed]} ${sq[procs]}" >>"$RUN/scaling"
    echo "scaling round $rep ($SCALE_MIX): 1 core ${sq[one]} qps; 2 cores: pinned ${sq[pinned]}, hashed ${sq[hashed]}, 2 processes ${sq[procs]} qps"
  done
  awk '{ print $2, $1 }' "$RUN/scaling" | paired "QPS, 2 cores / 1 core, 2 workers with udp_cpu_affinity" 0 "2 cores"
  awk '{ print $3, $1 }' "$RUN/scaling" | paired "QPS, 2 cores / 1 core, 2 workers without affinity" 0 "2 cores"
  awk '{ print $4, $1 }' "$RUN/scaling" | paired "QPS, 2 cores / 1 core, 2 separate processes (the ceiling here)" 0 "2 cores"
  awk '{ print $2, $4 }' "$RUN/scaling" | paired "QPS on 2 cores, 2 workers with udp_cpu_affinity / 2 processes" 0 "2 workers"
  awk '{ print $2, $3 }' "$RUN/scaling" | paired "QPS on 2 cores, 2 workers with / without udp_cpu_affinity" 0 "with affinity"
fi
true
