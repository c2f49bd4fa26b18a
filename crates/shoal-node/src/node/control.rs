//! Run-time control of the exclusion list: `shoal peers block/unblock`, and
//! re-reading the config file (SIGHUP or `POST /api/v1/config/reload`).
//!
//! Two layers make the list in force: the config file's `[net] deny`, and
//! the API's overrides (blocked, unblocked). A reload replaces the first
//! and keeps the second, so a block made at run time survives a reload and
//! lasts until the node restarts; permanent entries belong in the file.

use shoal_net::DenyRule;

use super::{NodeError, NodeHandle};
use crate::config::NodeConfig;

/// Most run-time overrides kept (each a rule); as many as the list itself.
const MAX_OVERRIDES: usize = shoal_net::MAX_DENY_RULES;

/// The layers of the exclusion list.
#[derive(Debug, Default)]
pub(crate) struct DenyLayers {
    file: Vec<DenyRule>,
    blocked: Vec<DenyRule>,
    unblocked: Vec<DenyRule>,
}

impl DenyLayers {
    pub(crate) fn new(file: Vec<DenyRule>) -> Self {
        Self { file, ..Self::default() }
    }

    /// The list in force: the file's rules minus the API's unblocks, plus
    /// the API's blocks.
    fn effective(&self) -> Vec<DenyRule> {
        let mut out: Vec<DenyRule> = self.file.iter().filter(|r| !self.unblocked.contains(r)).copied().collect();
        for r in &self.blocked {
            if !out.contains(r) {
                out.push(*r);
            }
        }
        out
    }
}

/// What a config reload changed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// The file re-read.
    pub file: String,
    /// Rules in force after the reload.
    pub deny_rules: usize,
    /// Connections closed because the new list excludes them.
    pub closed: usize,
    /// Sections or keys that differ from the running config but only take
    /// effect after a restart.
    pub restart_needed: Vec<&'static str>,
}

impl NodeHandle {
    async fn apply_deny(&self, update: impl FnOnce(&mut DenyLayers)) -> Result<(Vec<DenyRule>, usize), NodeError> {
        let rules = {
            let mut layers = self.shared.deny.lock().map_err(|_| NodeError::Stopped)?;
            update(&mut layers);
            layers.effective()
        };
        let closed = self.shared.net.set_deny_list(rules.clone()).await?;
        Ok((rules, closed))
    }

    /// Adds a rule to the exclusion list now: connected peers it matches
    /// are disconnected, and new connections are refused. Returns how many
    /// connections were closed.
    pub async fn block(&self, rule: DenyRule) -> Result<usize, NodeError> {
        let mut full = false;
        let (_, closed) = self
            .apply_deny(|l| {
                l.unblocked.retain(|r| *r != rule);
                if !l.blocked.contains(&rule) {
                    full = l.blocked.len() >= MAX_OVERRIDES;
                    if !full {
                        l.blocked.push(rule);
                    }
                }
            })
            .await?;
        if full {
            return Err(NodeError::Refused(format!(
                "{MAX_OVERRIDES} run-time blocks already; put ranges in the config file's [net] deny"
            )));
        }
        tracing::info!(%rule, closed, "blocked");
        Ok(closed)
    }

    /// Removes a rule from the exclusion list now. A rule from the config
    /// file stays lifted until the node restarts (a reload keeps run-time
    /// overrides); remove it from the file to make that permanent.
    pub async fn unblock(&self, rule: DenyRule) -> Result<(), NodeError> {
        let mut known = false;
        self.apply_deny(|l| {
            let before = l.blocked.len();
            l.blocked.retain(|r| *r != rule);
            known = before != l.blocked.len() || l.file.contains(&rule);
            if l.file.contains(&rule) && !l.unblocked.contains(&rule) && l.unblocked.len() < MAX_OVERRIDES {
                l.unblocked.push(rule);
            }
        })
        .await?;
        if !known {
            return Err(NodeError::Refused(format!("{rule} is not in the exclusion list")));
        }
        tracing::info!(%rule, "unblocked");
        Ok(())
    }

    /// The exclusion list in force.
    pub async fn blocked(&self) -> Result<Vec<DenyRule>, NodeError> {
        Ok(self.shared.net.deny_list().await?)
    }

    /// Re-reads the config file the node started from and applies what can
    /// change at run time (the exclusion list). A file that does not parse
    /// or validate changes nothing and says why.
    pub async fn reload_config(&self) -> Result<ReloadReport, NodeError> {
        let Some(path) = self.shared.config.file.clone() else {
            return Err(NodeError::Refused("the node was started without a config file; nothing to reload".into()));
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|source| crate::config::ConfigError::Io { path: path.clone(), source })?;
        let new = NodeConfig::from_toml(&text, &path)?;
        new.validate()?;
        let old = &self.shared.config;
        let mut restart_needed = Vec::new();
        let mut old_net = old.net.clone();
        let mut new_net = new.net.clone();
        // Flags may override these; they are not "changed" by the file.
        for n in [&mut old_net, &mut new_net] {
            n.deny.clear();
            n.listen.clear();
            n.bootstrap.clear();
            n.max_upload = 0;
        }
        if old_net != new_net {
            restart_needed.push("net");
        }
        if old.fetch != new.fetch {
            restart_needed.push("fetch");
        }
        if old.store != new.store {
            restart_needed.push("store");
        }
        if old.max_upload != new.max_upload {
            restart_needed.push("max_upload");
        }
        if old.max_download != new.max_download {
            restart_needed.push("max_download");
        }
        let (rules, closed) = self.apply_deny(|l| l.file = new.net.deny.clone()).await?;
        let report = ReloadReport { file: path.display().to_string(), deny_rules: rules.len(), closed, restart_needed };
        tracing::info!(?report, "config reloaded");
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_combine_file_blocks_and_unblocks() {
        let a: DenyRule = "10.0.0.0/8".parse().unwrap();
        let b: DenyRule = "::1/128".parse().unwrap();
        let c: DenyRule = "192.168.0.0/16".parse().unwrap();
        let mut l = DenyLayers::new(vec![a, b]);
        l.blocked.push(c);
        l.unblocked.push(a);
        assert_eq!(l.effective(), vec![b, c]);
        // A reload replaces the file layer and keeps the overrides.
        l.file = vec![a];
        assert_eq!(l.effective(), vec![c]);
    }
}
