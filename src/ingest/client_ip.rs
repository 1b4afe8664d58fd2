//! Which address a hit comes from: the socket's peer, or, when the peer is a
//! trusted proxy, the right-most `X-Forwarded-For` hop that is not itself a
//! trusted proxy. Left-most hops are whatever the client wrote and are never
//! believed over a trusted hop.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, how a dual-stack socket
//! reports an IPv4 peer, and what some proxies forward) are read as the
//! IPv4 address they carry, before the trust check: a proxy trusted as
//! `127.0.0.1/32` is the same proxy when it reaches a `[::]` listener.

use std::net::IpAddr;

use ipnet::IpNet;

pub fn client_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    // Several headers are one list, in order; walk it from the right.
    let hops = forwarded_for
        .iter()
        .flat_map(|h| h.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // A garbled hop ends the chain: what lies left of it cannot be
            // attributed to a trusted proxy.
            None => break,
        }
    }
    client
}

/// Accepts `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` and `[2001:db8::1]:443`.
/// IPv4-mapped forms come out as IPv4.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let ip = if let Ok(ip) = hop.parse::<IpAddr>() {
        Some(ip)
    } else if let Ok(sock) = hop.parse::<std::net::SocketAddr>() {
        Some(sock.ip())
    } else {
        hop.strip_prefix('[')
            .and_then(|rest| rest.split(']').next())
            .and_then(|inner| inner.parse::<IpAddr>().ok())
    };
    ip.map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(peer: &str, xff: &[&str], expected: &str) {
        let trusted: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let got = client_ip(peer.parse().unwrap(), xff, &trusted);
        assert_eq!(got, expected.parse::<IpAddr>().unwrap(), "{peer} {xff:?}");
    }

    #[test]
    fn believes_only_trusted_proxies() {
        check("198.51.100.7", &["203.0.113.9"], "198.51.100.7");
        check("127.0.0.1", &[], "127.0.0.1");
        check("127.0.0.1", &["203.0.113.9"], "203.0.113.9");
        check("127.0.0.1", &["6.6.6.6, 203.0.113.9"], "203.0.113.9");
        check(
            "127.0.0.1",
            &["6.6.6.6, 203.0.113.9, 10.1.1.1"],
            "203.0.113.9",
        );
        check("127.0.0.1", &["6.6.6.6", "203.0.113.9"], "203.0.113.9");
        check("127.0.0.1", &["203.0.113.9:5555"], "203.0.113.9");
        check("127.0.0.1", &["[2001:db8::1]:443"], "2001:db8::1");
        check("127.0.0.1", &["6.6.6.6, garbage"], "127.0.0.1");
        check("127.0.0.1", &["10.2.2.2"], "10.2.2.2");
    }

    /// Issue 12, point 9: a trusted IPv4 proxy reaching a dual-stack
    /// listener is seen as `::ffff:127.0.0.1`; every visitor became the
    /// proxy.
    #[test]
    fn trusted_ipv4_proxy_on_dual_stack_listener() {
        check("::ffff:127.0.0.1", &["203.0.113.9"], "203.0.113.9");
        check("::ffff:127.0.0.1", &[], "127.0.0.1");
        check("::ffff:127.0.0.1", &["::ffff:10.1.1.1"], "10.1.1.1");
        check(
            "::ffff:127.0.0.1",
            &["203.0.113.9, ::ffff:10.1.1.1"],
            "203.0.113.9",
        );
        check(
            "::ffff:127.0.0.1",
            &["[::ffff:203.0.113.9]:443"],
            "203.0.113.9",
        );
        check("::ffff:198.51.100.7", &["203.0.113.9"], "198.51.100.7");
    }
}
