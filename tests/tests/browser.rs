//! End-to-end: the browser page in headless Chromium (Debian's `chromium`).
//!
//! Node A publishes a live public channel (ffmpeg test pattern → `shoal
//! publish --public`); node B, bootstrapped from A, hears it on the
//! directory topic. Chromium loads B's `/` and `/watch/CHANNEL`; the DOM
//! after the page's scripts ran must list the channel, and a screenshot of
//! each page is saved as a CI artifact.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use shoal_tests::{NodeProc, http, test_pattern, wait_for};

/// Seconds of test pattern published at most (the test stops it when done):
/// room for a second directory announcement (30 s after the first, if the
/// first found no subscriber), the join and the four Chromium runs.
const PUBLISH_SECONDS: u64 = 90;
/// Longest one Chromium run may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);
const TITLE: &str = "Browser test pattern";
/// Virtual time each page gets to run its scripts and polls.
const BUDGET: &str = "--virtual-time-budget=5000";
/// ...and the watch page, to fetch the playlist and play a segment.
const PLAY_BUDGET: &str = "--virtual-time-budget=15000";
/// A muted `<video autoplay>` may start without a click.
const AUTOPLAY: &str = "--autoplay-policy=no-user-gesture-required";

fn chromium() -> Result<PathBuf> {
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = Path::new(dir).join(name);
            if p.exists() {
                return Ok(p);
            }
        }
    }
    bail!(
        "headless Chromium is needed for the browser suite: install it with `apt-get install -y chromium` (.ci/install-deps does)"
    )
}

/// Where CI collects artifacts: `$CARGO_TARGET_DIR/ci-artifacts`, else the
/// workspace's `target/ci-artifacts`.
fn artifacts_dir() -> Result<PathBuf> {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    let dir = base.join("ci-artifacts");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs headless Chromium with `args` on `url`; returns its stdout.
fn run_chromium(profile: &Path, args: &[String], url: &str) -> Result<String> {
    let mut child = Command::new(chromium()?)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let end = Instant::now() + CHROMIUM_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            bail!("chromium did not finish {url} within {CHROMIUM_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "chromium failed on {url}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn screenshot(profile: &Path, url: &str, path: &Path, extra: &[&str]) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut args = vec![format!("--screenshot={}", path.display()), "--window-size=1280,800".into()];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    run_chromium(profile, &args, url)?;
    let png = std::fs::read(path).with_context(|| format!("no screenshot at {}", path.display()))?;
    ensure!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", path.display());
    ensure!(png.len() > 10_000, "{} is only {} bytes: a blank page?", path.display(), png.len());
    println!("screenshot: {}", path.display());
    Ok(())
}

/// The part of `dom` inside the element with `id`, up to its closing tag.
fn element<'a>(dom: &'a str, id: &str, close: &str) -> Result<&'a str> {
    let start = dom.find(&format!("id=\"{id}\"")).with_context(|| format!("no #{id} in the DOM"))?;
    let len = dom[start..].find(close).with_context(|| format!("#{id} is not closed"))?;
    Ok(&dom[start..start + len])
}

#[test]
fn browser_page_lists_and_plays_a_live_public_channel() -> Result<()> {
    chromium()?;
    let tmp = shoal_tests::test_dir()?;
    let a = NodeProc::start("A", &tmp.path().join("a"), &[])?;
    let b = NodeProc::start("B", &tmp.path().join("b"), &[&a.addr])?;
    let out = a.cli().args(["key", "generate", "main"]).output()?;
    ensure!(out.status.success(), "key generate: {}", String::from_utf8_lossy(&out.stderr));
    let channel = String::from_utf8(out.stdout)?.trim().to_owned();
    // The first directory announcement goes out when publishing starts:
    // B must be connected (and subscribed to the directory topic) by then.
    wait_for(Duration::from_secs(15), "B to connect to A", || {
        b.status().ok().filter(|s| s["peers"].as_u64().unwrap_or(0) >= 1)
    })?;
    std::thread::sleep(Duration::from_secs(2));

    let mut ffmpeg = test_pattern(PUBLISH_SECONDS, &tmp.path().join("ffmpeg.log"))?;
    let stdout = ffmpeg.stdout.take().context("ffmpeg stdout")?;
    let mut publish = a
        .cli()
        .args(["publish", "--key", "main", "--format", "ts", "--public", "--title", TITLE, "-"])
        .stdin(Stdio::from(stdout))
        .stderr(std::fs::File::create(tmp.path().join("publish.log"))?)
        .spawn()?;

    let result = (|| -> Result<()> {
        wait_for(Duration::from_secs(40), "the channel in B's directory", || {
            let c = b.get_json("/api/v1/channels").ok()?;
            c["directory"].as_array()?.iter().any(|e| e["channel"] == channel.as_str()).then_some(())
        })
        .with_context(|| {
            format!("publish log:\n{}", std::fs::read_to_string(tmp.path().join("publish.log")).unwrap_or_default())
        })?;
        // B carries the channel: opening its playlist joins it.
        let playlist = format!("/live/{channel}.m3u8");
        wait_for(Duration::from_secs(20), "B to serve the channel's playlist", || {
            http(b.api, "GET", &playlist, None).ok().filter(|(st, _)| *st == 200)
        })?;

        let base = format!("http://{}", b.api);
        let artifacts = artifacts_dir()?;
        let dom =
            run_chromium(&tmp.path().join("profile-1"), &["--dump-dom".into(), BUDGET.into()], &format!("{base}/"))?;
        let directory = element(&dom, "directory", "</ul>").with_context(|| dom.clone())?;
        ensure!(
            directory.contains(&format!("data-channel=\"{channel}\"")) && directory.contains(TITLE),
            "the directory listing does not show {channel} ({TITLE}):\n{dom}"
        );
        ensure!(dom.contains(&format!("href=\"/watch/{channel}\"")), "no watch link for {channel}");
        let peer_id = element(&dom, "peer-id", "</code>")?;
        ensure!(peer_id.contains(&b.peer_id), "the node status does not show B's peer id:\n{peer_id}");
        screenshot(
            &tmp.path().join("profile-2"),
            &format!("{base}/"),
            &artifacts.join("browser-index.png"),
            &[BUDGET],
        )?;

        let watch_url = format!("{base}/watch/{channel}");
        // Long enough for the <video> to fetch the playlist and a segment.
        let play = ["--dump-dom".into(), PLAY_BUDGET.into(), AUTOPLAY.into()];
        let dom = run_chromium(&tmp.path().join("profile-3"), &play, &watch_url)?;
        ensure!(element(&dom, "channel-id", "</code>")?.contains(&channel), "the watch page does not show {channel}");
        let hls = format!("{base}/live/{channel}.m3u8");
        ensure!(dom.contains(&format!("href=\"{hls}\"")), "the watch page does not link {hls}:\n{dom}");
        // Either the <video> plays it natively, or the player commands show.
        let native = !element(&dom, "player", ">")?.contains("hidden");
        let commands = element(&dom, "commands", "</pre>")?;
        ensure!(commands.contains(&format!("vlc {hls}")) && commands.contains(&format!("ffplay {hls}")), "{commands}");
        let state = element(&dom, "player-state", "</p>")?;
        println!("watch page: native HLS playback: {native}; {state}");
        // It started playing (it may be waiting for the next segment now).
        let played = element(&dom, "player", ">")?.contains("data-played=\"true\"");
        ensure!(!native || played, "the browser plays HLS but the video never started: {state}");
        screenshot(
            &tmp.path().join("profile-4"),
            &watch_url,
            &artifacts.join("browser-watch.png"),
            &[PLAY_BUDGET, AUTOPLAY],
        )?;
        let (st, _) = http(b.api, "GET", "/watch/not-a-channel", None)?;
        ensure!(st == 400, "a bad channel id on /watch: HTTP {st}");
        Ok(())
    })();
    let _ = ffmpeg.kill();
    let _ = publish.kill();
    let _ = ffmpeg.wait();
    let _ = publish.wait();
    result
}
