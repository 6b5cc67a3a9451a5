//! Blocks that follow a person across sessions: kept by device (the keyed hash of the
//! `client.device` id a client sends in `hello`), not by session, for [`BLOCK_TTL`], within fixed
//! bounds. Nodes of a service share the key (the resume secret), so a device is the same on every
//! node and their blocks meet in the shared store.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::token::TokenKey;

/// How long a block between two devices holds.
pub const BLOCK_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Blocks kept per device; the oldest goes first.
pub const MAX_BLOCKS_PER_DEVICE: usize = 256;
/// Devices with blocks kept; the one that blocked least recently goes first.
pub const MAX_BLOCKING_DEVICES: usize = 100_000;

/// A device as the hub knows it: a keyed hash of its id (the id itself is never kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Device(u64);

impl Device {
    /// The device of a `client.device` id, hashed with `key`.
    pub fn of(id: &str, key: &TokenKey) -> Self {
        Self(key.tag64("device", id))
    }

    /// As the shared store writes it.
    pub fn hex(self) -> String {
        format!("{:016x}", self.0)
    }

    /// From [`Device::hex`].
    pub fn from_hex(hex: &str) -> Option<Self> {
        u64::from_str_radix(hex, 16).ok().map(Self)
    }
}

/// Who blocked whom, by device.
#[derive(Debug, Default)]
pub struct DeviceBlocks {
    by_device: HashMap<Device, VecDeque<(Device, Instant)>>,
    /// Devices in the order they last blocked someone (oldest first; may hold stale entries).
    recency: VecDeque<(Device, Instant)>,
}

impl DeviceBlocks {
    /// `a` and `b` never meet again (either way round) until [`BLOCK_TTL`] has passed.
    pub fn block(&mut self, now: Instant, a: Device, b: Device) {
        for (from, to) in [(a, b), (b, a)] {
            let list = self.by_device.entry(from).or_default();
            list.retain(|(d, _)| *d != to);
            if list.len() == MAX_BLOCKS_PER_DEVICE {
                list.pop_front();
            }
            list.push_back((to, now));
            self.recency.push_back((from, now));
        }
        self.evict();
    }

    /// True if a block between the two holds at `now`.
    pub fn blocked(&self, now: Instant, a: Device, b: Device) -> bool {
        self.by_device
            .get(&a)
            .is_some_and(|l| l.iter().any(|(d, at)| *d == b && now.saturating_duration_since(*at) < BLOCK_TTL))
    }

    fn evict(&mut self) {
        while self.by_device.len() > MAX_BLOCKING_DEVICES {
            let Some((device, at)) = self.recency.pop_front() else { return };
            // Only the entry of the device's latest block counts.
            let latest = self.by_device.get(&device).and_then(|l| l.back()).map(|(_, t)| *t);
            if latest == Some(at) && !self.recency.iter().any(|(d, _)| *d == device) {
                self.by_device.remove(&device);
            }
        }
        if self.recency.len() > 4 * MAX_BLOCKING_DEVICES {
            let by_device = &self.by_device;
            self.recency.retain(|(d, at)| by_device.get(d).and_then(|l| l.back()).is_some_and(|(_, t)| t == at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_holds_both_ways_until_it_expires() {
        let t0 = Instant::now();
        let k = TokenKey::new(b"1".to_vec());
        let (a, b, c) = (
            Device::of("aaaaaaaaaaaaaaaa", &k),
            Device::of("bbbbbbbbbbbbbbbb", &k),
            Device::of("cccccccccccccccc", &k),
        );
        let mut blocks = DeviceBlocks::default();
        blocks.block(t0, a, b);
        assert!(blocks.blocked(t0, a, b) && blocks.blocked(t0, b, a));
        assert!(!blocks.blocked(t0, a, c));
        assert!(!blocks.blocked(t0 + BLOCK_TTL, a, b));
    }

    #[test]
    fn the_same_id_is_the_same_device_under_the_same_key_only() {
        let (k1, k2) = (TokenKey::new(b"1".to_vec()), TokenKey::new(b"2".to_vec()));
        assert_eq!(Device::of("aaaaaaaaaaaaaaaa", &k1), Device::of("aaaaaaaaaaaaaaaa", &TokenKey::new(b"1".to_vec())));
        assert_ne!(Device::of("aaaaaaaaaaaaaaaa", &k1), Device::of("aaaaaaaaaaaaaaaa", &k2));
        let d = Device::of("aaaaaaaaaaaaaaaa", &k1);
        assert_eq!(Device::from_hex(&d.hex()), Some(d));
    }

    #[test]
    fn blocks_per_device_are_bounded() {
        let t0 = Instant::now();
        let a = Device::of("aaaaaaaaaaaaaaaa", &TokenKey::new(b"1".to_vec()));
        let mut blocks = DeviceBlocks::default();
        for i in 0..(MAX_BLOCKS_PER_DEVICE + 5) {
            blocks.block(t0, a, Device(i as u64));
        }
        assert!(!blocks.blocked(t0, a, Device(0)), "the oldest went first");
        assert!(blocks.blocked(t0, a, Device(MAX_BLOCKS_PER_DEVICE as u64 + 4)));
        assert_eq!(blocks.by_device[&a].len(), MAX_BLOCKS_PER_DEVICE);
    }
}
