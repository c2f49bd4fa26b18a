//! Generates the prost types from `proto/` with protox, so no system `protoc`
//! is needed on a fresh machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not baked in with env!(): cargo reuses a compiled
    // build script across checkouts at other paths that share a target
    // directory (CI's clones, worktrees), and a baked-in path then points
    // at a checkout that may be gone.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files =
        ["shoal/v1/manifest.proto", "shoal/v1/exchange.proto", "shoal/v1/head.proto", "shoal/v1/directory.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
