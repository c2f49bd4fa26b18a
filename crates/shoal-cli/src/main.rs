//! `shoal`: the daemon and the commands that talk to it.

mod client;
mod demo;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use shoal_node::{
    Node, NodeArgs, NodeConfig,
    config::{LogFormat, default_data_dir},
    identity::{load_or_create_identity, load_or_create_token},
    keystore::Keystore,
};

/// Live video with no central server.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// How client commands find the daemon.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClientArgs {
    /// Data directory of the daemon to talk to.
    #[arg(long, env = "SHOAL_DATA_DIR", global = true)]
    pub(crate) data_dir: Option<PathBuf>,
    /// API address (default: read from DATA_DIR/api).
    #[arg(long, env = "SHOAL_API", global = true)]
    pub(crate) api: Option<String>,
    /// API token (default: read from DATA_DIR/api.token).
    #[arg(long, env = "SHOAL_API_TOKEN", global = true, hide_env_values = true)]
    pub(crate) token: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a local demo swarm (a publisher and viewers on loopback) with a live status line.
    Demo(demo::DemoArgs),
    /// Create a data directory: identity, commented config.toml, API token.
    Init {
        /// Data directory.
        #[arg(long, env = "SHOAL_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Run the daemon.
    Node(NodeArgs),
    /// Manage channel keys (in DATA_DIR/keys; works without a daemon).
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
        /// Data directory.
        #[arg(long, env = "SHOAL_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Publish a live input on a channel: MPEG-TS from stdin (`-`), a file, or
    /// `udp://HOST:PORT` (what ffmpeg and OBS send), cut at keyframes.
    Publish {
        /// Channel key name (see `shoal key generate`).
        #[arg(long)]
        key: String,
        /// Title shown in the directory.
        #[arg(long)]
        title: Option<String>,
        /// Announce the channel in the public directory.
        #[arg(long)]
        public: bool,
        /// Target segment duration, e.g. `1s`, `500ms` (MPEG-TS: cut at the
        /// first keyframe after it).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        segment_duration: Duration,
        /// `ts`: MPEG-TS, cut at keyframes. `bytes`: any bytes, cut by time.
        #[arg(long, value_enum, default_value_t = client::InputFormat::Ts)]
        format: client::InputFormat,
        /// Send a file (or stdin) at its own speed, paced by its PCR, as a live
        /// encoder would (MPEG-TS only).
        #[arg(long)]
        realtime: bool,
        /// With video, cut by time when no keyframe comes for this long
        /// (default: 5s, or twice the segment duration if longer).
        #[arg(long, value_parser = parse_duration)]
        keyframe_timeout: Option<Duration>,
        /// UDP input: stop after this long without a datagram (also how long
        /// to wait for the first one).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        idle_timeout: Duration,
        /// Print the node's publish summary as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Input: a file, `-` for stdin, or `udp://HOST:PORT` to receive
        /// MPEG-TS datagrams (e.g. from `ffmpeg ... -f mpegts udp://127.0.0.1:5000?pkt_size=1316`).
        #[arg(default_value = "-")]
        input: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Watch a channel: write its stream, in order, to a file or stdout.
    Watch {
        /// Channel id (k51…).
        channel: String,
        /// Output file, or `-` for stdout.
        #[arg(short = 'o', long = "output", default_value = "-")]
        output: String,
        /// Start at the oldest segment held instead of the live edge.
        #[arg(long)]
        from_start: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Joined channels and the public directory.
    Channels {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Connected peers; `block`/`unblock`/`blocked` manage the exclusion list.
    Peers {
        #[command(subcommand)]
        cmd: Option<PeersCmd>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Re-read the node's config file and apply the exclusion list (like SIGHUP).
    Reload {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Node status.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
enum PeersCmd {
    /// Disconnect and refuse a peer id or an IP range (CIDR), until restart.
    Block {
        /// A peer id (12D3Koo…) or a range like 10.0.0.0/8 or ::1/128.
        #[arg(value_parser = parse_deny_rule)]
        target: shoal_net::DenyRule,
    },
    /// Lift a block (or a config file entry, until restart).
    Unblock {
        /// A peer id or range, written as it was blocked.
        #[arg(value_parser = parse_deny_rule)]
        target: shoal_net::DenyRule,
    },
    /// The exclusion list in force.
    Blocked,
}

fn parse_deny_rule(s: &str) -> Result<shoal_net::DenyRule, String> {
    s.parse().map_err(|e: shoal_net::BadDenyRule| e.to_string())
}

#[derive(Debug, Subcommand)]
enum KeyCmd {
    /// Generate a key; prints the channel id on stdout.
    Generate {
        /// Key name.
        name: String,
    },
    /// List keys and their channel ids.
    List,
    /// Show one key's channel id.
    Show {
        /// Key name.
        name: String,
    },
    /// Import a PKCS#8 PEM key file.
    Import {
        /// File to import (must be mode 0600).
        file: PathBuf,
        /// Name to store it under (default: the file stem).
        #[arg(long)]
        name: Option<String>,
    },
    /// Print a key's PKCS#8 PEM (local only; keys never leave over the API).
    Export {
        /// Key name.
        name: String,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a duration like 1s or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        _ => Err(format!("'{s}': unknown unit '{unit}'; use ms or s")),
    }
}

fn init_tracing(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run_node(args: NodeArgs) -> Result<()> {
    let cfg = NodeConfig::load(&args)?;
    init_tracing(cfg.log_format, "info,libp2p=warn");
    let node = Node::start(cfg).await?;
    let h = node.handle();
    // Give the listeners a moment to report their bound addresses.
    let mut addrs = Vec::new();
    for _ in 0..20 {
        addrs = h.listen_addrs().await;
        if !addrs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("peer id: {}", h.peer_id());
    for a in &addrs {
        println!("listening: {a}/p2p/{}", h.peer_id());
    }
    println!("api: http://{}", node.api_addr());
    // SIGHUP re-reads the config file (the exclusion list applies at once).
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        tokio::select! {
            () = wait_for_signal() => break,
            Some(()) = hangup => match h.reload_config().await {
                Ok(r) => tracing::info!(rules = r.deny_rules, closed = r.closed, restart_needed = ?r.restart_needed, "config reloaded"),
                Err(e) => tracing::warn!(error = %e, "config reload failed; nothing changed"),
            },
        }
    }
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn run_init(data_dir: Option<PathBuf>) -> Result<()> {
    let dir = data_dir.unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let id = load_or_create_identity(&dir)?;
    load_or_create_token(&dir)?;
    Keystore::open(&dir)?;
    let cfg_path = dir.join("config.toml");
    if !cfg_path.exists() {
        let text = include_str!("../../../config/default.toml");
        std::fs::write(&cfg_path, text).with_context(|| format!("cannot write {}", cfg_path.display()))?;
    }
    println!("initialised {}", dir.display());
    println!("peer id: {}", id.public().to_peer_id());
    println!("config: {}", cfg_path.display());
    Ok(())
}

fn run_key(cmd: KeyCmd, data_dir: Option<PathBuf>) -> Result<()> {
    let ks = Keystore::open(&data_dir.unwrap_or_else(default_data_dir))?;
    match cmd {
        KeyCmd::Generate { name } => println!("{}", ks.generate(&name)?),
        KeyCmd::List => {
            for (name, id) in ks.list()? {
                match id {
                    Ok(id) => println!("{name}\t{id}"),
                    Err(e) => println!("{name}\tERROR: {e}"),
                }
            }
        }
        KeyCmd::Show { name } => println!("{}", ks.load(&name)?.channel_id()),
        KeyCmd::Import { file, name } => {
            let name = match name {
                Some(n) => n,
                None => {
                    file.file_stem().and_then(|s| s.to_str()).context("give the key a name with --name")?.to_owned()
                }
            };
            println!("{}", ks.import(&name, &file)?);
        }
        KeyCmd::Export { name } => print!("{}", ks.export(&name)?),
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Demo(args) => {
            // The status line is the demo's output; logs only when wrong.
            init_tracing(LogFormat::Text, "warn");
            demo::run(args).await
        }
        Cmd::Init { data_dir } => run_init(data_dir),
        Cmd::Node(args) => run_node(args).await,
        Cmd::Key { cmd, data_dir } => run_key(cmd, data_dir),
        Cmd::Publish {
            key,
            title,
            public,
            segment_duration,
            format,
            realtime,
            keyframe_timeout,
            idle_timeout,
            json,
            input,
            client,
        } => {
            let ms = segment_duration.as_millis() as u64;
            if !(100..=10_000).contains(&ms) {
                bail!("--segment-duration must be between 100ms and 10s");
            }
            let opts = client::PublishOpts {
                key,
                title,
                public,
                segment_ms: ms,
                format,
                realtime,
                keyframe_timeout_ms: keyframe_timeout.map(|d| d.as_millis() as u64),
                idle_timeout,
                json,
                input,
            };
            client::publish(&client, opts).await
        }
        Cmd::Watch { channel, output, from_start, client } => {
            let id: shoal_core::ChannelId = channel.parse()?;
            client::watch(&client, id, &output, from_start).await
        }
        Cmd::Channels { json, client } => client::show(&client, "/api/v1/channels", json).await,
        Cmd::Peers { cmd: None, json, client } => client::show(&client, "/api/v1/peers", json).await,
        Cmd::Peers { cmd: Some(PeersCmd::Blocked), json, client } => {
            client::show(&client, "/api/v1/peers/blocked", json).await
        }
        Cmd::Peers { cmd: Some(PeersCmd::Block { target }), client, .. } => {
            client::post_json(&client, "/api/v1/peers/block", serde_json::json!({ "target": target.to_string() })).await
        }
        Cmd::Peers { cmd: Some(PeersCmd::Unblock { target }), client, .. } => {
            client::post_json(&client, "/api/v1/peers/unblock", serde_json::json!({ "target": target.to_string() }))
                .await
        }
        Cmd::Reload { client } => client::post_json(&client, "/api/v1/config/reload", serde_json::json!({})).await,
        Cmd::Status { json, client } => client::show(&client, "/api/v1/status", json).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    // A read of stdin still blocked in tokio's blocking pool (the node ended
    // a publish before its input did) must not keep the process alive.
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
