//! Per-client request rate limit: one token bucket per client, keyed by the authenticated token's
//! name, or by the peer IP address (IPv6 by its /64, which one host usually owns whole) when the
//! request carries no valid token.
//!
//! The bucket map is bounded: at [`MAX_CLIENTS`] entries, buckets that have refilled completely
//! (indistinguishable from a new client) are dropped, and if none has, the least recently seen
//! one is. A flood of distinct addresses therefore cannot grow memory without limit; at worst it
//! gives some clients a fresh bucket early.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateLimit;

/// Most clients tracked at once.
pub const MAX_CLIENTS: usize = 10_000;

/// Who a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An authenticated token, by name.
    Token(String),
    /// An address (IPv6 truncated to its /64).
    Ip(IpAddr),
}

impl ClientKey {
    pub fn for_ip(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(_) => ClientKey::Ip(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::Ip(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    ClientKey::Ip(IpAddr::V6(bits.into()))
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The buckets of every recently seen client.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    max_clients: usize,
    buckets: Mutex<HashMap<ClientKey, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter::with_capacity(limit, MAX_CLIENTS)
    }

    fn with_capacity(limit: RateLimit, max_clients: usize) -> RateLimiter {
        RateLimiter {
            limit,
            max_clients,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket; `Err(seconds)` says when the next one is available.
    pub fn check(&self, key: ClientKey, now: Instant) -> Result<(), u64> {
        let burst = f64::from(self.limit.burst);
        let rate = self.limit.per_second;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= self.max_clients {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
            if buckets.len() >= self.max_clients {
                let oldest = buckets
                    .iter()
                    .min_by_key(|(_, b)| b.last)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    buckets.remove(&oldest);
                }
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / rate;
            Err((wait.ceil() as u64).max(1))
        }
    }

    /// Clients currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimit { per_second, burst })
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_for_the_rate() {
        let l = limiter(0.5, 3);
        let t0 = Instant::now();
        let me = ClientKey::Token("ci".into());
        for _ in 0..3 {
            assert_eq!(l.check(me.clone(), t0), Ok(()));
        }
        assert_eq!(l.check(me.clone(), t0), Err(2));
        // Another client is not affected.
        assert_eq!(l.check(ClientKey::Token("other".into()), t0), Ok(()));
        // One token back after 2 s at 0.5/s.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(l.check(me.clone(), t1), Ok(()));
        assert!(l.check(me.clone(), t1).is_err());
        // Idle for long: the bucket holds the burst, not more.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(l.check(me.clone(), t2), Ok(()));
        }
        assert!(l.check(me, t2).is_err());
    }

    #[test]
    fn the_client_map_stays_bounded_under_a_flood_of_addresses() {
        let l = RateLimiter::with_capacity(
            RateLimit {
                per_second: 1.0,
                burst: 2,
            },
            100,
        );
        let t0 = Instant::now();
        let heavy = ClientKey::Ip("10.9.9.9".parse().unwrap());
        l.check(heavy.clone(), t0).unwrap();
        l.check(heavy.clone(), t0).unwrap();
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            let _ = l.check(
                ClientKey::for_ip(ip),
                t0 + Duration::from_millis(u64::from(i)),
            );
            assert!(l.tracked() <= 100);
        }
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::for_ip(a), ClientKey::for_ip(b));
        assert_ne!(ClientKey::for_ip(a), ClientKey::for_ip(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            ClientKey::for_ip(mapped),
            ClientKey::Ip("10.0.0.1".parse().unwrap())
        );
    }
}
