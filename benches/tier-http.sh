#!/usr/bin/env bash
# Side-by-side benchmark of the regional tier's HTTP listener (mode =
# "http") against HAProxy in mode http (benches/peers/haproxy-http.cfg) and
# NGINX as a proxy (benches/peers/nginx-http.conf), all three in front of
# the same two keep-alive loopback backends (one nginx worker answering a
# 12-byte body from memory), with the floor — the client straight to the
# backend — in the same run. Each proxy is pinned to CPU 0 with one worker
# (taskset -c 0; geolb then runs one runtime thread, HAProxy nbthread 1,
# NGINX worker_processes 1), the backends and the load tools to CPU 1.
# No proxy logs requests.
#
#   benches/tier-http.sh                        # ~7 min: 3 rounds of 5 s runs
#   SECS=10 ROUNDS=5 benches/tier-http.sh       # longer, tighter intervals
#   GEOLB=/path/geolb benches/tier-http.sh      # measure a given build
#   RT=1 benches/tier-http.sh                   # real-time priority (as tier.sh)
#   ONLY="tls rss" benches/tier-http.sh         # some of the scenarios below
#
# Knobs: SECS, ROUNDS, CONC, RATE, CLOSE_RATE, HOLD, HOLD_ROUNDS, FWD, RT, ONLY (below),
# GEOLB and HTTPLOAD (built with cargo unless both are given), KEEP_RUN=DIR
# keeps the configs and logs in DIR.
#
# Scenarios; in each round every target runs back to back, the order
# rotating from round to round (floor, geolb, haproxy, nginx; then geolb,
# haproxy, nginx, floor; ...), so a drift in the machine's speed falls on
# all alike. Each round gives the ratios geolb/HAProxy and geolb/NGINX,
# reported as the geometric mean over the rounds with a 95 % confidence
# interval (benches/lib.sh `paired`):
#
#  1. ka: HTTP/1.1 keep-alive saturation, wrk -t1 -c CONC (default 64)
#     for SECS, requests/s, with the proxy's busy share (its CPU time over
#     the run's wall time) and requests per second of proxy CPU;
#  2. close: the same without keep-alive (wrk -H 'Connection: close': a
#     new client connection per request; the backend side stays pooled);
#  3. h2: HTTP/2 over cleartext with prior knowledge (h2c), h2load -t1
#     -c 8 -m 8 (64 streams in flight, as CONC), requests/s; geolb's
#     listener takes h2c on its one port, HAProxy on a `proto h2` bind,
#     NGINX on a `listen ... http2` one; the floor is the backend's own
#     h2c port;
#  4. tls: HTTP/1.1 keep-alive over TLS (wrk to https://), when this geolb
#     accepts a TLS listener (the config hook below: `geolb check` on a
#     listener with GEOLB_TLS, default `tls = { certificates = [{ cert, key }] }`);
#     skipped and said so otherwise; h2tls: HTTP/2 over TLS (h2 by ALPN),
#     h2load -t1 -c8 -m8 to https://, geolb's TLS listener, HAProxy on an
#     `alpn h2` bind, NGINX on `listen ... ssl http2`, the floor the
#     backend's own;
#  5. rate: a fixed RATE of keep-alive requests over 32 connections
#     (examples/httpload.rs: open loop, evenly paced, latency from each
#     request's release, so waiting for a connection counts): proxy CPU
#     per request (every thread's exact run time, /proc/PID/task/*/schedstat)
#     and p50/p99 latency; the added p99 is the proxy's p99 minus the
#     floor's in the same round. RATE defaults to half of HAProxy's median
#     keep-alive saturation rate from 1.;
#  5b. close_rate: the same with a new connection per request
#     (Connection: close; httpload rate --close), at CLOSE_RATE (default
#     a third of HAProxy's median close saturation rate: the load tool's
#     one thread keeps that pace of connects): proxy CPU per request and
#     p99;
#  6. rss: a fresh proxy, then HOLD (default 10 000) keep-alive clients
#     that each send one request, read the response and stay open and
#     idle (httpload hold); VmRSS 3 s after all are open, next to the same
#     fresh proxy's RSS before (NGINX: the worker's RSS plus the master's
#     private memory). HOLD_ROUNDS (default 2) rounds.
#
# ONLY (default "ka close h2 tls h2tls rate close_rate rss") names the scenarios
# to run; rate without ka needs RATE (close_rate without close takes
# CLOSE_RATE, default 15000).
#
# The proxies do the same job: round robin over the two backends, no
# health checks, keep-alive pools to the backends (geolb's per-listener
# pool; HAProxy http-reuse safe; NGINX keepalive 64 with HTTP/1.1 and
# Connection cleared), up to two more tries on another backend on connect
# failure, 502, 503 or 504, and the forwarding headers geolb adds by
# default (X-Forwarded-For appended, X-Forwarded-Proto, X-Forwarded-Host;
# FWD=off turns them off on all three). Keep-alive idle timeouts are 10
# minutes on all three, so the held clients stay. geolb's HTTP listeners
# accept a connection once it has sent data (TCP_DEFER_ACCEPT); the peers'
# defaults do not, and PEER_DEFER=1 turns on their equivalents (HAProxy
# `defer-accept`, NGINX `deferred`).
#
# RT=1 runs the proxies, the backends and the load tools SCHED_FIFO
# (chrt -f 10), steadier on a shared machine at the price of taking both
# CPUs from everything else for the run; the fixed-rate runs then lift the
# kernel's real-time throttle (below) while they run.
#
# Needs haproxy, nginx, wrk, h2load (installed with apt-get when missing
# and run as root), ss, taskset, curl and openssl. Exits non-zero only when
# the harness itself fails (a proxy does not start, a tool is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}
CONC=${CONC:-64}
RT=${RT:-}
RATE=${RATE:-}
CLOSE_RATE=${CLOSE_RATE:-}
HOLD=${HOLD:-10000}
HOLD_ROUNDS=${HOLD_ROUNDS:-2}
FWD=${FWD:-on}
GEOLB_TLS=${GEOLB_TLS:-}
PEER_DEFER=${PEER_DEFER:-}
ONLY=" ${ONLY:-ka close h2 tls h2tls rate close_rate rss} "
want() { [[ $ONLY == *" $1 "* ]]; }
if want rate && ! want ka && [ -z "$RATE" ]; then echo "ONLY without ka needs RATE for the rate scenario" >&2; exit 1; fi
# Ports: geolb (HTTP/1.1 and h2c on one port), HAProxy, NGINX (each with
# an h2c port and a TLS port), the backends (two HTTP/1.1 ports, an h2c
# and a TLS port for the floor), geolb's admin API.
G=19101 H=19102 N=19103 H_H2=19112 N_H2=19113 G_TLS=19121 H_TLS=19122 N_TLS=19123
H_H2TLS=19132 N_H2TLS=19133
B1=18181 B2=18182 B_H2=18183 B_TLS=18184 B_H2TLS=18185 ADMIN=19181
RUN=${KEEP_RUN:-$(mktemp -d)}
# RT=1: the kernel's real-time throttle (kernel.sched_rt_runtime_us, 95 %
# of each second by default) stops CPU 1's SCHED_FIFO load tool and backend
# for the rest of any second in which they ran longer than that. At a fixed
# rate near CPU 1's limit that is a stall of tens of milliseconds, which
# lands as a p99 of several milliseconds on whichever target's run tipped
# CPU 1 over (seen as 1–25 ms p99s, geolb's or NGINX's, while HAProxy's
# runs stayed just under). It is lifted for the fixed-rate runs (httpload
# ends on its own) and put back after them and on exit; the saturation
# runs keep it, so that a stuck load tool cannot hold a CPU.
RT_KEPT=
rt_unthrottle() {
  [ -n "$RT" ] || return 0
  local v
  v=$(cat /proc/sys/kernel/sched_rt_runtime_us 2>/dev/null) || return 0
  [ "$v" != -1 ] || return 0
  if (echo -1 >/proc/sys/kernel/sched_rt_runtime_us) 2>/dev/null; then
    RT_KEPT=$v
  else
    echo "note: real-time throttling stays on (kernel.sched_rt_runtime_us $v, not writable here): a fixed-rate p99 may carry its stalls"
  fi
}
rt_rethrottle() {
  [ -z "$RT_KEPT" ] || echo "$RT_KEPT" >/proc/sys/kernel/sched_rt_runtime_us
  RT_KEPT=
}
trap 'rt_rethrottle; kill $(jobs -p) $(cat "$RUN"/*.pid 2>/dev/null) 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${KEEP_RUN:-}" ] || rm -rf "$RUN"' EXIT
# shellcheck source=benches/lib.sh
. benches/lib.sh

need_tools haproxy nginx wrk h2load
PATH=$PATH:/usr/sbin
for t in ss taskset curl openssl ${RT:+chrt}; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }; done

if [ -z "${GEOLB:-}" ] || [ -z "${HTTPLOAD:-}" ]; then
  cargo build --release --bin geolb --example httpload
fi
GEOLB=${GEOLB:-target/release/geolb}
HTTPLOAD=${HTTPLOAD:-target/release/examples/httpload}
# Command prefixes: pinned to CPU 0 (the proxies) or 1 (everything else),
# and real-time with RT=1. The prefixes exec, so $! is the process's PID.
ON0=(taskset -c 0) ON1=(taskset -c 1)
if [ -n "$RT" ]; then ON0=(chrt -f 10 "${ON0[@]}") ON1=(chrt -f 10 "${ON1[@]}"); fi

# HAProxy sizes its descriptors at two per connection it may take
# (maxconn, HOLD + 20 here) and refuses to start above the limit.
want=$((2 * (HOLD + 20) + 100))
open_files "$want"
if [ "$FILES_MAX" != unlimited ] && [ "$FILES_MAX" -lt "$want" ]; then
  fit=$(((FILES_MAX - 100) / 2 - 20))
  echo "note: open files are capped at $FILES_MAX here (hard limit); holding $fit clients instead of $HOLD"
  HOLD=$fit
fi
FILES=$((HOLD + 1500)) # NGINX's and the backend's descriptors: the held clients and the pools
MAXCONN=$((HOLD + 20))

for p in $G $H $N $H_H2 $N_H2 $G_TLS $H_TLS $N_TLS $H_H2TLS $N_H2TLS $B1 $B2 $B_H2 $B_TLS $B_H2TLS $ADMIN; do
  if [ -n "$(ss -Htln "sport = :$p")" ]; then echo "port $p is taken (a previous run still going?)" >&2; exit 1; fi
done

mkdir -p "$RUN/tmp"
chmod a+rx "$RUN" # nginx workers may run as another user
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
  -keyout "$RUN/key.pem" -out "$RUN/cert.pem" >/dev/null 2>&1
cat "$RUN/cert.pem" "$RUN/key.pem" >"$RUN/haproxy.pem"

# Backends: one nginx worker on CPU 1: two HTTP/1.1 ports (the group's two
# members), an h2c and a TLS port for the floor; 12 bytes from memory.
cat >"$RUN/backend.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $FILES;
daemon off;
pid $RUN/backend.pid;
error_log $RUN/backend.err warn;
events { worker_connections $FILES; }
http {
  access_log off;
  client_body_temp_path $RUN/tmp; proxy_temp_path $RUN/tmp; fastcgi_temp_path $RUN/tmp;
  uwsgi_temp_path $RUN/tmp; scgi_temp_path $RUN/tmp;
  keepalive_requests 1000000;
  keepalive_timeout 10m;
  default_type text/plain;
  ssl_certificate $RUN/cert.pem; ssl_certificate_key $RUN/key.pem;
  server {
    listen 127.0.0.1:$B1 backlog=4096; listen 127.0.0.1:$B2 backlog=4096;
    listen 127.0.0.1:$B_H2 http2 backlog=4096; listen 127.0.0.1:$B_TLS ssl backlog=4096;
    listen 127.0.0.1:$B_H2TLS ssl http2 backlog=4096;
    location / { return 200 "hello, tier\n"; }
  }
}
CONF
"${ON1[@]}" nginx -c "$RUN/backend.conf" >"$RUN/backend.log" 2>&1 &
BACKEND=$!

# geolb: one HTTP listener (h2c detected on the same port), a round_robin
# group of the two backends; with TLS, a second listener with GEOLB_TLS.
tls_line=${GEOLB_TLS:-"tls = { certificates = [{ cert = \"$RUN/cert.pem\", key = \"$RUN/key.pem\" }] }"}
if [ "$FWD" = off ]; then fwd_line='forwarded_for = "off"'; else fwd_line='forwarded_for = "append"'; fi
http_listener() { # name port [extra line]
  printf '[listeners.%s]\nregion = "lab"\nbind = "127.0.0.1:%s"\nmode = "http"\ngroup = "app"\n%s\n%s\n%s\n' \
    "$1" "$2" "$fwd_line" 'header_timeout = "10m"  # idle keep-alive: the held clients stay' "${3:-}"
}
geolb_config() { # [tls]
  lab_config "$RUN" $ADMIN $B1 $B2 "$(http_listener bench $G)${1:+
$(http_listener bench-tls $G_TLS "$tls_line")}"
}
# The TLS scenario runs when this geolb accepts a TLS listener.
geolb_config tls >"$RUN/geolb-tls.toml"
if "$GEOLB" check --config "$RUN/geolb-tls.toml" >"$RUN/tls-check.log" 2>&1; then
  TLS_ON=1
else
  TLS_ON=
  echo "note: tls scenario skipped: this geolb refuses a TLS listener ($(grep -m1 -i -E 'error|tls' "$RUN/tls-check.log" | cut -c1-100)...)"
fi
geolb_config ${TLS_ON:+tls} >"$RUN/geolb.toml"

peer_config() { # file: fills in the placeholders, drops fwd/tls lines when off
  local drop='NEVER MATCHES' defer='s#NEVER MATCHES##'
  [ "$FWD" = off ] && drop='# fwd$'
  [ -z "$TLS_ON" ] && drop="$drop|# tls\$"
  # PEER_DEFER=1: the peers' own deferred accept (geolb's HTTP listeners
  # defer by default): HAProxy's defer-accept, NGINX's deferred.
  [ -n "$PEER_DEFER" ] && defer='s#^\( *bind FRONTEND[^ ]*\)#\1 defer-accept#; s#^\( *listen FRONTEND[^ ;]*\)#\1 deferred#'
  grep -v -E "$drop" "$1" | sed -e "$defer" -e "s#FRONTEND_SECURE_H2#127.0.0.1:$6#; s#FRONTEND_H2#127.0.0.1:$2#; s#FRONTEND_TLS#127.0.0.1:$3#; s#FRONTEND#127.0.0.1:$4#" \
    -e "s#BACKEND1#127.0.0.1:$B1#; s#BACKEND2#127.0.0.1:$B2#; s#MAXCONN#$MAXCONN#g; s#CONNS#$FILES#g" \
    -e "s#RUNDIR#$RUN#g; s#CERT#$5#; s#KEY#$RUN/key.pem#"
}
peer_config benches/peers/haproxy-http.cfg $H_H2 $H_TLS $H "$RUN/haproxy.pem" $H_H2TLS >"$RUN/haproxy.cfg"
peer_config benches/peers/nginx-http.conf $N_H2 $N_TLS $N "$RUN/cert.pem" $N_H2TLS >"$RUN/nginx-proxy.conf"

wait_up() { # port [scheme]
  for _ in $(seq 1 100); do
    [ "$(curl -sk -o /dev/null -w '%{http_code}' "${2:-http}://127.0.0.1:$1/" 2>/dev/null)" = 200 ] && return 0
    sleep 0.1
  done
  echo "nothing answers through port $1; the logs:" >&2
  tail -n 5 "$RUN"/*.log "$RUN"/*.err >&2 2>/dev/null; return 1
}
declare -A PID=()
start() { # geolb | haproxy | nginx: starts it on CPU 0, sets PID[$1]
  case $1 in
    geolb) "${ON0[@]}" "$GEOLB" serve --config "$RUN/geolb.toml" >>"$RUN/geolb.log" 2>&1 & ;;
    haproxy) "${ON0[@]}" haproxy -db -f "$RUN/haproxy.cfg" >>"$RUN/haproxy.log" 2>&1 & ;;
    nginx) "${ON0[@]}" nginx -c "$RUN/nginx-proxy.conf" >>"$RUN/nginx.log" 2>&1 & ;;
  esac
  PID[$1]=$!
  wait_up "$(port "$1" ka)" || exit 1
  kill -0 "${PID[$1]}" 2>/dev/null || { echo "$1 exited:" >&2; tail -n 5 "$RUN/$1.log" >&2; exit 1; }
}
port() { # who scenario
  case $1:$2 in
    floor:h2) echo $B_H2 ;; floor:tls) echo $B_TLS ;; floor:h2tls) echo $B_H2TLS ;; floor:*) echo $B1 ;;
    geolb:tls | geolb:h2tls) echo $G_TLS ;; geolb:*) echo $G ;;
    haproxy:h2) echo $H_H2 ;; haproxy:tls) echo $H_TLS ;; haproxy:h2tls) echo $H_H2TLS ;; haproxy:*) echo $H ;;
    nginx:h2) echo $N_H2 ;; nginx:tls) echo $N_TLS ;; nginx:h2tls) echo $N_H2TLS ;; nginx:*) echo $N ;;
  esac
}
wait_up $B1
wait_up $B2
curl -s -o /dev/null --http2-prior-knowledge "http://127.0.0.1:$B_H2/" || { echo "the backend's h2c port does not answer" >&2; exit 1; }

# One saturation run: "requests/s busy" (busy: the proxy's CPU time over
# the run's wall time; 0 for the floor).
sat() { # who scenario
  local who=$1 sc=$2 p t0 w0 v out
  p=$(port "$who" "$sc")
  [ "$who" = floor ] || { t0=$(cpu_ns "${PID[$who]}"); w0=$(date +%s%N); }
  case $sc in
    ka) out=$("${ON1[@]}" wrk -t1 -c"$CONC" -d"${SECS}s" "http://127.0.0.1:$p/" 2>&1) ;;
    close) out=$("${ON1[@]}" wrk -t1 -c"$CONC" -d"${SECS}s" -H 'Connection: close' "http://127.0.0.1:$p/" 2>&1) ;;
    # (wrk 4.1 with OpenSSL 3 can spin forever against nginx's TLS port:
    # bounded, a run that hangs gives no result instead of stopping the bench.)
    tls) out=$(timeout $((SECS + 15)) "${ON1[@]}" wrk -t1 -c"$CONC" -d"${SECS}s" "https://127.0.0.1:$p/" 2>&1) ;;
    h2) out=$("${ON1[@]}" h2load -t1 -c8 -m8 -D "$SECS" "http://127.0.0.1:$p/" 2>&1) ;;
    h2tls) out=$("${ON1[@]}" h2load -t1 -c8 -m8 -D "$SECS" "https://127.0.0.1:$p/" 2>&1) ;;
  esac
  if [ "$sc" = h2 ] || [ "$sc" = h2tls ]; then
    v=$(awk '/^finished in/ { gsub(",", ""); print int($4) }' <<<"$out")
    grep -q ' 0 failed' <<<"$out" || echo "  h2load $who: $(grep -m1 '^requests:' <<<"$out")" >&2
  else
    v=$(awk '/^Requests\/sec/ { print int($2) }' <<<"$out")
    grep -E 'Socket errors|Non-2xx' <<<"$out" | sed "s/^/  wrk $who $sc: /" >&2 || true
  fi
  [ -n "$v" ] || { echo "  $sc $who: no result: $(tail -n 2 <<<"$out" | tr '\n' ' ')" >&2; v=0; }
  if [ "$who" = floor ]; then echo "$v 0"; return; fi
  awk -v v="$v" -v c=$(($(cpu_ns "${PID[$who]}") - t0)) -v w=$(($(date +%s%N) - w0)) \
    'BEGIN { printf "%s %.3f\n", v, (w > 0 ? c / w : 0) }'
}
# One fixed-rate run: "cpu_us_per_request p50_us p99_us" (cpu 0 for the floor).
fixed() { # who [rate --close]
  local who=$1 t0=0 out ok c=0
  [ "$who" = floor ] || t0=$(cpu_ns "${PID[$who]}")
  out=$("${ON1[@]}" "$HTTPLOAD" rate "127.0.0.1:$(port "$who" ka)" "${2:-$RATE}" "$SECS" 32 / ${3:-})
  [ "$who" = floor ] || c=$(($(cpu_ns "${PID[$who]}") - t0))
  case $out in *" errors=0 "*" late=0 "*) ;; *) echo "  httpload $who: $out" >&2 ;; esac
  ok=$(sed -n 's/.* ok=\([0-9]*\) .*/\1/p' <<<"$out")
  awk -v ok="${ok:-0}" -v c="$c" -v p50="$(sed -n 's/.* p50=\([0-9]*\).*/\1/p' <<<"$out")" \
    -v p99="$(sed -n 's/.* p99=\([0-9]*\).*/\1/p' <<<"$out")" \
    'BEGIN { printf "%.2f %d %d\n", (ok > 0 ? c / 1e3 / ok : 0), p50, p99 }'
}
rss_kib() { # pid: VmRSS; with children (NGINX), theirs plus the parent's private memory
  local kids t=0 k
  kids=$(pgrep -P "$1" || true)
  if [ -z "$kids" ]; then awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; return; fi
  for k in $kids; do t=$((t + $(awk '/^VmRSS/ { print $2 }' "/proc/$k/status"))); done
  awk -v t="$t" '/^Private_(Clean|Dirty)/ { t += $2 } END { print t }' "/proc/$1/smaps_rollup"
}
# "RSS fresh, RSS holding HOLD clients" (KiB) of a fresh proxy.
hold_once() { # who
  local who=$1 before held n fifo=$RUN/hold.in hpid
  start "$who"; sleep 0.5
  before=$(rss_kib "${PID[$who]}")
  rm -f "$fifo"; mkfifo "$fifo"
  "${ON1[@]}" "$HTTPLOAD" hold "127.0.0.1:$(port "$who" ka)" "$HOLD" / <"$fifo" >"$RUN/hold.out" 2>&1 & hpid=$!
  exec {keep}>"$fifo"
  for _ in $(seq 1 600); do grep -q '^open=' "$RUN/hold.out" && break; sleep 0.1; done
  sleep 3 # what each keeps, not what it borrowed while they came (freed memory goes back within a second or two)
  held=$(rss_kib "${PID[$who]}")
  n=$(sed -n 's/^open=\([0-9]*\).*/\1/p' "$RUN/hold.out")
  if [ "${n:-0}" -lt "$HOLD" ]; then echo "  $who: only ${n:-0} of $HOLD clients held ($(cat "$RUN/hold.out"))" >&2; held=0; fi
  exec {keep}>&-
  wait "$hpid" 2>/dev/null || true
  stop "${PID[$who]}"
  echo "$before $held"
}

echo "geolb $("$GEOLB" --version 2>/dev/null || echo "$GEOLB"); $(haproxy -v | head -1 | cut -d' ' -f1-3); $(nginx -v 2>&1 | cut -d' ' -f3); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $(h2load --version | head -1)"
echo "$ROUNDS rounds of ${SECS}s runs; $CONC connections (h2: 8 x 8 streams); forwarding headers $FWD; $HOLD idle clients for the RSS"
ticks() { awk '/^cpu / { print $9, $3, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
start geolb; start haproxy; start nginx
read -r st0 ni0 all0 < <(ticks)
SCEN=
for sc in ka close h2 ${TLS_ON:+tls h2tls}; do want "$sc" && SCEN="$SCEN $sc"; done
ALL=(floor geolb haproxy nginx)
order() { # round: the targets, rotated by the round number
  local i=$1 k
  for k in 0 1 2 3; do echo -n "${ALL[$(((i + k) % 4))]} "; done
}
for sc in $SCEN rate close_rate; do : >"$RUN/$sc"; done
for i in $(seq 1 "$ROUNDS"); do
  for sc in $SCEN; do
    declare -A r=()
    for who in $(order "$i"); do r[$who]=$(sat "$who" "$sc"); done
    echo "${r[floor]} ${r[geolb]} ${r[haproxy]} ${r[nginx]}" >>"$RUN/$sc"
    echo "round $i $sc: requests/s floor ${r[floor]% *}, geolb ${r[geolb]% *} (busy ${r[geolb]#* }), haproxy ${r[haproxy]% *} (busy ${r[haproxy]#* }), nginx ${r[nginx]% *} (busy ${r[nginx]#* })"
  done
done
if [ -z "$RATE" ] && want ka; then
  RATE=$(awk '{ print $5 }' "$RUN/ka" | median | awk '{ printf "%d\n", $1 / 2 }')
  echo "fixed rate: $RATE requests/s (half of HAProxy's median keep-alive saturation rate)"
fi
want rate || ROUNDS_RATE=0
rt_unthrottle
for i in $(seq 1 "${ROUNDS_RATE:-$ROUNDS}"); do
  declare -A f=()
  for who in $(order "$i"); do f[$who]=$(fixed "$who"); done
  echo "${f[floor]} ${f[geolb]} ${f[haproxy]} ${f[nginx]}" >>"$RUN/rate"
  echo "round $i rate $RATE/s: CPU us/request, p50, p99 us: floor - ${f[floor]#* }; geolb ${f[geolb]}; haproxy ${f[haproxy]}; nginx ${f[nginx]}"
done
# The same at a fixed rate of new connections (Connection: close), so the
# proxies' cost per request is compared where the load tool is not the
# bound (as it is in the close saturation runs).
if want close_rate; then
  if [ -z "$CLOSE_RATE" ]; then
    if [ -s "$RUN/close" ]; then
      CLOSE_RATE=$(awk '{ print $5 }' "$RUN/close" | median | awk '{ printf "%d\n", $1 / 3 }')
    else
      CLOSE_RATE=15000
    fi
  fi
  echo "fixed rate of new connections: $CLOSE_RATE requests/s"
  for i in $(seq 1 "$ROUNDS"); do
    declare -A f=()
    for who in $(order "$i"); do f[$who]=$(fixed "$who" "$CLOSE_RATE" --close); done
    echo "${f[floor]} ${f[geolb]} ${f[haproxy]} ${f[nginx]}" >>"$RUN/close_rate"
    echo "round $i close_rate $CLOSE_RATE/s: CPU us/request, p50, p99 us: floor - ${f[floor]#* }; geolb ${f[geolb]}; haproxy ${f[haproxy]}; nginx ${f[nginx]}"
  done
fi
rt_rethrottle
read -r st1 ni1 all1 < <(ticks)
awk -v s=$((st1 - st0)) -v n=$((ni1 - ni0)) -v a=$((all1 - all0)) 'BEGIN { if (a > 0)
  printf "while the rounds ran: %.0f %% of the CPUs stolen by the host, %.0f %% taken by niced processes (other work)\n", 100 * s / a, 100 * n / a }'
echo "RSS after the runs: geolb $(rss_kib "${PID[geolb]}") KiB, haproxy $(rss_kib "${PID[haproxy]}") KiB, nginx $(rss_kib "${PID[nginx]}") KiB"
stop "${PID[geolb]}" "${PID[haproxy]}" "${PID[nginx]}"
: >"$RUN/hold"
want rss || HOLD_ROUNDS=0
for i in $(seq 1 "$HOLD_ROUNDS"); do
  declare -A h=()
  for who in $(order "$i" | sed 's/floor //'); do h[$who]=$(hold_once "$who"); done
  echo "${h[geolb]} ${h[haproxy]} ${h[nginx]}" >>"$RUN/hold"
  echo "round $i: RSS fresh / holding $HOLD idle keep-alive clients: geolb ${h[geolb]% *} / ${h[geolb]#* } KiB, haproxy ${h[haproxy]% *} / ${h[haproxy]#* } KiB, nginx ${h[nginx]% *} / ${h[nginx]#* } KiB"
done

# Ratios: columns of the saturation files are "floor 0 geolb busy haproxy
# busy nginx busy"; of rate "floor_cpu floor_p50 floor_p99 geolb_cpu ...".
echo
echo "| scenario | geolb / HAProxy (95 % CI), rounds ahead | geolb / NGINX (95 % CI), rounds ahead |"
echo "|---|---|---|"
row() { # label lower file awk-expression-for-"a b c" (geolb haproxy nginx)
  local a b
  [ -s "$3" ] || return 0
  a=$(awk "{ $4; print g, h }" "$3" | paired x "$2" | sed 's/^x: //; s/, geolb ahead in/,/; s/ pairs$//')
  b=$(awk "{ $4; print g, n }" "$3" | paired x "$2" | sed 's/^x: //; s/, geolb ahead in/,/; s/ pairs$//')
  echo "| $1 | $a | $b |"
}
for sc in $SCEN; do
  row "$sc: requests/s" 0 "$RUN/$sc" 'g = $3; h = $5; n = $7'
  row "$sc: requests per second of proxy CPU" 0 "$RUN/$sc" 'g = $3 / $4; h = $5 / $6; n = $7 / $8'
done
row "rate $RATE/s: proxy CPU per request (lower is better)" 1 "$RUN/rate" 'g = $4; h = $7; n = $10'
row "rate $RATE/s: added p99 over the floor (lower is better)" 1 "$RUN/rate" 'g = $6 - $3; h = $9 - $3; n = $12 - $3'
row "close_rate ${CLOSE_RATE:-}/s: proxy CPU per request (lower is better)" 1 "$RUN/close_rate" 'g = $4; h = $7; n = $10'
row "close_rate ${CLOSE_RATE:-}/s: p99 (lower is better)" 1 "$RUN/close_rate" 'g = $6; h = $9; n = $12'
row "RSS holding $HOLD idle clients (lower is better)" 1 "$RUN/hold" 'g = $2; h = $4; n = $6'
echo
echo "raw means:"
for sc in $SCEN; do
  awk -v sc="$sc" '{ f += $1; g += $3; gb += $4; h += $5; hb += $6; n += $7; nb += $8; k++ } END { if (k) printf "  %s requests/s: floor %.0f; geolb %.0f (busy %.0f %%); haproxy %.0f (busy %.0f %%); nginx %.0f (busy %.0f %%)\n", sc, f / k, g / k, 100 * gb / k, h / k, 100 * hb / k, n / k, 100 * nb / k }' "$RUN/$sc"
done
awk -v r="$RATE" '{ for (j = 1; j <= 12; j++) s[j] += $j; k++ } END { if (k) printf "  rate %d/s: CPU per request geolb %.1f us, haproxy %.1f us, nginx %.1f us; p50 / p99 floor %.0f / %.0f us, geolb %.0f / %.0f, haproxy %.0f / %.0f, nginx %.0f / %.0f; added p99 geolb %.0f, haproxy %.0f, nginx %.0f us\n", r, s[4] / k, s[7] / k, s[10] / k, s[2] / k, s[3] / k, s[5] / k, s[6] / k, s[8] / k, s[9] / k, s[11] / k, s[12] / k, (s[6] - s[3]) / k, (s[9] - s[3]) / k, (s[12] - s[3]) / k }' "$RUN/rate"
awk -v r="${CLOSE_RATE:-}" '{ for (j = 1; j <= 12; j++) s[j] += $j; k++ } END { if (k) printf "  close_rate %d/s: CPU per request geolb %.1f us, haproxy %.1f us, nginx %.1f us; p50 / p99 floor %.0f / %.0f us, geolb %.0f / %.0f, haproxy %.0f / %.0f, nginx %.0f / %.0f\n", r, s[4] / k, s[7] / k, s[10] / k, s[2] / k, s[3] / k, s[5] / k, s[6] / k, s[8] / k, s[9] / k, s[11] / k, s[12] / k }' "$RUN/close_rate"
awk -v h="$HOLD" '{ for (j = 1; j <= 6; j++) s[j] += $j; k++ } END { if (k) printf "  RSS fresh -> holding %d clients: geolb %.1f -> %.1f MB (%.0f bytes per client), haproxy %.1f -> %.1f MB (%.0f), nginx %.1f -> %.1f MB (%.0f)\n", h, s[1] / k / 1024, s[2] / k / 1024, (s[2] - s[1]) * 1024 / k / h, s[3] / k / 1024, s[4] / k / 1024, (s[4] - s[3]) * 1024 / k / h, s[5] / k / 1024, s[6] / k / 1024, (s[6] - s[5]) * 1024 / k / h }' "$RUN/hold"
[ -n "$TLS_ON" ] || echo "  tls: skipped (this geolb has no TLS listeners; the scenario runs once \`geolb check\` accepts GEOLB_TLS)"
stop "$BACKEND"
