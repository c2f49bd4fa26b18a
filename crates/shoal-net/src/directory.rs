//! The directory list, sans-IO: the newest verified entry per channel,
//! bounded in size, entries dropped when not re-announced in time.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use shoal_core::{ChannelId, VerifiedDirectoryEntry};

/// Newest entry per channel, with when we last heard it.
#[derive(Debug)]
pub(crate) struct DirectoryList {
    max: usize,
    ttl: Duration,
    entries: HashMap<ChannelId, (VerifiedDirectoryEntry, Instant)>,
}

impl DirectoryList {
    pub(crate) fn new(max: usize, ttl: Duration) -> Self {
        Self { max, ttl, entries: HashMap::new() }
    }

    /// Stores `entry` if it is newer than what we hold for its channel.
    /// Returns whether it was (an older or equal announcement is stale). A
    /// full list evicts the entry heard least recently.
    pub(crate) fn offer(&mut self, entry: VerifiedDirectoryEntry, now: Instant) -> bool {
        let ch = entry.entry().channel;
        if let Some((old, _)) = self.entries.get(&ch) {
            if old.entry().announced_at_ms >= entry.entry().announced_at_ms {
                return false;
            }
        } else if self.entries.len() >= self.max {
            let oldest = self.entries.iter().min_by_key(|(_, (_, at))| *at).map(|(c, _)| *c);
            if let Some(c) = oldest {
                self.entries.remove(&c);
            }
        }
        self.entries.insert(ch, (entry, now));
        true
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.entries.retain(|_, (_, at)| now.duration_since(*at) < ttl);
    }

    /// Entries, most recently heard first.
    pub(crate) fn list(&self) -> Vec<VerifiedDirectoryEntry> {
        let mut v: Vec<_> = self.entries.values().collect();
        v.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
        v.into_iter().map(|(e, _)| e.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use shoal_core::{ChannelKey, DirectoryEntry, SignedDirectoryEntry};

    use super::*;

    fn entry(key: &ChannelKey, at: u64) -> VerifiedDirectoryEntry {
        let e = DirectoryEntry {
            channel: key.channel_id(),
            title: "t".into(),
            description: String::new(),
            renditions: vec![],
            started_at_ms: 1,
            announced_at_ms: at,
            head_seq: 1,
        };
        let bytes = key.sign_directory_entry(&e).unwrap().encode();
        SignedDirectoryEntry::decode(&bytes).unwrap().verify(at, 0).unwrap()
    }

    #[test]
    fn newest_wins_bounded_and_expiring() {
        let now = Instant::now();
        let keys: Vec<_> = (1..=3u8).map(|i| ChannelKey::from_secret_bytes(&[i; 32])).collect();
        let mut d = DirectoryList::new(2, Duration::from_secs(60));
        assert!(d.offer(entry(&keys[0], 10), now));
        assert!(!d.offer(entry(&keys[0], 10), now), "replay is stale");
        assert!(!d.offer(entry(&keys[0], 5), now), "older is stale");
        assert!(d.offer(entry(&keys[0], 20), now + Duration::from_secs(2)));
        assert!(d.offer(entry(&keys[1], 10), now + Duration::from_secs(1)));
        // Full: the least recently heard (keys[1] at +1s) is evicted.
        assert!(d.offer(entry(&keys[2], 10), now + Duration::from_secs(3)));
        let chans: Vec<_> = d.list().iter().map(|e| e.entry().channel).collect();
        assert_eq!(chans, vec![keys[2].channel_id(), keys[0].channel_id()]);
        d.expire(now + Duration::from_secs(62));
        assert_eq!(d.list().len(), 1);
        d.expire(now + Duration::from_secs(64));
        assert!(d.list().is_empty());
    }
}
