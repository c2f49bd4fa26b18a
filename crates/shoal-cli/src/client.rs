//! Client commands: find the daemon through its data dir (like kubo's `api`
//! file), then talk to its local API.

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use futures::StreamExt;
use shoal_core::ChannelId;
use shoal_node::{
    config::{DEFAULT_API, default_data_dir},
    identity::{API_FILE, TOKEN_FILE},
};
use tokio::io::AsyncRead;

use crate::ClientArgs;

struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    fn find(args: &ClientArgs) -> Result<Self> {
        let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
        let addr = match &args.api {
            Some(a) => a.clone(),
            None => std::fs::read_to_string(dir.join(API_FILE))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| DEFAULT_API.to_owned()),
        };
        let token = args
            .token
            .clone()
            .or_else(|| std::fs::read_to_string(dir.join(TOKEN_FILE)).ok().map(|s| s.trim().to_owned()));
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?;
        let base = if addr.starts_with("http") { addr } else { format!("http://{addr}") };
        Ok(Self { base, token, http })
    }

    fn no_daemon(&self, e: &reqwest::Error) -> anyhow::Error {
        if e.is_connect() {
            anyhow::anyhow!(
                "no shoal node is answering at {}; start one with `shoal node` (or point at it with --data-dir / --api)",
                self.base
            )
        } else {
            anyhow::anyhow!("request to {} failed: {e}", self.base)
        }
    }

    async fn check(resp: reqwest::Response) -> Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let msg = body.get("error").and_then(|e| e.as_str()).unwrap_or("no details");
        bail!("{msg} (HTTP {status})")
    }

    async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await.map_err(|e| self.no_daemon(&e))?;
        Ok(Self::check(resp).await?.json().await?)
    }

    fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }
}

pub(crate) async fn show(args: &ClientArgs, path: &str, json: bool) -> Result<()> {
    let api = Api::find(args)?;
    let v = api.get_json(path).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match path {
        "/api/v1/status" => {
            println!("peer id:  {}", v["peer_id"].as_str().unwrap_or("?"));
            println!("uptime:   {} s", v["uptime_s"]);
            println!("peers:    {}", v["peers"]);
            for a in v["listen_addrs"].as_array().into_iter().flatten() {
                println!("listen:   {}", a.as_str().unwrap_or("?"));
            }
            for c in v["channels"].as_array().into_iter().flatten() {
                println!(
                    "channel:  {} head={} complete={} skipped={}{}",
                    c["channel"].as_str().unwrap_or("?"),
                    c["head_seq"],
                    c["segments_complete"],
                    c["segments_skipped"],
                    if c["publishing"].as_bool() == Some(true) { " (publishing)" } else { "" }
                );
            }
        }
        "/api/v1/peers" => {
            for p in v["peers"].as_array().into_iter().flatten() {
                println!("{}", p.as_str().unwrap_or("?"));
            }
        }
        _ => {
            println!("joined:");
            for c in v["joined"].as_array().into_iter().flatten() {
                println!("  {} head={}", c["channel"].as_str().unwrap_or("?"), c["head_seq"]);
            }
            println!("directory:");
            for c in v["directory"].as_array().into_iter().flatten() {
                println!("  {}  {}", c["channel"].as_str().unwrap_or("?"), c["title"].as_str().unwrap_or(""));
            }
        }
    }
    Ok(())
}

pub(crate) async fn publish(
    args: &ClientArgs,
    key: &str,
    title: Option<String>,
    public: bool,
    segment_ms: u64,
    input: &str,
) -> Result<()> {
    let api = Api::find(args)?;
    let info = api.get_json(&format!("/api/v1/keys/{key}")).await?;
    let channel = info["channel"].as_str().context("the node did not return a channel id")?.to_owned();
    // First line of stderr: the channel id, so scripts can pick it up.
    eprintln!("{channel}");
    let reader: Box<dyn AsyncRead + Send + Unpin> = if input == "-" {
        Box::new(tokio::io::stdin())
    } else {
        Box::new(tokio::fs::File::open(input).await.with_context(|| format!("cannot open input {input}"))?)
    };
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024).map(move |chunk| {
        if let Ok(c) = &chunk {
            counter.fetch_add(c.len() as u64, Ordering::Relaxed);
        }
        chunk
    });
    let mut url = format!("{}/api/v1/publish?key={key}&segment_ms={segment_ms}&public={public}", api.base);
    if let Some(t) = title {
        url.push_str("&title=");
        url.push_str(&percent_encode(&t));
    }
    let req = api.authed(api.http.post(url)).body(reqwest::Body::wrap_stream(stream)).send();
    let status_api = Api::find(args)?;
    let progress = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let peers =
                status_api.get_json("/api/v1/status").await.ok().map_or(0, |v| v["peers"].as_u64().unwrap_or(0));
            eprint!("\rsent {} KiB, peers {peers}   ", sent.load(Ordering::Relaxed) / 1024);
        }
    });
    let resp = req.await.map_err(|e| api.no_daemon(&e));
    progress.abort();
    let summary: serde_json::Value = Api::check(resp?).await?.json().await?;
    eprintln!("\rpublished {} segments, {} bytes on {channel}", summary["segments"], summary["bytes"]);
    Ok(())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) async fn watch(args: &ClientArgs, channel: ChannelId, output: &str, from_start: bool) -> Result<()> {
    let api = Api::find(args)?;
    let url = format!("{}/api/v1/watch/{channel}?framed=true&from_start={from_start}", api.base);
    let resp = api.http.get(url).send().await.map_err(|e| api.no_daemon(&e))?;
    let mut body = Api::check(resp).await?.bytes_stream();
    let mut out: Box<dyn Write> = if output == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(output).with_context(|| format!("cannot create {output}"))?)
    };
    let mut buf = BytesMut::new();
    let (mut segments, mut skipped) = (0u64, 0u64);
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.context("the node closed the stream")?);
        // Frames: seq u64 | kind u8 | len u32 | bytes.
        while buf.len() >= 13 {
            let len = u32::from_be_bytes([buf[9], buf[10], buf[11], buf[12]]) as usize;
            if buf.len() < 13 + len {
                break;
            }
            let seq = buf.get_u64();
            let kind = buf.get_u8();
            buf.advance(4);
            let data = buf.split_to(len);
            if kind == 0 {
                out.write_all(&data)?;
                out.flush()?;
                segments += 1;
            } else {
                skipped += 1;
                eprintln!("warning: segment {seq} could not be fetched before its deadline; skipped");
            }
        }
    }
    eprintln!("stream ended: {segments} segments written, {skipped} skipped");
    Ok(())
}
