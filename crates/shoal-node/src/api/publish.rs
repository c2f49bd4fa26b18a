//! `POST /api/v1/publish`: the request body is the live input; the node cuts
//! it into segments, signs, stores and announces each one.
//!
//! MPEG-TS mode (`format=ts`, the default): the body goes through
//! `shoal_media::segment::Segmenter`, which cuts at keyframes once a segment
//! reaches `segment_ms` (by time for audio-only streams, or when no keyframe
//! comes within `keyframe_timeout_ms`), never beyond `max_segment_bytes`,
//! and starts every segment with PAT and PMT. The manifest records the
//! duration from the stream's timestamps and whether the segment starts at
//! a keyframe. A body that is not MPEG-TS gets 400 and says what it is.
//!
//! Byte-stream mode (`format=bytes`): a segment is cut when `segment_ms` of
//! wall-clock time has passed since it began, or when it reaches
//! `max_segment_bytes`, whichever comes first; the manifest records the true
//! duration.

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
use shoal_media::segment::{IngestError, IngestStats, Segmenter, SegmenterConfig};
use tokio::time::Instant;

use super::err;
use crate::node::{NodeHandle, PublishSegment};

/// Default block size: several peers can serve one segment at once.
pub(crate) const DEFAULT_BLOCK_SIZE: usize = 256 * 1024;
/// Hard cap on one segment, whatever its duration.
pub(crate) const DEFAULT_MAX_SEGMENT_BYTES: usize = 8 * 1024 * 1024;
/// With video, how long the segmenter waits for a keyframe before cutting by
/// time: encoders send one every 1-2 s when set up for live streaming
/// (OBS's "Keyframe Interval"), so 5 s without one means a misconfigured
/// encoder, and cutting by time keeps the stream moving.
const DEFAULT_KEYFRAME_TIMEOUT_MS: u64 = 5000;
/// A live MPEG-TS input that sends nothing for this long has stopped: the
/// publish ends (the last segment is flushed) instead of waiting forever.
/// Encoders send PAT/PMT and PCR many times a second even for a still image.
const TS_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the request body is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum InputFormat {
    /// MPEG-TS, cut at keyframes.
    #[default]
    Ts,
    /// Opaque bytes, cut by wall-clock time.
    Bytes,
}

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
    #[serde(default)]
    format: InputFormat,
    #[serde(default)]
    keyframe_timeout_ms: Option<u64>,
}

fn default_segment_ms() -> u64 {
    1000
}

#[derive(Debug, serde::Serialize)]
struct PublishSummary {
    channel: String,
    format: InputFormat,
    segments: u64,
    bytes: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    /// MPEG-TS mode only: what the segmenter saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    ingest: Option<IngestSummary>,
}

/// The segmenter's counts, for the client to warn about.
#[derive(Debug, serde::Serialize)]
struct IngestSummary {
    packets: u64,
    skipped_packets: u64,
    skipped_bytes: u64,
    null_packets: u64,
    keyframes: u64,
    cuts_without_keyframe: u64,
    cuts_at_size_cap: u64,
    idr_without_parameter_sets: u64,
    timestamp_jumps: u64,
    duration_ms: u64,
    video_codec: Option<&'static str>,
    audio_codec: Option<&'static str>,
}

impl From<&IngestStats> for IngestSummary {
    fn from(s: &IngestStats) -> Self {
        Self {
            packets: s.packets,
            skipped_packets: s.skipped_packets,
            skipped_bytes: s.skipped_bytes,
            null_packets: s.null_packets,
            keyframes: s.keyframes,
            cuts_without_keyframe: s.cuts_without_keyframe,
            cuts_at_size_cap: s.cuts_at_size_cap,
            idr_without_parameter_sets: s.idr_without_parameter_sets,
            timestamp_jumps: s.timestamp_jumps,
            duration_ms: s.duration_ms,
            video_codec: s.video_codec,
            audio_codec: s.audio_codec,
        }
    }
}

/// Why a publish stopped early.
enum PublishFailure {
    /// The input is unusable (400).
    Input(IngestError),
    /// The node or the connection failed (500).
    Other(String),
}

impl From<String> for PublishFailure {
    fn from(e: String) -> Self {
        Self::Other(e)
    }
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
    let keyframe_timeout_ms = p.keyframe_timeout_ms.unwrap_or(DEFAULT_KEYFRAME_TIMEOUT_MS.max(2 * p.segment_ms));
    if !(p.segment_ms..=60_000).contains(&keyframe_timeout_ms) {
        return err(
            StatusCode::BAD_REQUEST,
            format!("keyframe_timeout_ms {keyframe_timeout_ms} is outside segment_ms..=60000"),
        );
    }
    let key: Arc<ChannelKey> = match node.shared.keystore.load(&p.key) {
        Ok(k) => Arc::new(k),
        Err(e) => return err(StatusCode::NOT_FOUND, e.to_string()),
    };
    let channel = key.channel_id();
    let info = p.title.clone().map(|title| StreamInfo { title, ..StreamInfo::default() });
    let directory = p.public.then(|| spawn_directory_announcer(&node, key.clone(), p.title.clone()));
    let mut summary = PublishSummary {
        channel: channel.to_string(),
        format: p.format,
        segments: 0,
        bytes: 0,
        first_seq: None,
        last_seq: None,
        ingest: None,
    };
    let result = match p.format {
        InputFormat::Bytes => publish_bytes(&node, &key, body, p.segment_ms, max_seg, block_size, info, &mut summary)
            .await
            .map_err(Into::into),
        InputFormat::Ts => {
            let cfg =
                SegmenterConfig { target_duration_ms: p.segment_ms, max_segment_bytes: max_seg, keyframe_timeout_ms };
            publish_ts(&node, &key, body, cfg, block_size, p.title.clone(), &mut summary).await
        }
    };
    if let Some(d) = directory {
        d.abort();
    }
    match result {
        Ok(()) => Json(summary).into_response(),
        Err(PublishFailure::Input(e)) => err(StatusCode::BAD_REQUEST, e.to_string()),
        Err(PublishFailure::Other(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// MPEG-TS mode: the segmenter decides the cuts.
async fn publish_ts(
    node: &NodeHandle,
    key: &Arc<ChannelKey>,
    body: Body,
    cfg: SegmenterConfig,
    block_size: usize,
    title: Option<String>,
    summary: &mut PublishSummary,
) -> Result<(), PublishFailure> {
    let keyframe_timeout_ms = cfg.keyframe_timeout_ms;
    let mut segmenter = Segmenter::new(cfg);
    let mut stream = body.into_data_stream();
    let mut warned = IngestStats::default();
    let result = async {
        loop {
            let chunk = match tokio::time::timeout(TS_IDLE_TIMEOUT, stream.next()).await {
                Ok(Some(Ok(c))) => c,
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(PublishFailure::Other(format!("input stream failed: {e}"))),
                Err(_) => {
                    tracing::warn!(secs = TS_IDLE_TIMEOUT.as_secs(), "no MPEG-TS input; ending the publish");
                    break;
                }
            };
            summary.bytes += chunk.len() as u64;
            let segments = segmenter.push(&chunk).map_err(PublishFailure::Input)?;
            for seg in segments {
                publish_ts_segment(node, key, &segmenter, seg, block_size, &title, summary).await?;
            }
            warn_new_problems(&segmenter.stats(), &mut warned, keyframe_timeout_ms);
        }
        if let Some(seg) = segmenter.finish() {
            publish_ts_segment(node, key, &segmenter, seg, block_size, &title, summary).await?;
        }
        if let Some(e) = segmenter.error() {
            return Err(PublishFailure::Input(e.clone()));
        }
        warn_new_problems(&segmenter.stats(), &mut warned, keyframe_timeout_ms);
        Ok(())
    }
    .await;
    summary.ingest = Some(IngestSummary::from(&segmenter.stats()));
    result
}

async fn publish_ts_segment(
    node: &NodeHandle,
    key: &Arc<ChannelKey>,
    segmenter: &Segmenter,
    seg: shoal_media::segment::TsSegment,
    block_size: usize,
    title: &Option<String>,
    summary: &mut PublishSummary,
) -> Result<(), String> {
    let stats = segmenter.stats();
    let info = StreamInfo {
        video_codec: stats.video_codec.unwrap_or_default().to_owned(),
        audio_codec: stats.audio_codec.unwrap_or_default().to_owned(),
        bitrate_kbps: (seg.data.len() as u64 * 8).checked_div(seg.duration_ms).unwrap_or(0).min(u64::from(u32::MAX))
            as u32,
        title: title.clone().unwrap_or_default(),
    };
    let segment = PublishSegment {
        data: seg.data,
        duration_ms: seg.duration_ms.clamp(1, u64::from(u32::MAX)) as u32,
        keyframe: seg.keyframe,
        block_size,
        info: Some(info),
    };
    let seq = node.publish(key.clone(), segment).await.map_err(|e| e.to_string())?;
    summary.segments += 1;
    summary.first_seq.get_or_insert(seq);
    summary.last_seq = Some(seq);
    Ok(())
}

/// Logs input problems once each time their counts grow.
fn warn_new_problems(now: &IngestStats, seen: &mut IngestStats, keyframe_timeout_ms: u64) {
    if now.cuts_without_keyframe > seen.cuts_without_keyframe {
        tracing::warn!(
            cuts = now.cuts_without_keyframe,
            keyframe_timeout_ms,
            "no keyframe within the timeout: segment cut by time, so players cannot start on it; \
             set the encoder's keyframe interval (ffmpeg -g, OBS 'Keyframe Interval') to about the segment duration"
        );
    }
    if now.skipped_packets > seen.skipped_packets {
        tracing::warn!(
            skipped = now.skipped_packets,
            bytes = now.skipped_bytes,
            "truncated or damaged MPEG-TS packets skipped"
        );
    }
    seen.cuts_without_keyframe = now.cuts_without_keyframe;
    seen.skipped_packets = now.skipped_packets;
}

/// Byte-stream mode: cut by wall-clock time and size.
#[allow(clippy::too_many_arguments)]
async fn publish_bytes(
    node: &NodeHandle,
    key: &Arc<ChannelKey>,
    body: Body,
    segment_ms: u64,
    max_seg: usize,
    block_size: usize,
    info: Option<StreamInfo>,
    summary: &mut PublishSummary,
) -> Result<(), String> {
    let mut stream = body.into_data_stream();
    let seg_len = Duration::from_millis(segment_ms);
    let mut buf = BytesMut::new();
    let mut started = Instant::now();
    async {
        loop {
            let deadline = started + seg_len;
            let chunk = tokio::select! {
                c = stream.next() => c,
                () = tokio::time::sleep_until(deadline) => {
                    if !buf.is_empty() {
                        cut(node, key, &mut buf, &mut started, block_size, info.clone(), summary).await?;
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
                        cut(node, key, &mut buf, &mut started, block_size, info.clone(), summary).await?;
                        buf = rest;
                    }
                }
            }
        }
        if !buf.is_empty() {
            cut(node, key, &mut buf, &mut started, block_size, info.clone(), summary).await?;
        }
        Ok(())
    }
    .await
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
