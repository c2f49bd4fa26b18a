//! The running node: opens the store, starts the network and the engine,
//! serves the local API, and shuts down in order (API, network, store).

mod control;
mod engine;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub use control::ReloadReport;
pub(crate) use engine::now_ms;
pub use engine::{ChannelStatus, PublishSegment};
use engine::{Command, Engine};
use libp2p::Multiaddr;
use prometheus_client::registry::Registry;
use shoal_core::{ChannelId, ChannelKey};
use shoal_net::{NetClient, Network, TransportKind};
use shoal_store::Store;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{
    config::NodeConfig,
    identity::{API_FILE, load_or_create_identity, load_or_create_token},
    keystore::Keystore,
    metrics::NodeMetrics,
    source::NodeSource,
};

/// Capacity of the API → engine command channel. Commands are small and the
/// engine answers in microseconds; 256 absorbs bursts of API calls.
const COMMAND_CAPACITY: usize = 256;
/// Capacity of the segment event broadcast: a watcher that falls this far
/// behind re-reads from the store (events are hints, the store is truth).
const SEGMENT_EVENT_CAPACITY: usize = 1024;
/// How long shutdown waits for tasks before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What happened to a segment, for watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEvent {
    /// The manifest was accepted; blocks are being fetched.
    Accepted {
        /// Channel.
        channel: ChannelId,
        /// Seq.
        seq: u64,
    },
    /// Every block is verified and stored: it can be played.
    Ready {
        /// Channel.
        channel: ChannelId,
        /// Seq.
        seq: u64,
    },
    /// It missed its deadline and will not be played.
    Skipped {
        /// Channel.
        channel: ChannelId,
        /// Seq.
        seq: u64,
    },
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Config problem.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Identity or token problem.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// Keystore problem.
    #[error(transparent)]
    Keystore(#[from] crate::keystore::KeystoreError),
    /// The store could not open.
    #[error(transparent)]
    Store(#[from] shoal_store::StoreError),
    /// The network could not start.
    #[error(transparent)]
    Net(#[from] shoal_net::NetError),
    /// The API address could not be bound.
    #[error(
        "cannot listen for the API on {addr}: {source}; is another shoal node running? use --api to pick another address"
    )]
    Api {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The engine is gone (shutting down).
    #[error("the node is shutting down")]
    Stopped,
    /// A request the engine refused.
    #[error("{0}")]
    Refused(String),
}

/// State shared by the engine and the API handlers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: NodeConfig,
    pub(crate) store: Arc<Store>,
    pub(crate) net: NetClient,
    pub(crate) source: Arc<NodeSource>,
    pub(crate) keystore: Keystore,
    pub(crate) token: String,
    pub(crate) started: Instant,
    pub(crate) metrics: NodeMetrics,
    pub(crate) registry: Mutex<Registry>,
    pub(crate) events: broadcast::Sender<SegmentEvent>,
    pub(crate) cmd: mpsc::Sender<Command>,
    pub(crate) tasks: TaskTracker,
    pub(crate) cancel: CancellationToken,
    /// The exclusion list's layers (config file, API overrides).
    pub(crate) deny: Mutex<control::DenyLayers>,
}

/// A running node. Cheap to clone handles come from [`Node::handle`].
#[derive(Debug)]
pub struct Node {
    shared: Arc<Shared>,
    api_addr: SocketAddr,
    net_task: tokio::task::JoinHandle<()>,
    api_cancel: CancellationToken,
    evictor: Option<shoal_store::Evictor>,
}

/// A cloneable handle to a running node (what the API and tests use).
#[derive(Debug, Clone)]
pub struct NodeHandle {
    pub(crate) shared: Arc<Shared>,
}

impl Node {
    /// Starts a node with real TCP/QUIC transports.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        Self::start_with(config, TransportKind::TcpQuic).await
    }

    /// Starts a node with the given transport (memory for in-process tests).
    pub async fn start_with(mut config: NodeConfig, transport: TransportKind) -> Result<Self, NodeError> {
        config.validate()?;
        config.net.max_upload = config.max_upload;
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .map_err(|source| crate::identity::IdentityError::Io { path: data_dir.clone(), source })?;
        let identity = load_or_create_identity(&data_dir)?;
        let token = load_or_create_token(&data_dir)?;
        let keystore = Keystore::open(&data_dir)?;
        let mut registry = Registry::default();
        let store = Arc::new(Store::open(data_dir.join("store"), &config.store)?);
        let evictor = store.spawn_evictor().ok();
        let source = Arc::new(NodeSource::new(store.clone(), config.fetch.source()));
        // Every engine log line carries the node's peer id, so a log of many
        // nodes in one process (the bench, the test swarms) can be told apart.
        // ERROR level: enabled under any filter that shows the engine's lines.
        let span = tracing::error_span!("node", peer = %identity.public().to_peer_id());
        let net = Network::spawn(config.net.clone(), identity, transport, &mut registry, source.clone())?;
        let metrics = NodeMetrics::new(&mut registry);
        let api_listener = tokio::net::TcpListener::bind(config.api)
            .await
            .map_err(|source| NodeError::Api { addr: config.api, source })?;
        let api_addr = api_listener.local_addr().map_err(|source| NodeError::Api { addr: config.api, source })?;
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (events, _) = broadcast::channel(SEGMENT_EVENT_CAPACITY);
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let deny = Mutex::new(control::DenyLayers::new(config.net.deny.clone()));
        let shared = Arc::new(Shared {
            deny,
            config,
            store,
            net: net.client,
            source,
            keystore,
            token,
            started: Instant::now(),
            metrics,
            registry: Mutex::new(registry),
            events,
            cmd: cmd_tx,
            tasks: tasks.clone(),
            cancel: cancel.clone(),
        });
        tasks.spawn(Engine::new(shared.clone(), cmd_rx, net.events, cancel.clone()).run().instrument(span));
        let api_cancel = CancellationToken::new();
        let handle = NodeHandle { shared: shared.clone() };
        tasks.spawn(crate::api::serve(api_listener, handle, api_cancel.clone()));
        // kubo-style discovery file: client commands find the API here.
        let _ = std::fs::write(data_dir.join(API_FILE), api_addr.to_string());
        Ok(Self { shared, api_addr, net_task: net.task, api_cancel, evictor })
    }

    /// A handle for API-level operations.
    pub fn handle(&self) -> NodeHandle {
        NodeHandle { shared: self.shared.clone() }
    }

    /// The bound API address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// Stops in order: the API (no new work), the engine and its tasks, the
    /// network, then the store is flushed. Idempotent enough to call once.
    pub async fn shutdown(mut self) {
        self.api_cancel.cancel();
        self.shared.cancel.cancel();
        self.shared.tasks.close();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.shared.tasks.wait()).await;
        let _ = self.shared.net.shutdown().await;
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut self.net_task).await;
        if let Some(ev) = self.evictor.take() {
            ev.stop();
        }
        if let Err(e) = self.shared.store.flush() {
            tracing::error!(error = %e, "store flush failed at shutdown");
        }
        let _ = std::fs::remove_file(self.shared.config.data_dir.join(API_FILE));
        tracing::info!("node stopped");
    }
}

impl NodeHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.shared.cmd.send(make(tx)).await.map_err(|_| NodeError::Stopped)?;
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .map_err(|_| NodeError::Stopped)?
            .map_err(|_| NodeError::Stopped)
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> libp2p::PeerId {
        self.shared.net.peer_id()
    }

    /// Listen addresses.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.shared.net.listen_addrs().await.unwrap_or_default()
    }

    /// Joins a channel (subscribe, provide, find providers, fetch the head).
    pub async fn join(&self, channel: ChannelId) -> Result<(), NodeError> {
        self.join_with_history(channel, 0).await
    }

    /// Joins and asks peers for up to `history` of the channel's newest
    /// manifests (capped at 32), so a watcher can start from what peers still
    /// hold rather than the live edge.
    pub async fn join_with_history(&self, channel: ChannelId, history: u32) -> Result<(), NodeError> {
        self.ask(|reply| Command::Join { channel, history, reply }).await?.map_err(NodeError::Refused)
    }

    /// Leaves a channel.
    pub async fn leave(&self, channel: ChannelId) -> Result<(), NodeError> {
        self.ask(|reply| Command::Leave { channel, reply }).await?.map_err(NodeError::Refused)
    }

    /// Signs, stores and announces one segment; returns its seq.
    pub async fn publish(&self, key: Arc<ChannelKey>, segment: PublishSegment) -> Result<u64, NodeError> {
        self.ask(|reply| Command::Publish { key, segment, reply }).await?.map_err(NodeError::Refused)
    }

    /// Joined channels.
    pub async fn channels(&self) -> Result<Vec<ChannelStatus>, NodeError> {
        self.ask(|reply| Command::Channels { reply }).await
    }

    /// Segment events (accepted, ready, skipped) for every channel.
    pub fn subscribe(&self) -> broadcast::Receiver<SegmentEvent> {
        self.shared.events.subscribe()
    }

    /// The store (read-only use by the gateway and watchers).
    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    /// Node counters.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.shared.metrics
    }

    /// The network client.
    pub fn net(&self) -> &NetClient {
        &self.shared.net
    }
}
