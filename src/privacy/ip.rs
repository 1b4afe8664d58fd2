//! IP truncation: the only place a full client address is read. What comes
//! out is a [`TruncatedIp`], which is all that geolocation, hashing and the
//! rest of tamis ever see.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// An address with its host bits cleared (IPv4 /24 and IPv6 /48 by
/// default). Its `Debug` never prints the address: even truncated, it stays
/// out of logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TruncatedIp(IpAddr);

impl TruncatedIp {
    pub fn addr(&self) -> IpAddr {
        self.0
    }

    /// Bytes fed to the visitor-key hash: 4 for IPv4, 16 for IPv6.
    pub fn hash_bytes(&self) -> Vec<u8> {
        match self.0 {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }

    /// Wraps an address that a test already knows to be truncated.
    #[doc(hidden)]
    pub fn for_tests(addr: IpAddr) -> Self {
        TruncatedIp(addr)
    }
}

impl std::fmt::Debug for TruncatedIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TruncatedIp(<redacted>)")
    }
}

/// Clears the host part of `ip`. IPv6 addresses that carry a whole IPv4
/// address inside their first 48 bits — IPv4-mapped (`::ffff:a.b.c.d`, as
/// dual-stack sockets report) and 6to4 (`2002:aabb:ccdd::/48`) — are
/// treated as that IPv4 address, so they get the IPv4 prefix: a /48 of them
/// would keep the whole IPv4 address. Prefixes longer than the maximum are
/// refused when the config is loaded.
pub fn truncate(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> TruncatedIp {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    TruncatedIp(match ip {
        IpAddr::V4(a) => IpAddr::V4(
            Ipv4Net::new(a, v4_prefix.min(32))
                .map(|n| n.network())
                .unwrap_or(Ipv4Addr::UNSPECIFIED),
        ),
        IpAddr::V6(a) => IpAddr::V6(
            Ipv6Net::new(a, v6_prefix.min(128))
                .map(|n| n.network())
                .unwrap_or(Ipv6Addr::UNSPECIFIED),
        ),
    })
}

fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    (s[0] == 0x2002)
        .then(|| Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ip: &str, v4: u8, v6: u8, expected: &str) {
        let got = truncate(ip.parse().unwrap(), v4, v6).addr();
        assert_eq!(got, expected.parse::<IpAddr>().unwrap(), "{ip} /{v4} /{v6}");
    }

    #[test]
    fn clears_host_bits() {
        check("198.51.100.77", 24, 48, "198.51.100.0");
        check("198.51.100.77", 16, 48, "198.51.0.0");
        check("198.51.100.77", 0, 48, "0.0.0.0");
        check("2001:db8:1:2:3:4:5:6", 24, 48, "2001:db8:1::");
        check("2001:db8:1:2:3:4:5:6", 24, 32, "2001:db8::");
        check("::ffff:198.51.100.77", 24, 48, "198.51.100.0");
        check("2002:c633:644d::1", 24, 48, "198.51.100.0");
        check("::1", 24, 48, "::");
    }

    #[test]
    fn debug_never_shows_the_address() {
        let t = truncate("198.51.100.77".parse().unwrap(), 24, 48);
        assert!(!format!("{t:?}").contains("198"));
    }
}
