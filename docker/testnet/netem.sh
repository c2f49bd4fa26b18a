#!/usr/bin/env bash
# Impairs this container's network: `netem.sh DELAY_MS LOSS_PERCENT`.
# Needs cap NET_ADMIN. Applies to every interface but lo.
#
# With sch_netem in the kernel: `tc netem` delay and loss on egress.
# Without it (some VM kernels are built without CONFIG_NET_SCH_NETEM): loss
# only, as a random drop of LOSS_PERCENT of the packets this container
# receives (iptables `statistic`); no delay can be added, and this says so.
# Writes what it applied to /run/shoal-netem for the test's summary.
set -euo pipefail
delay_ms="$1"
loss_pct="$2"
ifaces=""
for d in /sys/class/net/*; do
  [ "${d##*/}" = lo ] || ifaces="$ifaces ${d##*/}"
done

if tc qdisc replace dev lo root netem delay 0ms 2>/dev/null; then
  tc qdisc del dev lo root
  for d in $ifaces; do
    tc qdisc replace dev "$d" root netem delay "${delay_ms}ms" loss "${loss_pct}%"
  done
  applied="netem delay ${delay_ms}ms loss ${loss_pct}%"
else
  prob=$(awk -v p="$loss_pct" 'BEGIN { printf "%.4f", p / 100 }')
  for d in $ifaces; do
    iptables -A INPUT -i "$d" -m statistic --mode random --probability "$prob" -j DROP
  done
  applied="loss ${loss_pct}% (iptables); NO delay: this kernel has no sch_netem"
  echo "netem.sh: WARNING: the kernel has no sch_netem; ${delay_ms} ms delay NOT applied, ${loss_pct}% loss applied with iptables" >&2
fi
echo "$applied" >/run/shoal-netem
echo "netem.sh: $applied on$ifaces"
