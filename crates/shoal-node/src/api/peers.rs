//! The exclusion list over the API: `POST /api/v1/peers/block` and
//! `/unblock` with `{"target": "<peer id or CIDR>"}`, `GET
//! /api/v1/peers/blocked`, and `POST /api/v1/config/reload`. The writes
//! need the token (see the parent module).

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use shoal_net::DenyRule;

use super::err;
use crate::node::{NodeError, NodeHandle};

/// The body of a block or unblock call.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Target {
    target: String,
}

fn parse(t: &Target) -> Result<DenyRule, Box<Response>> {
    t.target.parse::<DenyRule>().map_err(|e| Box::new(err(StatusCode::BAD_REQUEST, e.to_string())))
}

fn failed(e: &NodeError) -> Response {
    let status = match e {
        NodeError::Refused(_) | NodeError::Config(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    err(status, e.to_string())
}

pub(crate) async fn block(State(node): State<NodeHandle>, Json(t): Json<Target>) -> Response {
    let rule = match parse(&t) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    match node.block(rule).await {
        Ok(closed) => Json(serde_json::json!({ "blocked": rule.to_string(), "closed": closed })).into_response(),
        Err(e) => failed(&e),
    }
}

pub(crate) async fn unblock(State(node): State<NodeHandle>, Json(t): Json<Target>) -> Response {
    let rule = match parse(&t) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    match node.unblock(rule).await {
        Ok(()) => Json(serde_json::json!({ "unblocked": rule.to_string() })).into_response(),
        Err(e) => failed(&e),
    }
}

pub(crate) async fn blocked(State(node): State<NodeHandle>) -> Response {
    match node.blocked().await {
        Ok(rules) => Json(serde_json::json!({ "blocked": rules.iter().map(ToString::to_string).collect::<Vec<_>>() }))
            .into_response(),
        Err(e) => failed(&e),
    }
}

pub(crate) async fn reload(State(node): State<NodeHandle>) -> Response {
    match node.reload_config().await {
        Ok(report) => Json(report).into_response(),
        Err(e) => failed(&e),
    }
}
