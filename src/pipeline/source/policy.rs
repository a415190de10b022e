//! What the configuration lets a source reach, and the address checks every other source file
//! shares: the [`SourcePolicy`] (internal networks, local sources, git schemes), the literal
//! address reader [`literal_ip`] and the classifier [`is_internal`]. Both the submit-time URL
//! check ([`super::git_url`]) and the connect-time check ([`super::egress`]) import these; this
//! file imports neither. Pure functions, no I/O.

use std::net::{IpAddr, Ipv4Addr};

pub use crate::config::{GitSchemes, SourcePolicy};

/// The network schemes of git URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitScheme {
    Https,
    /// Plain http: only with private networks allowed (it cannot go through the checking proxy).
    Http,
    /// `ssh://` and scp-like `user@host:path`.
    Ssh,
    /// The git daemon protocol, `git://`.
    Git,
}

impl GitScheme {
    pub fn name(self) -> &'static str {
        match self {
            GitScheme::Https => "https",
            GitScheme::Http => "http",
            GitScheme::Ssh => "ssh",
            GitScheme::Git => "git",
        }
    }
}

/// Which schemes the configured set allows (the set itself is plain configuration data).
impl GitSchemes {
    pub fn allows(self, scheme: GitScheme) -> bool {
        match scheme {
            GitScheme::Https => self.https,
            GitScheme::Http => self.http,
            GitScheme::Ssh => self.ssh,
            GitScheme::Git => self.git,
        }
    }

    /// `https, ssh, git` (for messages).
    pub fn list(self) -> String {
        [
            GitScheme::Https,
            GitScheme::Ssh,
            GitScheme::Git,
            GitScheme::Http,
        ]
        .into_iter()
        .filter(|s| self.allows(*s))
        .map(GitScheme::name)
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// The address a host literal stands for, read the way resolvers and libgit2 read it, so that
/// the submit-time check and the connect-time check see the same host: IPv6 in brackets or not,
/// IPv4 in every form `inet_aton` accepts (one to four parts, each decimal, octal with a leading
/// `0` or hexadecimal with `0x`: `127.1`, `0`, `2130706433`, `0x7f.1`, `0177.0.0.1`), with an
/// optional trailing dot. `None` for a name.
pub fn literal_ip(host: &str) -> Option<IpAddr> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(ip);
    }
    let bare = bare.strip_suffix('.').unwrap_or(bare);
    let parts: Vec<&str> = bare.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) =
            if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                (hex, 16)
            } else if part.len() > 1 && part.starts_with('0') {
                (&part[1..], 8)
            } else {
                (*part, 10)
            };
        if digits.is_empty() && radix != 16 {
            return None;
        }
        let value = if digits.is_empty() {
            0
        } else {
            u64::from_str_radix(digits, radix).ok()?
        };
        values.push(value);
    }
    // The last part fills the bytes the earlier parts left (a.b.c.d, a.b.c16, a.b24, a32).
    let (last, init) = values.split_last()?;
    if init.iter().any(|&v| v > 255) {
        return None;
    }
    let last_bits = 8 * (4 - init.len() as u32);
    if *last >= 1u64 << last_bits {
        return None;
    }
    let mut addr: u64 = 0;
    for (i, v) in init.iter().enumerate() {
        addr |= v << (24 - 8 * i as u32);
    }
    addr |= last;
    Some(IpAddr::V4(Ipv4Addr::from(addr as u32)))
}

/// Why a host check at connect time did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCheck {
    /// The host resolves to an internal address (permanent).
    Refused(String),
    /// The name did not resolve (possibly transient).
    Unresolved(String),
}

/// Loopback, private, link-local, shared (CGNAT), unspecified, multicast, reserved,
/// documentation, benchmarking and unique-local addresses, cloud metadata endpoints, and IPv6
/// forms that embed one of those IPv4 addresses (mapped, compatible, NAT64, 6to4): anything
/// that is not a public unicast address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, which includes :: and ::1).
            if let Some(v4) = v6.to_ipv4() {
                return is_internal_v4(v4);
            }
            let seg = v6.segments();
            let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
            // NAT64 (64:ff9b::/96, 64:ff9b:1::/48) reaches the embedded IPv4 address.
            if seg[0] == 0x64 && seg[1] == 0xff9b {
                return seg[2] != 0 || is_internal_v4(embedded(seg[6], seg[7]));
            }
            // 6to4 (2002::/16) tunnels to the IPv4 address in bits 16..48.
            if seg[0] == 0x2002 {
                return is_internal_v4(embedded(seg[1], seg[2]));
            }
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254 is EC2's metadata)
                || (seg[0] & 0xffc0) == 0xfe80 // link local
                || (seg[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
                || (seg[0] == 0x2001 && seg[1] == 0) // Teredo: tunnels to anything
                || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]) // discard-only 100::/64
                || (seg[0] & 0xe000) != 0x2000 // outside global unicast 2000::/3
        }
    }
}

fn is_internal_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local() // 169.254.0.0/16, including 169.254.169.254 (metadata)
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || o[0] == 0
        || o[0] >= 240 // 240.0.0.0/4 reserved
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 shared (CGNAT; Alibaba metadata)
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 protocol assignments
}
