//! `POST /api/v1/publish`: the request body is the live input; the node cuts
//! it into segments, signs, stores and announces each one.
//!
//! Byte-stream mode (`format=bytes`, the only one until media ingest lands):
//! a segment is cut when `segment_ms` of wall-clock time has passed since it
//! began, or when it reaches `max_segment_bytes`, whichever comes first; the
//! manifest records the true duration.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    body::Body,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;
use shoal_core::{ChannelKey, StreamInfo};
use tokio::time::Instant;

use super::err;
use crate::node::{NodeHandle, PublishSegment};

/// Default block size: several peers can serve one segment at once.
pub(crate) const DEFAULT_BLOCK_SIZE: usize = 256 * 1024;
/// Hard cap on one segment, whatever its duration.
pub(crate) const DEFAULT_MAX_SEGMENT_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishParams {
    key: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    public: bool,
    #[serde(default = "default_segment_ms")]
    segment_ms: u64,
    #[serde(default)]
    block_size: Option<usize>,
    #[serde(default)]
    max_segment_bytes: Option<usize>,
}

fn default_segment_ms() -> u64 {
    1000
}

#[derive(Debug, serde::Serialize)]
struct PublishSummary {
    channel: String,
    segments: u64,
    bytes: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
}

pub(crate) async fn publish(State(node): State<NodeHandle>, Query(p): Query<PublishParams>, body: Body) -> Response {
    if !(100..=10_000).contains(&p.segment_ms) {
        return err(StatusCode::BAD_REQUEST, format!("segment_ms {} is outside 100..=10000", p.segment_ms));
    }
    let block_size = p.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
    if !(1024..=shoal_core::limits::MAX_BLOCK_SIZE as usize).contains(&block_size) {
        return err(StatusCode::BAD_REQUEST, format!("block_size {block_size} is outside 1024..=1048576"));
    }
    let max_seg = p.max_segment_bytes.unwrap_or(DEFAULT_MAX_SEGMENT_BYTES).min(block_size * 1024);
    let key: Arc<ChannelKey> = match node.shared.keystore.load(&p.key) {
        Ok(k) => Arc::new(k),
        Err(e) => return err(StatusCode::NOT_FOUND, e.to_string()),
    };
    let channel = key.channel_id();
    let info = p.title.clone().map(|title| StreamInfo { title, ..StreamInfo::default() });
    let directory = p.public.then(|| spawn_directory_announcer(&node, key.clone(), p.title.clone()));
    let mut stream = body.into_data_stream();
    let seg_len = Duration::from_millis(p.segment_ms);
    let mut buf = BytesMut::new();
    let mut started = Instant::now();
    let mut summary =
        PublishSummary { channel: channel.to_string(), segments: 0, bytes: 0, first_seq: None, last_seq: None };
    let result: Result<(), String> = async {
        loop {
            let deadline = started + seg_len;
            let chunk = tokio::select! {
                c = stream.next() => c,
                () = tokio::time::sleep_until(deadline) => {
                    if !buf.is_empty() {
                        cut(&node, &key, &mut buf, &mut started, block_size, info.clone(), &mut summary).await?;
                    } else {
                        started = Instant::now();
                    }
                    continue;
                }
            };
            match chunk {
                None => break,
                Some(Err(e)) => return Err(format!("input stream failed: {e}")),
                Some(Ok(bytes)) => {
                    summary.bytes += bytes.len() as u64;
                    buf.extend_from_slice(&bytes);
                    while buf.len() >= max_seg {
                        let rest = buf.split_off(max_seg);
                        cut(&node, &key, &mut buf, &mut started, block_size, info.clone(), &mut summary).await?;
                        buf = rest;
                    }
                }
            }
        }
        if !buf.is_empty() {
            cut(&node, &key, &mut buf, &mut started, block_size, info.clone(), &mut summary).await?;
        }
        Ok(())
    }
    .await;
    if let Some(d) = directory {
        d.abort();
    }
    match result {
        Ok(()) => Json(summary).into_response(),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn cut(
    node: &NodeHandle,
    key: &Arc<ChannelKey>,
    buf: &mut BytesMut,
    started: &mut Instant,
    block_size: usize,
    info: Option<StreamInfo>,
    summary: &mut PublishSummary,
) -> Result<(), String> {
    let data: Bytes = std::mem::take(buf).freeze();
    let duration_ms = started.elapsed().as_millis().clamp(1, u128::from(u32::MAX)) as u32;
    *started = Instant::now();
    let seg = PublishSegment { data, duration_ms, keyframe: true, block_size, info };
    let seq = node.publish(key.clone(), seg).await.map_err(|e| e.to_string())?;
    summary.segments += 1;
    summary.first_seq.get_or_insert(seq);
    summary.last_seq = Some(seq);
    Ok(())
}

/// How often a public channel re-announces itself in the directory.
const DIRECTORY_INTERVAL: Duration = Duration::from_secs(30);

/// Announces a public channel on the directory topic now and every 30 s
/// until aborted.
fn spawn_directory_announcer(
    node: &NodeHandle,
    key: Arc<ChannelKey>,
    title: Option<String>,
) -> tokio::task::JoinHandle<()> {
    let node = node.clone();
    tokio::spawn(async move {
        let started_at_ms = crate::node::now_ms();
        let mut tick = tokio::time::interval(DIRECTORY_INTERVAL);
        loop {
            tick.tick().await;
            let channel = key.channel_id();
            let entry = shoal_core::DirectoryEntry {
                channel,
                title: title.clone().unwrap_or_default(),
                description: String::new(),
                renditions: Vec::new(),
                started_at_ms,
                announced_at_ms: crate::node::now_ms(),
                head_seq: node.store().head(&channel).map_or(0, |h| h.seq),
            };
            match key.sign_directory_entry(&entry) {
                Ok(signed) => {
                    if let Err(e) = node.net().publish_directory(Bytes::from(signed.encode())).await {
                        tracing::debug!(error = %e, "directory announcement not sent");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "directory entry not signed"),
            }
        }
    })
}
