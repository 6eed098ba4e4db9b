# Helpers shared by the side-by-side benchmarks (run.sh, tier.sh, tier-http.sh); sourced.

stop() { # pid...
  kill "$@" 2>/dev/null || true; wait "$@" 2>/dev/null || true; sleep 0.5; }
# Server CPU: the exact run time (nanoseconds) of every thread of a process
# and its descendants (NSD forks its servers), from /proc/PID/task/*/schedstat
# rather than the 10 ms tick counts of /proc/PID/stat.
cpu_ns() { # pid
  local t=0 p f v
  for p in $1 $(pgrep -P "$1"); do
    if [ "$p" != "$1" ]; then t=$((t + $(cpu_ns "$p"))); continue; fi
    for f in /proc/"$p"/task/*/schedstat; do
      read -r v _ <"$f" 2>/dev/null && t=$((t + v))
    done
  done
  echo "$t"
}
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END {
  if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# Lines "a b", one per pair: the geometric mean of a/b, its 95 % confidence
# interval, and in how many pairs a was ahead (higher, or lower with lower=1).
paired() { # label lower [who is a]
  awk -v what="$1" -v lower="$2" -v who="${3:-geolb}" '
    function t95(df) { # two-sided 95 % quantile of Student t
      split("12.71 4.303 3.182 2.776 2.571 2.447 2.365 2.306 2.262 2.228 2.201 2.179 2.160 2.145 2.131 2.120 2.110 2.101 2.093 2.086 2.080 2.074 2.069 2.064 2.060 2.056 2.052 2.048 2.045 2.042", q, " ")
      return df <= 30 ? q[df] : 1.96 + 2.4 / df }
    $1 > 0 && $2 > 0 { n++; r = log($1 / $2); s += r; sq += r * r; w += lower ? $1 < $2 : $1 > $2 }
    END {
      if (n == 0) { printf "%s: no data\n", what; exit }
      m = s / n
      if (n == 1) { printf "%s: %.3fx (1 pair)\n", what, exp(m); exit }
      sd = sqrt((sq - n * m * m) / (n - 1)); h = t95(n - 1) * sd / sqrt(n)
      printf "%s: %.3fx (95%% CI %.3f-%.3fx), %s ahead in %d of %d pairs\n", what, exp(m), exp(m - h), exp(m + h), who, w, n }'
}
# Installs the missing tools with apt-get (as root), else says which to
# install and fails. Package names: nginx -> nginx-light, h2load ->
# nghttp2-client, the rest as the tool.
need_tools() { # tool...
  local missing=() t pkgs
  for t in "$@"; do command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || missing+=("$t"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  pkgs=$(echo "${missing[*]}" | sed 's/\bnginx\b/nginx-light/; s/\bh2load\b/nghttp2-client/')
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing $pkgs ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
  else
    echo "needs $pkgs (apt-get install $pkgs)" >&2; return 1
  fi
}
# Raises the open-file limit to WANT where the hard limit allows it, the
# soft limit to the hard one, and sets FILES_MAX to the limit there is.
open_files() { # want
  ulimit -Hn "$1" 2>/dev/null || true
  ulimit -n "$(ulimit -Hn)"
  FILES_MAX=$(ulimit -n)
}
# The tier benchmarks' geolb config: a lab region with one VIP, the
# admin API on ADMIN, [tier] max_connections 30000, the listeners given
# (TOML), a round_robin group "app" of two loopback backends, and the
# benchmark zone (copied into DIR).
lab_config() { # dir admin-port backend1-port backend2-port listeners-toml
  cp benches/example.com.zone "$1/"
  cat <<CONF
[server]
dns = ["127.0.0.1:0"]
admin = "127.0.0.1:$2"

[regions.lab]
location = [50.11, 8.68]

[pools.lab-vip]
region = "lab"
endpoints = [{ address = "127.0.0.1" }]

[tier]
max_connections = 30000

$5

[groups.app]
region = "lab"
algorithm = "round_robin"
members = [{ address = "127.0.0.1:$3" }, { address = "127.0.0.1:$4" }]

[zones."example.com"]
file = "example.com.zone"
CONF
}
