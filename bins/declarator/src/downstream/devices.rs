//! The device channels open now, SV2 and Stratum V1: what the `devices` state topic lists, and
//! the summed nominal hashrate the pool channel is opened with.
//!
//! Every connection task records its channels here as they open, change and close; one task
//! ([`Server::publish_devices`](super::Server::publish_devices)) publishes the table on the
//! bus, at start and after changes, changes close together published as one state (a farm
//! reconnecting at once would otherwise publish the whole table once per device).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use jdc_shared::messages::{Device, Devices};

/// One open channel.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    kind: &'static str,
    user_identity: String,
    nominal_hashrate: f32,
    peer: SocketAddr,
    since_us: u64,
}

/// The open device channels, by channel id.
#[derive(Debug, Default)]
pub(crate) struct DeviceTable {
    channels: BTreeMap<u32, Entry>,
    /// Id of the last published state.
    last_id: u64,
}

impl DeviceTable {
    /// A channel opened (`kind`: `standard`, `extended` or `sv1`).
    pub fn opened(
        &mut self,
        channel_id: u32,
        kind: &'static str,
        user_identity: String,
        nominal_hashrate: f32,
        peer: SocketAddr,
        now_us: u64,
    ) {
        self.channels.insert(
            channel_id,
            Entry {
                kind,
                user_identity,
                nominal_hashrate,
                peer,
                since_us: now_us,
            },
        );
    }

    /// A channel's new nominal hashrate; `false` if no such channel is open.
    pub fn set_hashrate(&mut self, channel_id: u32, hashrate: f32) -> bool {
        match self.channels.get_mut(&channel_id) {
            Some(e) => {
                e.nominal_hashrate = hashrate;
                true
            }
            None => false,
        }
    }

    /// A channel's new user identity (a V1 device's worker name); `false` if no such channel
    /// is open.
    pub fn set_user(&mut self, channel_id: u32, user_identity: &str) -> bool {
        match self.channels.get_mut(&channel_id) {
            Some(e) if e.user_identity != user_identity => {
                e.user_identity = user_identity.to_string();
                true
            }
            _ => false,
        }
    }

    /// A channel closed; `false` if it was not open.
    pub fn closed(&mut self, channel_id: u32) -> bool {
        self.channels.remove(&channel_id).is_some()
    }

    /// Summed nominal hashrate of the open channels.
    pub fn total_hashrate(&self) -> f32 {
        self.channels.values().map(|e| e.nominal_hashrate).sum()
    }

    /// The state to publish now, with a fresh id: the microsecond clock, kept strictly
    /// increasing, so ids stay unique across restarts too.
    pub fn state(&mut self, now_us: u64) -> Devices {
        self.last_id = now_us.max(self.last_id.saturating_add(1));
        Devices {
            id: self.last_id,
            devices: self
                .channels
                .iter()
                .map(|(id, e)| Device {
                    channel_id: *id,
                    kind: e.kind.to_string(),
                    user_identity: e.user_identity.clone(),
                    nominal_hashrate: f64::from(e.nominal_hashrate),
                    peer: e.peer.to_string(),
                    since_us: e.since_us,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 7], 4242))
    }

    #[test]
    fn the_state_lists_open_channels_until_they_close() {
        let mut t = DeviceTable::default();
        let empty = t.state(100);
        assert!(empty.devices.is_empty());
        t.opened(3, "standard", "rig-3".into(), 1e12, peer(), 150);
        t.opened(1, "sv1", String::new(), 5e11, peer(), 160);
        assert!(t.set_user(1, "alice.worker1"));
        assert!(
            !t.set_user(1, "alice.worker1"),
            "no change, nothing to publish"
        );
        assert!(t.set_hashrate(3, 2e12));
        assert_eq!(t.total_hashrate(), 2.5e12);
        let s = t.state(200);
        let ids: Vec<u32> = s.devices.iter().map(|d| d.channel_id).collect();
        assert_eq!(ids, vec![1, 3]);
        assert_eq!(s.devices[0].kind, "sv1");
        assert_eq!(s.devices[0].user_identity, "alice.worker1");
        assert_eq!(s.devices[1].nominal_hashrate, f64::from(2e12f32));
        assert_eq!(s.devices[1].peer, "192.0.2.7:4242");
        assert_eq!(s.devices[1].since_us, 150);
        assert!(t.closed(3));
        assert!(!t.closed(3));
        assert!(!t.set_hashrate(3, 1.0));
        let s = t.state(200);
        assert_eq!(s.devices.len(), 1);
        assert_eq!(t.total_hashrate(), 5e11);
    }

    #[test]
    fn state_ids_grow_strictly_even_when_the_clock_does_not() {
        let mut t = DeviceTable::default();
        let a = t.state(1_000).id;
        let b = t.state(1_000).id;
        let c = t.state(900).id;
        assert_eq!(a, 1_000);
        assert!(b > a && c > b);
    }
}
