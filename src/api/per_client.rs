//! What each client address holds open (HTTP connections, event streams), counted against a
//! cap. Addresses are keyed like the rate limit's ([`ClientKey::for_ip`]: IPv6 by its /64). The
//! map holds only addresses with something open, so it is bounded by what is open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::rate_limit::ClientKey;

/// Open items per client address, with a cap (0: no cap, counted all the same).
#[derive(Debug)]
pub struct PerClient {
    cap: usize,
    held: Mutex<HashMap<ClientKey, usize>>,
}

/// One item held by one client; gives its place back when dropped.
#[derive(Debug)]
pub struct PerClientSlot {
    owner: Arc<PerClient>,
    key: ClientKey,
}

impl PerClient {
    pub fn new(cap: usize) -> Arc<PerClient> {
        Arc::new(PerClient {
            cap,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The cap (0: none).
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// A slot for `ip`, or `None` when that client already holds `cap` items.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<PerClientSlot> {
        let key = ClientKey::for_ip(ip);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(key.clone()).or_insert(0);
        if self.cap > 0 && *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(PerClientSlot {
            owner: self.clone(),
            key,
        })
    }

    /// Items `ip` holds now.
    pub fn held_by(&self, ip: IpAddr) -> usize {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(&ClientKey::for_ip(ip)).copied().unwrap_or(0)
    }
}

impl Drop for PerClientSlot {
    fn drop(&mut self) {
        let mut held = self.owner.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_is_capped_alone_and_slots_come_back_when_dropped() {
        let table = PerClient::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = table.try_take(a).unwrap();
        let _second = table.try_take(a).unwrap();
        assert!(table.try_take(a).is_none());
        let _other = table.try_take(b).expect("another client is not affected");
        drop(first);
        assert_eq!(table.held_by(a), 1);
        assert!(table.try_take(a).is_some());
        // One /64 is one client.
        let v6 = PerClient::new(1);
        let _x = v6.try_take("2001:db8::1".parse().unwrap()).unwrap();
        assert!(v6.try_take("2001:db8::2".parse().unwrap()).is_none());
        assert!(v6.try_take("2001:db8:0:1::1".parse().unwrap()).is_some());
    }

    #[test]
    fn without_a_cap_everything_is_counted_and_the_map_empties() {
        let table = PerClient::new(0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let slots: Vec<_> = (0..100).map(|_| table.try_take(a).unwrap()).collect();
        assert_eq!(table.held_by(a), 100);
        drop(slots);
        assert!(table.held.lock().unwrap().is_empty());
    }
}
