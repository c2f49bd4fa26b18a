//! Harness for the end-to-end suites: spawns real `shoal node` processes on
//! loopback, each with its own data dir, and talks to them the way a user
//! does (the CLI and the local API). No mocks.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

pub mod cpu;
pub mod hostile;
pub mod stats;

/// The `shoal` binary built for this test run (`target/<profile>/shoal`).
/// `.ci/test` builds it before the suites run.
pub fn shoal_bin() -> PathBuf {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = profile_dir.join("shoal");
    assert!(bin.exists(), "{} is missing: run `cargo build -p shoal-cli` before the end-to-end suites", bin.display());
    bin
}

/// Polls `pred` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut pred: impl FnMut() -> Option<T>) -> Result<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = pred() {
            return Ok(v);
        }
        if Instant::now() >= end {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A minimal HTTP/1.0 request to the local API; returns (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status: u16 = raw.split_whitespace().nth(1).context("no status line")?.parse()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// A running `shoal node` process.
#[derive(Debug)]
pub struct NodeProc {
    /// Its name in test output.
    pub name: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Peer id.
    pub peer_id: String,
    /// Full dialable address with `/p2p/`.
    pub addr: String,
    /// API address.
    pub api: SocketAddr,
    /// API token.
    pub token: String,
    child: Child,
}

/// Writes a test config: loopback only, no mDNS, Kademlia server mode.
pub fn write_test_config(data_dir: &Path) -> Result<PathBuf> {
    write_test_config_with(data_dir, "")
}

/// [`write_test_config`] plus `net_extra`: more `key = value` lines for the
/// `[net]` section (for example a `deny` list).
pub fn write_test_config_with(data_dir: &Path, net_extra: &str) -> Result<PathBuf> {
    let path = data_dir.join("test-config.toml");
    let base = "[net]\nmdns = false\nkad_server_mode = true\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n";
    std::fs::write(&path, format!("{base}{net_extra}"))?;
    Ok(path)
}

impl NodeProc {
    /// `shoal init` (first time) then `shoal node` with `bootstrap`.
    pub fn start(name: &str, data_dir: &Path, bootstrap: &[&str]) -> Result<Self> {
        Self::start_with(name, data_dir, bootstrap, "")
    }

    /// [`NodeProc::start`] with extra `[net]` config lines (see
    /// [`write_test_config_with`]).
    pub fn start_with(name: &str, data_dir: &Path, bootstrap: &[&str], net_extra: &str) -> Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        if !data_dir.join("identity.key").exists() {
            let out = Command::new(shoal_bin()).args(["init", "--data-dir"]).arg(data_dir).output()?;
            if !out.status.success() {
                bail!("shoal init failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let config = write_test_config_with(data_dir, net_extra)?;
        let log = std::fs::File::create(data_dir.join("node.log"))?;
        let mut cmd = Command::new(shoal_bin());
        cmd.args(["node", "--api", "127.0.0.1:0", "--data-dir"]).arg(data_dir).arg("--config").arg(&config);
        for b in bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        cmd.env("SHOAL_LOG", "info,shoal_net=debug,shoal_node=debug,libp2p=warn").stdout(Stdio::piped()).stderr(log);
        let mut child = cmd.spawn().context("spawn shoal node")?;
        let stdout = child.stdout.take().context("stdout")?;
        // Read stdout on a thread (and keep draining it, so the node never
        // blocks on a full pipe); wait for the start lines with a deadline.
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(64);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.try_send(line);
            }
        });
        let (mut peer_id, mut addr, mut api) = (None, None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while api.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else { break };
            if let Some(v) = line.strip_prefix("peer id: ") {
                peer_id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("listening: ") {
                if v.contains("127.0.0.1") && addr.is_none() {
                    addr = Some(v.to_owned());
                }
            } else if let Some(v) = line.strip_prefix("api: http://") {
                api = Some(v.parse()?);
            }
        }
        let (Some(peer_id), Some(addr), Some(api)) = (peer_id, addr, api) else {
            let _ = child.kill();
            let log = std::fs::read_to_string(data_dir.join("node.log")).unwrap_or_default();
            bail!("node {name} did not report its peer id, address and API; log:\n{log}");
        };
        let token = std::fs::read_to_string(data_dir.join("api.token"))?.trim().to_owned();
        Ok(Self { name: name.to_owned(), data_dir: data_dir.to_owned(), peer_id, addr, api, token, child })
    }

    /// GET a JSON document from the API.
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let (status, body) = http(self.api, "GET", path, None)?;
        if status != 200 {
            bail!("GET {path} on {}: HTTP {status}: {body}", self.name);
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// `/api/v1/status`.
    pub fn status(&self) -> Result<serde_json::Value> {
        self.get_json("/api/v1/status")
    }

    /// A `shoal` client command against this node.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(shoal_bin());
        c.env("SHOAL_DATA_DIR", &self.data_dir);
        c
    }

    /// The process id (for signals such as SIGHUP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> Result<bool> {
        // `kill -TERM`: the workspace forbids unsafe code, so no libc::kill.
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        Ok(false)
    }

    /// The node's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("node.log")).unwrap_or_default()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percentile of a sorted slice (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A temp dir for one test. With `SHOAL_KEEP_TEST_DIRS` set it is kept
/// after the test (its path is printed), for reading node logs.
pub fn test_dir() -> Result<tempfile::TempDir> {
    let mut b = tempfile::Builder::new();
    b.prefix("shoal-e2e-");
    if std::env::var_os("SHOAL_KEEP_TEST_DIRS").is_some() {
        b.disable_cleanup(true);
    }
    let dir = b.tempdir()?;
    println!("test dir: {}", dir.path().display());
    Ok(dir)
}

impl NodeProc {
    /// Starts `shoal publish --format bytes` of `data` on this node with
    /// `key`, fed at `bytes_per_sec` in 100 ms chunks from a thread (the
    /// way a live encoder would), and returns the running command. Its
    /// stdin closes after the last chunk, which ends the publish.
    pub fn publish_paced(&self, key: &str, data: &[u8], bytes_per_sec: usize) -> Result<Child> {
        let mut child = self
            .cli()
            .args(["publish", "--key", key, "--format", "bytes", "--segment-duration", "1s", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().context("stdin of shoal publish")?;
        let data = data.to_vec();
        let chunk = (bytes_per_sec / 10).max(1);
        std::thread::spawn(move || {
            let start = Instant::now();
            for (i, c) in data.chunks(chunk).enumerate() {
                let due = start + Duration::from_millis(100 * i as u64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if stdin.write_all(c).is_err() {
                    return;
                }
            }
        });
        Ok(child)
    }

    /// Sum of every sample in `/metrics` whose name starts with `prefix`
    /// and whose labels contain every string in `labels`.
    pub fn metric(&self, prefix: &str, labels: &[&str]) -> Result<f64> {
        let (status, body) = http(self.api, "GET", "/metrics", None)?;
        if status != 200 {
            bail!("GET /metrics on {}: HTTP {status}", self.name);
        }
        Ok(body
            .lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
            .filter(|l| labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

/// Starts ffmpeg encoding `seconds` of a live test pattern (testsrc 640x360
/// at 25 fps with a 440 Hz sine; H.264 with a keyframe every second, AAC) as
/// MPEG-TS on its stdout, paced in real time (`-re`); its stderr goes to
/// `log`. The media suites pipe it into `shoal publish`.
pub fn test_pattern(seconds: u64, log: &Path) -> Result<Child> {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=640x360:rate=25"])
        .args(["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"])
        .args(["-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-b:v", "600k"])
        .args(["-c:a", "aac", "-b:a", "96k", "-f", "mpegts", "pipe:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context(
            "ffmpeg is needed for the media suites: install it with `apt-get install -y ffmpeg` (.ci/install-deps)",
        )
}
