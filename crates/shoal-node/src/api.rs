//! The local HTTP API, the HLS gateway (`api/hls.rs`) and the browser page
//! (`api/web.rs`) on `--api`.
//!
//! Reads are open (the default bind is loopback). Every write (publish, key
//! generation, join, leave) needs `Authorization: Bearer TOKEN`, where TOKEN
//! is `DATA_DIR/api.token`; it is compared in constant time, and a request
//! without it gets 401 and changes nothing.

mod hls;
mod peers;
mod publish;
mod watch;
mod web;

use std::collections::BTreeMap;

use axum::{
    Json, Router,
    extract::{Path, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Serialize;
use shoal_core::ChannelId;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::node::NodeHandle;

/// The API's error body: a message a user can act on.
#[derive(Debug, Serialize)]
pub(crate) struct ApiError {
    error: String,
}

pub(crate) fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ApiError { error: msg.into() })).into_response()
}

fn parse_channel(s: &str) -> Result<ChannelId, Box<Response>> {
    s.parse::<ChannelId>().map_err(|e| Box::new(err(StatusCode::BAD_REQUEST, e.to_string())))
}

/// Serves the API until `cancel` fires.
pub(crate) async fn serve(listener: tokio::net::TcpListener, node: NodeHandle, cancel: CancellationToken) {
    let app = router(node);
    let r = axum::serve(listener, app).with_graceful_shutdown(async move { cancel.cancelled().await }).await;
    if let Err(e) = r {
        tracing::error!(error = %e, "API server stopped");
    }
}

/// The routes (public for in-process tests).
pub fn router(node: NodeHandle) -> Router {
    let writes = Router::new()
        .route("/api/v1/publish", post(publish::publish))
        .route("/api/v1/keys/{name}", post(generate_key))
        .route("/api/v1/channels/{id}/join", post(join))
        .route("/api/v1/channels/{id}/leave", post(leave))
        .route("/api/v1/peers/block", post(peers::block))
        .route("/api/v1/peers/unblock", post(peers::unblock))
        .route("/api/v1/config/reload", post(peers::reload))
        .route_layer(middleware::from_fn_with_state(node.clone(), require_token));
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/peers", get(peers))
        .route("/api/v1/peers/blocked", get(peers::blocked))
        .route("/api/v1/channels", get(channels))
        .route("/api/v1/keys", get(list_keys))
        .route("/api/v1/keys/{name}", get(show_key))
        .route("/api/v1/watch/{id}", get(watch::watch))
        .route("/metrics", get(metrics))
        .merge(writes)
        .merge(hls::routes(node.clone()))
        .merge(web::routes())
        .with_state(node)
}

async fn require_token(State(node): State<NodeHandle>, headers: HeaderMap, req: Request, next: Next) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = node.shared.token.as_bytes();
    // Constant time: the comparison must not leak how many bytes matched.
    let ok = given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected));
    if !ok {
        return err(
            StatusCode::UNAUTHORIZED,
            "this call changes the node and needs `Authorization: Bearer TOKEN` (TOKEN is in DATA_DIR/api.token)",
        );
    }
    next.run(req).await
}

#[derive(Debug, Serialize)]
struct Status {
    peer_id: String,
    listen_addrs: Vec<String>,
    uptime_s: u64,
    peers: usize,
    channels: Vec<crate::node::ChannelStatus>,
    counters: Counters,
    received_from: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
struct Counters {
    segments_published: u64,
    segments_complete: u64,
    segments_skipped: u64,
    block_bytes_received: u64,
    duplicate_bytes: u64,
    stored_bytes: u64,
}

async fn status(State(node): State<NodeHandle>) -> Response {
    let net = node.net().status().await.ok();
    let m = node.metrics();
    let body = Status {
        peer_id: node.peer_id().to_string(),
        listen_addrs: node.listen_addrs().await.iter().map(ToString::to_string).collect(),
        uptime_s: node.shared.started.elapsed().as_secs(),
        peers: net.as_ref().map_or(0, |n| n.connected.len()),
        channels: node.channels().await.unwrap_or_default(),
        counters: Counters {
            segments_published: m.segments_published.get(),
            segments_complete: m.segments_complete.get(),
            segments_skipped: m.segments_skipped.get(),
            block_bytes_received: m.block_bytes_received.get(),
            duplicate_bytes: m.duplicate_bytes.get(),
            stored_bytes: node.store().stored_bytes(),
        },
        received_from: m.received_from().into_iter().map(|(p, b)| (p.to_string(), b)).collect(),
    };
    Json(body).into_response()
}

async fn peers(State(node): State<NodeHandle>) -> Response {
    match node.net().status().await {
        Ok(s) => Json(serde_json::json!({ "peers": s.connected.iter().map(ToString::to_string).collect::<Vec<_>>() }))
            .into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn channels(State(node): State<NodeHandle>) -> Response {
    let joined = node.channels().await.unwrap_or_default();
    let directory: Vec<serde_json::Value> = node
        .net()
        .directory()
        .await
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let e = e.entry();
            serde_json::json!({
                "channel": e.channel.to_string(),
                "title": e.title,
                "description": e.description,
                "started_at_ms": e.started_at_ms,
                "announced_at_ms": e.announced_at_ms,
                "head_seq": e.head_seq,
            })
        })
        .collect();
    Json(serde_json::json!({ "joined": joined, "directory": directory })).into_response()
}

async fn join(State(node): State<NodeHandle>, Path(id): Path<String>) -> Response {
    let channel = match parse_channel(&id) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match node.join(channel).await {
        Ok(()) => Json(serde_json::json!({ "joined": channel.to_string() })).into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn leave(State(node): State<NodeHandle>, Path(id): Path<String>) -> Response {
    let channel = match parse_channel(&id) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match node.leave(channel).await {
        Ok(()) => Json(serde_json::json!({ "left": channel.to_string() })).into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn list_keys(State(node): State<NodeHandle>) -> Response {
    match node.shared.keystore.list() {
        Ok(keys) => Json(
            keys.into_iter()
                .map(|(name, id)| match id {
                    Ok(id) => serde_json::json!({ "name": name, "channel": id.to_string() }),
                    Err(e) => serde_json::json!({ "name": name, "error": e }),
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn show_key(State(node): State<NodeHandle>, Path(name): Path<String>) -> Response {
    match node.shared.keystore.load(&name) {
        Ok(k) => Json(serde_json::json!({ "name": name, "channel": k.channel_id().to_string() })).into_response(),
        Err(e) => err(StatusCode::NOT_FOUND, e.to_string()),
    }
}

async fn generate_key(State(node): State<NodeHandle>, Path(name): Path<String>) -> Response {
    match node.shared.keystore.generate(&name) {
        Ok(id) => Json(serde_json::json!({ "name": name, "channel": id.to_string() })).into_response(),
        Err(e) => err(StatusCode::CONFLICT, e.to_string()),
    }
}

async fn metrics(State(node): State<NodeHandle>) -> Response {
    let mut out = String::new();
    let encoded = match node.shared.registry.lock() {
        Ok(reg) => prometheus_client::encoding::text::encode(&mut out, &reg).is_ok(),
        Err(_) => false,
    };
    if !encoded {
        return err(StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed");
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out).into_response()
}
