//! `GET /api/v1/watch/CHANNEL`: joins the channel and streams its segments
//! in seq order, each only once every block is verified and stored.
//!
//! Query: `from_start=true` starts at the oldest segment held instead of the
//! live edge; `framed=true` wraps each segment in a frame so the client can
//! tell skips from data (what `shoal watch` uses):
//! `seq: u64 BE | kind: u8 (0 data, 1 skipped) | len: u32 BE | bytes`.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use shoal_core::ChannelId;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{err, parse_channel};
use crate::node::{NodeHandle, SegmentEvent};

/// Chunks buffered towards a slow client before the watcher waits for it.
const WATCH_BUFFER: usize = 16;
/// How often the watcher re-checks the store when no event arrives.
const POLL: Duration = Duration::from_millis(100);
/// How long `from_start` collects accepted seqs before picking the oldest.
const FROM_START_COLLECT: Duration = Duration::from_millis(1500);

/// `Default` is the live edge, unframed: the gateway's `/live/CHANNEL.ts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WatchParams {
    #[serde(default)]
    from_start: bool,
    #[serde(default)]
    framed: bool,
}

pub(crate) async fn watch(
    State(node): State<NodeHandle>,
    Path(id): Path<String>,
    Query(p): Query<WatchParams>,
) -> Response {
    let channel = match parse_channel(&id) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    // Subscribe before joining so no event between the two is missed.
    let events = node.subscribe();
    let history = if p.from_start { shoal_core::limits::MAX_HEAD_MANIFESTS } else { 0 };
    if let Err(e) = node.join_with_history(channel, history).await {
        return err(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(WATCH_BUFFER);
    tokio::spawn(run(node, channel, p, events, tx));
    ([(header::CONTENT_TYPE, "application/octet-stream")], Body::from_stream(ReceiverStream::new(rx))).into_response()
}

fn frame(seq: u64, kind: u8, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(13 + data.len());
    b.put_u64(seq);
    b.put_u8(kind);
    b.put_u32(data.len() as u32);
    b.put_slice(data);
    b.freeze()
}

async fn run(
    node: NodeHandle,
    channel: ChannelId,
    p: WatchParams,
    mut events: tokio::sync::broadcast::Receiver<SegmentEvent>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let store = node.store().clone();
    let target = Duration::from_millis(node.config().fetch.target_latency_ms);
    let mut next: Option<u64> = if p.from_start {
        store.channel_stats(&channel).filter(|s| s.segments > 0).map(|s| s.first_seq)
    } else {
        // The stored head is the live edge only if it is fresh; after a
        // restart it is history, and the live edge comes from the network
        // (the first manifest accepted after joining).
        let fresh_after = crate::node::now_ms().saturating_sub(2 * target.as_millis() as u64);
        store
            .head(&channel)
            .filter(|h| {
                store
                    .manifest(&channel, h.seq)
                    .ok()
                    .flatten()
                    .is_some_and(|m| m.manifest().published_at_ms >= fresh_after)
            })
            .map(|h| h.seq)
    };
    let mut skipped: BTreeSet<u64> = BTreeSet::new();
    // Seqs whose manifest this node accepted: for those the engine decides
    // (Ready or Skipped at the segment's own deadline). Only a seq whose
    // manifest never arrived is skipped here, once later ones play.
    let mut accepted: BTreeSet<u64> = BTreeSet::new();
    if p.from_start && next.is_none() {
        // History arrives from peers' head responses, possibly after a live
        // announcement: collect what is accepted for a moment and start at
        // the oldest, not at whichever came first.
        let until = tokio::time::Instant::now() + FROM_START_COLLECT;
        while let Ok(ev) = tokio::time::timeout_at(until, events.recv()).await {
            match ev {
                Ok(SegmentEvent::Accepted { channel: c, seq } | SegmentEvent::Ready { channel: c, seq })
                    if c == channel =>
                {
                    next = Some(next.map_or(seq, |n| n.min(seq)));
                    if accepted.len() < 1024 {
                        accepted.insert(seq);
                    }
                }
                Err(RecvError::Closed) => return,
                _ => {}
            }
        }
    }
    let mut newest_ready: Option<u64> = None;
    let mut waiting_since = Instant::now();
    loop {
        if let Some(n) = next {
            match store.manifest(&channel, n) {
                Ok(Some(m)) => {
                    // Declared sizes are the publisher's word: pre-allocate at most
                    // 16 MiB; the buffer grows only with verified bytes read.
                    let mut seg = BytesMut::with_capacity(m.manifest().segment.byte_len().min(16 << 20) as usize);
                    let mut complete = true;
                    for b in &m.manifest().segment.blocks {
                        match store.block_bytes(&b.cid) {
                            Ok(Some(bytes)) => seg.extend_from_slice(&bytes),
                            _ => {
                                complete = false;
                                break;
                            }
                        }
                    }
                    let out = match (complete, p.framed) {
                        (true, true) => frame(n, 0, &seg),
                        (true, false) => seg.freeze(),
                        (false, true) => frame(n, 1, &[]),
                        (false, false) => Bytes::new(),
                    };
                    if !complete {
                        tracing::warn!(channel = %channel, seq = n, "segment evicted or corrupt before it was played; skipped");
                    }
                    if !out.is_empty() && tx.send(Ok(out)).await.is_err() {
                        return; // the client went away
                    }
                    accepted.remove(&n);
                    next = Some(n + 1);
                    waiting_since = Instant::now();
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "store read failed while watching");
                }
            }
            // Not ready. Skip it if the engine gave up on it, or if later
            // segments are playable and this one is overdue.
            let overdue =
                !accepted.contains(&n) && newest_ready.is_some_and(|r| r > n) && waiting_since.elapsed() > target;
            let engine_skipped = skipped.remove(&n);
            if engine_skipped || overdue {
                tracing::warn!(channel = %channel, seq = n, "segment missed its deadline; skipped");
                if p.framed && tx.send(Ok(frame(n, 1, &[]))).await.is_err() {
                    return;
                }
                next = Some(n + 1);
                // A run of seqs whose manifests never arrived (a partition)
                // shares one wait: the clock keeps running across them, so
                // ten lost seqs cost one deadline, not ten.
                if engine_skipped {
                    waiting_since = Instant::now();
                }
                continue;
            }
        }
        if tx.is_closed() {
            return;
        }
        match tokio::time::timeout(POLL, events.recv()).await {
            Ok(Ok(ev)) => match ev {
                SegmentEvent::Accepted { channel: c, seq } if c == channel => {
                    if next.is_none_or(|n| seq >= n) && accepted.len() < 1024 {
                        accepted.insert(seq);
                    }
                    if next.is_none() {
                        next = Some(seq);
                        waiting_since = Instant::now();
                    }
                }
                SegmentEvent::Ready { channel: c, seq } if c == channel => {
                    newest_ready = Some(newest_ready.map_or(seq, |r| r.max(seq)));
                    if next.is_none() {
                        next = Some(seq);
                    }
                }
                // Bounded: only seqs at or after the one we wait for matter.
                SegmentEvent::Skipped { channel: c, seq }
                    if c == channel && next.is_none_or(|n| seq >= n) && skipped.len() < 1024 =>
                {
                    skipped.insert(seq);
                }
                _ => {}
            },
            Ok(Err(RecvError::Lagged(_))) | Err(_) => {}
            Ok(Err(RecvError::Closed)) => return,
        }
    }
}
