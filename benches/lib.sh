# Helpers shared by the side-by-side benchmarks (run.sh, tier.sh); sourced.

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
