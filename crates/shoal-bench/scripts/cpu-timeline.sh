#!/usr/bin/env bash
# CPU timeline of one bench mode: runs `shoal-bench SCENARIO --modes MODE`
# and prints, every 10 s, the CPU its child process (the swarm) used in that
# window, in % of one core (200 % = both cores of the 2-core box), next to
# the bench's latest progress line. docs/benchmarks.md uses it to separate
# the join storm from the idle and the streaming cost.
#
#   crates/shoal-bench/scripts/cpu-timeline.sh target/release/shoal-bench \
#       config/bench/idle100.toml shoal
set -euo pipefail
bin=${1:?usage: cpu-timeline.sh SHOAL_BENCH SCENARIO [MODE]}
scenario=${2:?usage: cpu-timeline.sh SHOAL_BENCH SCENARIO [MODE]}
mode=${3:-shoal}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$bin" "$scenario" --modes "$mode" 2>"$log" &
bench=$!
child=""
for _ in $(seq 1 100); do
  child=$(pgrep -f -- "--child $mode" | head -n1 || true)
  [ -n "$child" ] && break
  sleep 0.1
done
[ -n "$child" ] || { echo "no child process for mode $mode" >&2; exit 1; }
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$child/stat" 2>/dev/null; }
prev=$(ticks)
t=0
# At most an hour of windows: every bench run is bounded, and so is this.
for _ in $(seq 1 360); do
  sleep 10
  t=$((t + 10))
  cur=$(ticks) || break
  [ -n "$cur" ] || break
  echo "t=${t}s cpu=$(( (cur - prev) * 100 / hz / 10 ))% | $(grep -E 'started|published' "$log" | tail -n1)"
  prev=$cur
done
wait "$bench"
grep "per viewer" "$log" || true
