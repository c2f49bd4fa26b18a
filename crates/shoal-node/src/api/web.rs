//! The browser page, served by the node itself (no npm, nothing loaded from
//! elsewhere): `/` shows the node's status, its peers and the public channel
//! directory, refreshed every two seconds from the read API; `/watch/CHANNEL`
//! plays the channel's HLS playlist in a `<video>` where the browser plays
//! HLS natively, and otherwise shows the URL and the VLC, mpv and ffplay
//! commands. The files are compiled into the binary (`api/web/`).

use axum::{
    Router,
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::parse_channel;

const INDEX_HTML: &str = include_str!("web/index.html");
const WATCH_HTML: &str = include_str!("web/watch.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE_CSS: &str = include_str!("web/style.css");

/// Only this node's own scripts, styles and media: directory titles come
/// from strangers, and the page never puts them in HTML, but a policy that
/// forbids inline and foreign scripts is the second lock on that door.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'";

/// The page's routes.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { page(INDEX_HTML) }))
        .route("/watch/{channel}", get(watch))
        .route("/assets/app.js", get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }))
        .route("/assets/style.css", get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }))
}

fn page(html: &'static str) -> Response {
    let mut r = html.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The watch page is the same file for every channel (the script reads the
/// id from the URL); a malformed id gets a 400 that says what is wrong.
async fn watch(Path(id): Path<String>) -> Response {
    match parse_channel(&id) {
        Ok(_) => page(WATCH_HTML),
        Err(_) => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")],
            format!("{id:?} is not a channel id: a channel id is the k51… text `shoal key generate` prints\n"),
        )
            .into_response(),
    }
}
