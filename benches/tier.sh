#!/usr/bin/env bash
# Side-by-side benchmark of the regional tier's TCP listener against HAProxy
# in TCP mode (benches/peers/haproxy-tcp.cfg), both in front of the same two
# loopback backends (nginx serving a 12-byte file and a 1 MiB file). Each
# proxy is pinned to CPU 0 (taskset -c 0), the load tools and the backends
# to CPU 1, so each proxy has one core and the same backends.
#
#   benches/tier.sh                            # ~4 min: 5 pairs of 5 s runs
#   SECS=10 PAIRS=10 benches/tier.sh           # longer, tighter intervals
#   GEOLB=/path/geolb benches/tier.sh          # measure a given build
#   RT=1 benches/tier.sh                       # real-time priority (see below)
#
# Knobs: SECS, PAIRS, CONC, RATE, HOLD (below), GEOLB, TCPLOAD and
# HTTPLOAD (built with cargo unless all are given), KEEP_RUN=DIR keeps the
# configs and logs in DIR.
#
# Per pair, the two proxies run back to back, the order alternating (geolb
# first, then HAProxy first, ...), so a drift in the machine's speed falls
# on both alike; each pair gives a ratio geolb/HAProxy, reported as the
# geometric mean over PAIRS pairs with a 95 % confidence interval (Student's
# t over the log ratios, as in run.sh):
#
#  1. new connections per second: examples/tcpload.rs, CONC (default 128)
#     loops of connect, `GET /tiny HTTP/1.0`, the 12-byte response, close
#     (wrk -H "Connection: close" does the same but costs the load core
#     more: with wrk that core saturates first, e.g. 10.3 k/s with the
#     proxy 85 % busy, against 12.2 k/s and 94 % with tcpload);
#  2. throughput: wrk, one thread, 4 keep-alive connections fetching the
#     1 MiB file, in MB/s (10^6 bytes of file per second);
#  3. proxy CPU per connection at a fixed RATE (default 3000/s, below both
#     proxies' maxima here): examples/tcpload.rs opens RATE connections a
#     second (open loop), each like 1.; CPU is every thread's exact run time
#     from /proc/PID/task/*/schedstat (the 10 ms ticks of /proc/PID/stat
#     would do too, less precisely), in µs per connection;
#  4. RSS holding HOLD (default 10 000) idle proxied connections: a fresh
#     proxy, then httpload opens HOLD connections and sends nothing; the RSS
#     (VmRSS) is read once the backends hold HOLD established connections
#     (counted with ss on the backend ports, so each one really went
#     through), next to the RSS of the same fresh proxy before.
#
# The proxies: geolb with the config below (one listener, a round_robin
# group of the two backends, no monitor, [tier] defaults: connect_timeout
# 2s, idle_timeout 10m, connect_attempts 3; max_connections raised to
# 30000), `geolb serve` as it is (pinned to one CPU, it runs one runtime
# thread); HAProxy 2.x `nbthread 1` (one event loop for its one core), the
# same timeouts, retries 2 with redispatch (3 backends tried), global
# maxconn HOLD. Neither checks health; both relay through 16 KiB buffers
# (HAProxy's tune.bufsize and geolb's relay buffer), neither splices.
#
# For 1. and 2. the proxy's busy share of each run is printed, and the
# rate per second of proxy CPU is compared too: at ~100 % busy the proxy,
# not the load core, sets the pace.
#
# RT=1 runs the proxies, the backends and the load tools SCHED_FIFO
# (chrt -f 10): on a machine shared with other work (builds) the runs are
# then far steadier, at the price of taking both CPUs from everything
# else for the length of the run. Without it, other work on either CPU
# delays the wakeups that every proxied byte goes through.
#
# Needs haproxy, nginx, wrk (installed with apt-get when missing and run as
# root), ss, taskset and curl (chrt with RT=1). Proxied connections take two descriptors each:
# ulimit -n is raised to 2 * HOLD + 100 where the hard limit allows it, and
# HOLD is lowered to fit when it does not (the run says so).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-5}
PAIRS=${PAIRS:-5}
CONC=${CONC:-128}
RT=${RT:-}
RATE=${RATE:-3000}
HOLD=${HOLD:-10000}
G_PORT=19001 H_PORT=19002 B1=18081 B2=18082 ADMIN=19081
RUN=${KEEP_RUN:-$(mktemp -d)}
trap 'kill $(jobs -p) $(cat "$RUN/nginx.pid" 2>/dev/null) 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${KEEP_RUN:-}" ] || rm -rf "$RUN"' EXIT
# shellcheck source=benches/lib.sh
. benches/lib.sh

need_tools haproxy nginx wrk
PATH=$PATH:/usr/sbin
for t in ss taskset curl ${RT:+chrt}; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }; done

if [ -z "${GEOLB:-}" ] || [ -z "${TCPLOAD:-}" ] || [ -z "${HTTPLOAD:-}" ]; then
  cargo build --release --bin geolb --example tcpload --example httpload
fi
GEOLB=${GEOLB:-target/release/geolb}
TCPLOAD=${TCPLOAD:-target/release/examples/tcpload}
HTTPLOAD=${HTTPLOAD:-target/release/examples/httpload}
# Command prefixes: pinned to CPU 0 (the proxies) or 1 (everything else),
# and real-time with RT=1. The prefixes exec, so $! is the proxy's PID.
ON0=(taskset -c 0) ON1=(taskset -c 1)
if [ -n "$RT" ]; then ON0=(chrt -f 10 "${ON0[@]}") ON1=(chrt -f 10 "${ON1[@]}"); fi

want=$((2 * HOLD + 100))
open_files "$want"
hard=$FILES_MAX
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
  fit=$(((hard - 100) / 2))
  echo "note: open files are capped at $hard here (hard limit); holding $fit connections instead of $HOLD"
  HOLD=$fit
fi

for p in $G_PORT $H_PORT $B1 $B2 $ADMIN; do
  if [ -n "$(ss -Htln "sport = :$p")" ]; then echo "port $p is taken (a previous run still going?)" >&2; exit 1; fi
done

# Backends: one nginx worker on CPU 1, two ports (the group's two members).
mkdir -p "$RUN/www" "$RUN/tmp"
chmod a+rx "$RUN" "$RUN/www" # nginx workers may run as another user
printf 'hello, tier\n' >"$RUN/www/tiny"
head -c 1048576 /dev/zero | tr '\0' x >"$RUN/www/1m"
cat >"$RUN/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $RUN/nginx.pid;
error_log $RUN/nginx.err warn;
events { worker_connections $((HOLD + 1024)); }
http {
  access_log off;
  client_body_temp_path $RUN/tmp; proxy_temp_path $RUN/tmp; fastcgi_temp_path $RUN/tmp;
  uwsgi_temp_path $RUN/tmp; scgi_temp_path $RUN/tmp;
  sendfile on;
  keepalive_requests 1000000;
  keepalive_timeout 600s;
  client_header_timeout 600s;  # the held connections send nothing
  server { listen 127.0.0.1:$B1 backlog=4096; listen 127.0.0.1:$B2 backlog=4096; root $RUN/www; }
}
CONF
"${ON1[@]}" nginx -c "$RUN/nginx.conf" >"$RUN/nginx.log" 2>&1 &
NGINX=$!

lab_config "$RUN" $ADMIN $B1 $B2 "[listeners.bench]
region = \"lab\"
bind = \"127.0.0.1:$G_PORT\"
group = \"app\"" >"$RUN/geolb.toml"
sed -e "s/FRONTEND/127.0.0.1:$H_PORT/; s/BACKEND1/127.0.0.1:$B1/; s/BACKEND2/127.0.0.1:$B2/" \
  -e "s/^\(    maxconn\) 30000/\1 $HOLD/" benches/peers/haproxy-tcp.cfg >"$RUN/haproxy.cfg"

wait_up() { # port
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/tiny" 2>/dev/null)" = 200 ] && return 0
    sleep 0.1
  done
  echo "nothing answers through port $1; the logs:" >&2
  tail -n 5 "$RUN"/*.log "$RUN"/nginx.err >&2 2>/dev/null; return 1
}
start() { # geolb | haproxy: starts it on CPU 0, sets PID
  case $1 in
    geolb) "${ON0[@]}" "$GEOLB" serve --config "$RUN/geolb.toml" >>"$RUN/geolb.log" 2>&1 & PID=$!; wait_up $G_PORT ;;
    haproxy) "${ON0[@]}" haproxy -db -f "$RUN/haproxy.cfg" >>"$RUN/haproxy.log" 2>&1 & PID=$!; wait_up $H_PORT ;;
  esac
  kill -0 "$PID" 2>/dev/null || { echo "$1 exited:" >&2; tail -n 5 "$RUN/$1.log" >&2; exit 1; }
}
port() { if [ "$1" = geolb ]; then echo $G_PORT; else echo $H_PORT; fi; }
wait_up $B1
wait_up $B2

# "value busy" for one run of a load command printing the value: busy is
# the share of the run's wall time the proxy's threads were on a CPU.
busy_run() { # pid command...
  local pid=$1 t0 w0 v; shift
  t0=$(cpu_ns "$pid"); w0=$(date +%s%N)
  v=$("$@")
  awk -v v="$v" -v c=$(($(cpu_ns "$pid") - t0)) -v w=$(($(date +%s%N) - w0)) \
    'BEGIN { printf "%s %.3f\n", v, (w > 0 ? c / w : 0) }'
}
# 1. New connections a second, CONC loops.
cps() { # port
  local out
  out=$("${ON1[@]}" "$TCPLOAD" close "127.0.0.1:$1" "$SECS" "$CONC" /tiny)
  case $out in *"errors=0 "*) ;; *) echo "tcpload: $out" >&2 ;; esac
  sed -n 's/.* cps=\([0-9]*\).*/\1/p' <<<"$out"
}
# 2. MB/s of the 1 MiB file over 4 keep-alive connections.
mbps() { # port
  "${ON1[@]}" wrk -t1 -c4 -d"${SECS}s" "http://127.0.0.1:$1/1m" 2>&1 |
    awk '/Requests\/sec/ { printf "%.1f\n", $2 * 1048576 / 1e6 } /Socket errors|Non-2xx/ { print "wrk: " $0 > "/dev/stderr" }'
}
# 3. "µs of proxy CPU per connection" at RATE connections a second.
cpu_once() { # pid port
  local t0 out
  t0=$(cpu_ns "$1")
  out=$("${ON1[@]}" "$TCPLOAD" rate "127.0.0.1:$2" "$RATE" "$SECS" /tiny)
  local t=$(($(cpu_ns "$1") - t0))
  case $out in *" errors=0 "*) ;; *) echo "tcpload: $out" >&2 ;; esac
  sed -n 's/.* ok=\([0-9]*\) .*/\1/p' <<<"$out" | awk -v t="$t" '{ if ($1 > 0) printf "%.2f\n", t / 1e3 / $1; else print 0 }'
}
# 4. "RSS before, RSS holding HOLD connections" (KiB) of a fresh proxy.
backend_conns() { ss -Htn state established "( sport = :$B1 or sport = :$B2 )" | wc -l; }
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
hold_once() { # geolb | haproxy
  local before held n fifo=$RUN/hold.in hpid
  for _ in $(seq 1 100); do [ "$(backend_conns)" -lt 10 ] && break; sleep 0.1; done
  start "$1"; sleep 0.5
  before=$(rss "$PID")
  rm -f "$fifo"; mkfifo "$fifo"
  "${ON1[@]}" "$HTTPLOAD" hold "127.0.0.1:$(port "$1")" "$HOLD" - <"$fifo" >"$RUN/hold.out" 2>&1 & hpid=$!
  exec {keep}>"$fifo"
  for _ in $(seq 1 300); do n=$(backend_conns); [ "$n" -ge "$HOLD" ] && break; sleep 0.1; done
  sleep 1
  held=$(rss "$PID")
  if [ "$n" -lt "$HOLD" ]; then echo "$1: only $n of $HOLD connections reached the backends ($(cat "$RUN/hold.out"))" >&2; held=0; fi
  if [ "$1" = geolb ]; then
    a=$(curl -s "http://127.0.0.1:$ADMIN/v1/tier" | grep -o '"active":[0-9]*' | head -1)
    echo "  geolb /v1/tier: ${a:-?}, backends hold $n" >&2
  else
    echo "  haproxy: backends hold $n" >&2
  fi
  exec {keep}>&-
  wait "$hpid" 2>/dev/null || true
  stop "$PID"
  echo "$before $held"
}

echo "geolb $("$GEOLB" --version 2>/dev/null || echo "$GEOLB"); $(haproxy -v | head -1); $(nginx -v 2>&1); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "pairs: $PAIRS of ${SECS}s runs; $CONC connection loops for the rate, fixed $RATE connections/s for the CPU, $HOLD idle connections for the RSS"
# Steal and other processes' time on the two CPUs while the pairs ran
# (a VM's host or other work taking CPU that the proxies or the load then
# wait for).
ticks() { # "steal nice total" ticks of all CPUs, from /proc/stat
  awk '/^cpu / { print $9, $3, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
start geolb; G=$PID
start haproxy; H=$PID
read -r st0 ni0 all0 < <(ticks)
for m in rate mbps cpu hold; do : >"$RUN/$m"; done
for i in $(seq 1 "$PAIRS"); do
  if [ $((i % 2)) -eq 1 ]; then order="geolb haproxy"; else order="haproxy geolb"; fi
  declare -A r=() b=() c=() h=()
  for who in $order; do
    if [ "$who" = geolb ]; then p=$G; else p=$H; fi
    r[$who]=$(busy_run "$p" cps "$(port "$who")")
  done
  for who in $order; do
    if [ "$who" = geolb ]; then p=$G; else p=$H; fi
    b[$who]=$(busy_run "$p" mbps "$(port "$who")")
  done
  for who in $order; do
    if [ "$who" = geolb ]; then p=$G; else p=$H; fi
    c[$who]=$(cpu_once "$p" "$(port "$who")")
  done
  echo "${r[geolb]} ${r[haproxy]}" >>"$RUN/rate"
  echo "${b[geolb]} ${b[haproxy]}" >>"$RUN/mbps"
  echo "${c[geolb]} ${c[haproxy]}" >>"$RUN/cpu"
  echo "pair $i: connections/s geolb ${r[geolb]% *} (busy ${r[geolb]#* }), haproxy ${r[haproxy]% *} (busy ${r[haproxy]#* });" \
    "MB/s geolb ${b[geolb]% *} (busy ${b[geolb]#* }), haproxy ${b[haproxy]% *} (busy ${b[haproxy]#* });" \
    "CPU per connection at $RATE/s geolb ${c[geolb]} us, haproxy ${c[haproxy]} us"
done
read -r st1 ni1 all1 < <(ticks)
awk -v s=$((st1 - st0)) -v n=$((ni1 - ni0)) -v a=$((all1 - all0)) 'BEGIN { if (a > 0)
  printf "while the pairs ran: %.0f %% of the CPUs stolen by the host, %.0f %% taken by niced processes (other work)\n", 100 * s / a, 100 * n / a }'
echo "RSS after the runs: geolb $(rss "$G") KiB, haproxy $(rss "$H") KiB"
stop "$G" "$H"
for i in $(seq 1 "$PAIRS"); do
  if [ $((i % 2)) -eq 1 ]; then order="geolb haproxy"; else order="haproxy geolb"; fi
  for who in $order; do h[$who]=$(hold_once "$who"); done
  echo "${h[geolb]} ${h[haproxy]}" >>"$RUN/hold"
  echo "pair $i: RSS fresh / holding $HOLD idle connections: geolb ${h[geolb]% *} / ${h[geolb]#* } KiB, haproxy ${h[haproxy]% *} / ${h[haproxy]#* } KiB"
done

echo
awk '{ print $1, $3 }' "$RUN/rate" | paired "new connections/s, geolb / haproxy" 0
awk '{ print $1 / $2, $3 / $4 }' "$RUN/rate" | paired "new connections per second of proxy CPU, geolb / haproxy" 0
awk '{ print $1, $3 }' "$RUN/mbps" | paired "1 MiB transfers, MB/s, geolb / haproxy" 0
awk '{ print $1 / $2, $3 / $4 }' "$RUN/mbps" | paired "MB per second of proxy CPU, geolb / haproxy" 0
paired "proxy CPU per connection at $RATE/s, geolb / haproxy" 1 <"$RUN/cpu"
awk '{ print $2, $4 }' "$RUN/hold" | paired "RSS holding $HOLD idle connections, geolb / haproxy" 1
awk '{ g += $1; gb += $2; p += $3; pb += $4; n++ } END { if (n) printf "means: connections/s geolb %.0f (busy %.0f %%), haproxy %.0f (busy %.0f %%)\n", g / n, 100 * gb / n, p / n, 100 * pb / n }' "$RUN/rate"
awk '{ g += $1; gb += $2; p += $3; pb += $4; n++ } END { if (n) printf "means: MB/s geolb %.0f (busy %.0f %%), haproxy %.0f (busy %.0f %%)\n", g / n, 100 * gb / n, p / n, 100 * pb / n }' "$RUN/mbps"
awk '{ g += $1; p += $2; n++ } END { if (n) printf "means: CPU per connection at %s/s geolb %.1f us, haproxy %.1f us\n", r, g / n, p / n }' r="$RATE" "$RUN/cpu"
awk '{ g0 += $1; g += $2; p0 += $3; p += $4; n++ } END { if (n) printf "means: RSS geolb %.0f -> %.0f KiB (%.0f bytes per connection), haproxy %.0f -> %.0f KiB (%.0f bytes per connection)\n", g0 / n, g / n, (g - g0) * 1024 / n / h, p0 / n, p / n, (p - p0) * 1024 / n / h }' h="$HOLD" "$RUN/hold"
stop "$NGINX"
