#!/usr/bin/env bash
# One node of the compose testnet (docker/compose.yaml). Runs as root only to
# impair the network (cap NET_ADMIN) and prepare directories; `shoal` itself
# runs as the image's unprivileged `shoal` user.
#
#   SHOAL_ROLE        boot | publisher | viewer
#   SHOAL_NODE_NAME   this node's compose service name
#   SHOAL_BOOT_NAMES  the bootstrap nodes' service names (DNS names)
#   SHOAL_NETEM       optional "DELAY_MS LOSS_PERCENT" (see netem.sh)
#
# Bootstrap nodes write their peer id, and the publisher its channel id, to
# the shared `ids` volume; the others wait for those files (bounded), so
# bootstrap addresses are /dns4/NAME/tcp/4001/p2p/PEERID with nothing
# hard-coded. The volume carries only these ids, never stream data.
set -euo pipefail

ROLE="${SHOAL_ROLE:?set SHOAL_ROLE to boot, publisher or viewer}"
NAME="${SHOAL_NODE_NAME:?set SHOAL_NODE_NAME}"
DATA="${SHOAL_DATA_DIR:-/var/lib/shoal}"
IDS=/testnet-ids
# Longest wait for another node's id file or for our own daemon's API.
WAIT_S=90

log() { echo "[$NAME] $*" >&2; }
as_shoal() { setpriv --reuid=shoal --regid=shoal --init-groups -- "$@"; }

# Waits (bounded) until file $1 exists and is not empty.
wait_file() {
  local i
  for ((i = 0; i < WAIT_S * 5; i++)); do
    [ -s "$1" ] && return 0
    sleep 0.2
  done
  log "gave up after ${WAIT_S} s waiting for $1"
  exit 1
}

if [ -n "${SHOAL_NETEM:-}" ]; then
  # shellcheck disable=SC2086 # two words: delay and loss
  bash /testnet/netem.sh $SHOAL_NETEM
fi

mkdir -p "$IDS" "$DATA"
chown shoal:shoal "$DATA"
peer=$(as_shoal shoal init --data-dir "$DATA" | sed -n 's/^peer id: //p')
[ -n "$peer" ] || { log "shoal init printed no peer id"; exit 1; }

# Testnet settings on top of the commented default config.toml: the API
# reachable from the host and the other containers, DHT server mode (no
# external address is ever confirmed inside a bridge network), no mDNS (so
# peers are found through the bootstrap nodes and the DHT only) and small
# RocksDB caches (14 nodes share one small machine).
cfg="$DATA/config.toml"
sed -i \
  -e 's/^api = .*/api = "0.0.0.0:8455"/' \
  -e 's/^kad_server_mode = .*/kad_server_mode = true/' \
  -e 's/^mdns = .*/mdns = false/' \
  -e 's/^block_cache_bytes = .*/block_cache_bytes = 8388608/' \
  -e 's/^write_buffer_bytes = .*/write_buffer_bytes = 8388608/' \
  "$cfg"
for want in 'api = "0.0.0.0:8455"' 'kad_server_mode = true' 'mdns = false'; do
  grep -qx "$want" "$cfg" || { log "config.toml has no line '$want' after editing; did a key change?"; exit 1; }
done

# Every node bootstraps from every bootstrap node; a bootstrap node only from
# those listed before it, so none waits for a later one.
bootstrap=()
for b in ${SHOAL_BOOT_NAMES:-}; do
  [ "$b" = "$NAME" ] && break
  wait_file "$IDS/$b"
  bootstrap+=("/dns4/$b/tcp/4001/p2p/$(cat "$IDS/$b")")
done

args=(node --data-dir "$DATA")
if [ ${#bootstrap[@]} -gt 0 ]; then
  args+=(--bootstrap "$(IFS=,; echo "${bootstrap[*]}")")
fi
log "role $ROLE, peer $peer, bootstrap: ${bootstrap[*]:-none}"
as_shoal shoal "${args[@]}" &
node_pid=$!
client_pid=""
stop() {
  [ -n "$client_pid" ] && kill -TERM "$client_pid" 2>/dev/null || true
  kill -TERM "$node_pid" 2>/dev/null || true
  wait
  exit 0
}
trap stop TERM INT

for ((i = 0; i < WAIT_S * 5; i++)); do
  as_shoal shoal status >/dev/null 2>&1 && break
  kill -0 "$node_pid" 2>/dev/null || { log "shoal node exited"; exit 1; }
  sleep 0.2
done
as_shoal shoal status >/dev/null || { log "the API did not answer within ${WAIT_S} s"; exit 1; }

case "$ROLE" in
  boot)
    echo "$peer" >"$IDS/$NAME.tmp" && mv "$IDS/$NAME.tmp" "$IDS/$NAME"
    ;;
  publisher)
    as_shoal shoal key show testnet >/dev/null 2>&1 || as_shoal shoal key generate testnet >/dev/null
    channel=$(as_shoal shoal key show testnet)
    # MPEG-TS ingest (keyframe cuts) when this build has it, else byte mode
    # with 1 s segments.
    format=()
    help=$(as_shoal shoal publish --help)
    [[ "$help" == *--format* ]] && format=(--format ts)
    log "publishing $channel (${format[*]:-bytes mode})"
    # A 640x360 test pattern with a 440 Hz tone, a keyframe every second.
    as_shoal bash -c 'set -o pipefail
      ffmpeg -hide_banner -loglevel error -re \
        -f lavfi -i testsrc=size=640x360:rate=25 -f lavfi -i sine=frequency=440:sample_rate=48000 \
        -c:v libx264 -preset ultrafast -tune zerolatency -g 25 -b:v 600k \
        -c:a aac -b:a 64k -f mpegts - \
      | shoal publish --key testnet --title "shoal testnet" --public "$@" -' _ "${format[@]}" &
    client_pid=$!
    echo "$channel" >"$IDS/channel.tmp" && mv "$IDS/channel.tmp" "$IDS/channel"
    ;;
  viewer)
    wait_file "$IDS/channel"
    channel=$(cat "$IDS/channel")
    log "watching $channel"
    # `shoal watch` keeps the channel joined; restart it if the stream ends.
    # shellcheck disable=SC2016 # $1 expands in the inner shell
    as_shoal bash -c 'while true; do shoal watch "$1" -o /dev/null || true; sleep 1; done' _ "$channel" &
    client_pid=$!
    ;;
  *)
    log "unknown SHOAL_ROLE '$ROLE'"
    exit 1
    ;;
esac

# Exit (and let the container show it) when the node or its client stops.
wait -n
log "a process exited; stopping"
stop
