//! The HLS gateway, on the API's address (loopback by default; `--api` or
//! `api = "…"` in the config moves it):
//!
//! - `GET /live/CHANNEL.m3u8`: a live media playlist (RFC 8216), built by
//!   `shoal_media::hls::LivePlaylist` from the segments this node has
//!   committed (every block verified and stored).
//! - `GET /live/CHANNEL/SEQ.ts`: one segment, served only once committed,
//!   and for as long as the store keeps it, so a segment that left the
//!   playlist stays fetchable (RFC 8216 §6.2.2).
//! - `GET /live/CHANNEL.ts`: one continuous MPEG-TS stream (the watch
//!   endpoint's, as `video/mp2t`) for VLC, ffplay or `curl | mpv -`.
//!
//! Opening any of them joins the channel, as an IPFS gateway fetches what
//! it is asked for. Reads need no token, like the rest of the read API.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{Path, Query, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::{Bytes, BytesMut};
use shoal_core::ChannelId;
use shoal_media::hls::{LivePlaylist, PlaylistConfig, SegmentMeta};
use tokio::sync::broadcast::error::RecvError;

use super::{parse_channel, watch};
use crate::node::NodeHandle;

/// Channels whose playlist state the gateway keeps at once. Each is a few
/// KiB (at most `MAX_PLAYLIST_SEGMENTS` entries); past 64 the least recently
/// requested is dropped, and its next request starts a fresh playlist.
const MAX_GATEWAY_CHANNELS: usize = 64;
/// Manifests of history asked for when a playlist is first opened, so the
/// window fills from what peers hold instead of one segment a second.
const JOIN_HISTORY: u32 = 8;
/// Most manifests read from the store per playlist request: the newest
/// window, even after a long pause between requests.
const MAX_READ_PER_REQUEST: usize = 64;
/// How long the first request for a channel waits for a playable segment
/// before answering 404: long enough to join and fetch one segment.
const FIRST_SEGMENT_WAIT: Duration = Duration::from_secs(10);
/// How often that wait re-checks the store when no event arrives.
const POLL: Duration = Duration::from_millis(100);
/// Segments are immutable (a signed seq never changes); caches may keep them.
const SEGMENT_CACHE: &str = "public, max-age=86400, immutable";

/// The HLS content type (RFC 8216 §4).
pub(crate) const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
/// The MPEG-TS content type.
pub(crate) const TS_TYPE: &str = "video/mp2t";

/// The gateway's state: one live playlist per channel requested.
#[derive(Debug)]
struct Gateway {
    node: NodeHandle,
    playlists: Mutex<HashMap<ChannelId, Tracked>>,
}

#[derive(Debug)]
struct Tracked {
    playlist: LivePlaylist,
    last_used: Instant,
}

/// The gateway's routes, with their own state (merged into the API router).
pub(super) fn routes<S: Clone + Send + Sync + 'static>(node: NodeHandle) -> Router<S> {
    let gw = Arc::new(Gateway { node, playlists: Mutex::new(HashMap::new()) });
    Router::new().route("/live/{file}", get(live)).route("/live/{channel}/{segment}", get(segment)).with_state(gw)
}

fn with_headers(mut r: Response, content_type: &'static str, cache: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    // Players on other origins (a web player page, hls.js) may read these.
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    r
}

fn not_found(msg: String) -> Response {
    let mut r = super::err(StatusCode::NOT_FOUND, msg);
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    r
}

/// `/live/CHANNEL.m3u8` or `/live/CHANNEL.ts`.
async fn live(State(gw): State<Arc<Gateway>>, Path(file): Path<String>) -> Response {
    if let Some(id) = file.strip_suffix(".m3u8") {
        let channel = match parse_channel(id) {
            Ok(c) => c,
            Err(r) => return *r,
        };
        return playlist(&gw, channel).await;
    }
    if let Some(id) = file.strip_suffix(".ts") {
        if let Err(r) = parse_channel(id) {
            return *r;
        }
        let r = watch::watch(State(gw.node.clone()), Path(id.to_owned()), Query(watch::WatchParams::default())).await;
        if !r.status().is_success() {
            return r;
        }
        return with_headers(r, TS_TYPE, "no-store");
    }
    not_found(format!(
        "no such gateway path /live/{file}: use /live/CHANNEL.m3u8, /live/CHANNEL.ts or /live/CHANNEL/SEQ.ts"
    ))
}

async fn playlist(gw: &Gateway, channel: ChannelId) -> Response {
    let fresh = !lock(gw).contains_key(&channel);
    // Subscribe before joining so the first segment's event is not missed.
    let mut events = gw.node.subscribe();
    let joined = if fresh {
        gw.node.join_with_history(channel, JOIN_HISTORY).await
    } else {
        // Cheap when already joined; rejoins a channel left through the API.
        gw.node.join(channel).await
    };
    if let Err(e) = joined {
        return super::err(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    let deadline = tokio::time::Instant::now() + FIRST_SEGMENT_WAIT;
    loop {
        if let Some(text) = update(gw, channel) {
            return with_headers(text.into_response(), PLAYLIST_TYPE, "no-cache");
        }
        // Nothing playable yet: wait for a Ready event (or poll the store).
        if tokio::time::Instant::now() >= deadline {
            return not_found(format!(
                "no segment of channel {channel} is playable here yet (waited {}s): is it live, and is this node connected to its peers?",
                FIRST_SEGMENT_WAIT.as_secs()
            ));
        }
        // Any event (or none within POLL) is a reason to look again.
        if let Ok(Err(RecvError::Closed)) = tokio::time::timeout(POLL, events.recv()).await {
            return super::err(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down");
        }
    }
}

fn lock(gw: &Gateway) -> std::sync::MutexGuard<'_, HashMap<ChannelId, Tracked>> {
    // The map holds plain values, changed in whole steps, never left half
    // updated by a panic.
    gw.playlists.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Offers the newly committed segments to the channel's playlist and
/// renders it; `None` while it lists nothing.
fn update(gw: &Gateway, channel: ChannelId) -> Option<String> {
    let store = gw.node.store();
    let head = store.head(&channel).map(|h| h.seq);
    let next = lock(gw).get(&channel).and_then(|t| t.playlist.next_seq());
    // Read outside the lock; offers ignore seqs the playlist already passed,
    // so two requests racing here cannot list a segment twice.
    let available: Vec<SegmentMeta> = match head {
        Some(head) => {
            let from = next.unwrap_or(0).max(head.saturating_sub(MAX_READ_PER_REQUEST as u64 - 1));
            read_metas(gw, channel, from, head)
        }
        None => Vec::new(),
    };
    let mut map = lock(gw);
    if !map.contains_key(&channel) && map.len() >= MAX_GATEWAY_CHANNELS {
        let oldest = map.iter().min_by_key(|(_, t)| t.last_used).map(|(c, _)| *c);
        if let Some(c) = oldest {
            map.remove(&c);
        }
    }
    let gap_wait_ms = gw.node.config().fetch.target_latency_ms;
    let tracked = map.entry(channel).or_insert_with(|| Tracked {
        playlist: LivePlaylist::new(PlaylistConfig { gap_wait_ms, ..PlaylistConfig::default() }),
        last_used: Instant::now(),
    });
    tracked.last_used = Instant::now();
    let raises = tracked.playlist.target_raises();
    tracked.playlist.offer(&available, crate::node::now_ms());
    if tracked.playlist.target_raises() > raises {
        tracing::warn!(
            channel = %channel,
            target_s = tracked.playlist.target_duration_s(),
            "a segment exceeded the playlist's target duration; players may stall (cut segments at shorter keyframe intervals)"
        );
    }
    if tracked.playlist.is_empty() {
        return None;
    }
    Some(tracked.playlist.render(|seq| format!("{channel}/{seq}.ts")))
}

/// Metadata of the committed segments with seq in `from..=to`.
fn read_metas(gw: &Gateway, channel: ChannelId, from: u64, to: u64) -> Vec<SegmentMeta> {
    let store = gw.node.store();
    let stored = match store.manifest_range(&channel, from..=to, MAX_READ_PER_REQUEST) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, channel = %channel, "store read failed while building a playlist");
            return Vec::new();
        }
    };
    stored
        .iter()
        .filter_map(|s| match store.manifest(&channel, s.seq) {
            Ok(Some(m)) => Some(SegmentMeta {
                seq: s.seq,
                duration_ms: u64::from(m.manifest().segment.duration_ms),
                published_at_ms: m.manifest().published_at_ms,
            }),
            Ok(None) => None, // evicted between the two reads
            Err(e) => {
                tracing::error!(error = %e, channel = %channel, seq = s.seq, "stored manifest unreadable");
                None
            }
        })
        .collect()
}

/// `/live/CHANNEL/SEQ.ts`.
async fn segment(State(gw): State<Arc<Gateway>>, Path((id, file)): Path<(String, String)>) -> Response {
    let channel = match parse_channel(&id) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(seq) = file.strip_suffix(".ts").and_then(|s| s.parse::<u64>().ok()) else {
        return not_found(format!("no such segment {file:?}: segment URIs are /live/CHANNEL/SEQ.ts"));
    };
    if let Err(e) = gw.node.join(channel).await {
        return super::err(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    match segment_bytes(&gw.node, channel, seq) {
        Some(data) => with_headers(data.into_response(), TS_TYPE, SEGMENT_CACHE),
        None => not_found(format!(
            "segment {seq} of channel {channel} is not stored on this node: not fetched yet, skipped, or evicted"
        )),
    }
}

/// A committed segment's bytes, or `None` if it is not (or no longer) whole
/// in the store.
fn segment_bytes(node: &NodeHandle, channel: ChannelId, seq: u64) -> Option<Bytes> {
    let store = node.store();
    let m = store.manifest(&channel, seq).ok().flatten()?;
    // Declared sizes are the publisher's word: pre-allocate at most 16 MiB.
    let mut out = BytesMut::with_capacity(m.manifest().segment.byte_len().min(16 << 20) as usize);
    for b in &m.manifest().segment.blocks {
        out.extend_from_slice(&store.block_bytes(&b.cid).ok().flatten()?);
    }
    Some(out.freeze())
}
