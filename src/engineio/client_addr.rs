//! The client address of a request: the socket peer, or, when the peer is a configured trusted proxy, the
//! client that proxy names in `X-Forwarded-For` or `Forwarded: for=`.
//!
//! Only the hops a trusted proxy appended can be believed: a client writes whatever it likes to the left of
//! them. So the list is read from the right, trusted proxies are skipped, and the first hop that is not a
//! trusted proxy is the client ("rightmost untrusted hop").

use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderMap;

/// An address block, `192.0.2.0/24` or `2001:db8::/32`; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: IpAddr,
    prefix: u8,
}

/// A `trusted_proxies` entry that is neither an address nor a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR block (e.g. 10.0.0.1, 10.0.0.0/8, fd00::/8)")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let error = || CidrError(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let base = canonical(addr.trim().parse::<IpAddr>().map_err(|_| error())?);
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(error)?,
            None => max,
        };
        Ok(Cidr {
            base: mask(base, prefix),
            prefix,
        })
    }
}

impl Cidr {
    /// True when `ip` lies in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.base.is_ipv4() && mask(ip, self.prefix) == self.base
    }
}

/// The proxies whose forwarding headers are believed (`limits.trusted_proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parses every entry; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<TrustedProxies, CidrError> {
        entries
            .iter()
            .map(|entry| entry.as_ref().parse())
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    /// True when no proxy is trusted (the socket peer is always the client).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// The client behind a request from `peer`: `peer` itself unless it is a trusted proxy; then the rightmost
    /// hop of `X-Forwarded-For` (or, without it, of `Forwarded`) that is not a trusted proxy. When every hop is
    /// trusted, the leftmost one; when a hop cannot be read, the trusted hop right of it.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let hops = forwarded_for(headers);
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = hop else {
                return client;
            };
            client = canonical(*ip);
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }
}

/// The `for` hops of a request, left to right: every `X-Forwarded-For` line, or when there is none, every
/// `Forwarded` line; `None` for a hop that is not an address (`unknown`, an obfuscated name, garbage).
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let xff: Vec<Option<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|line| line.to_str().unwrap_or("?").split(','))
        .map(parse_hop)
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    headers
        .get_all(http::header::FORWARDED)
        .iter()
        .flat_map(|line| line.to_str().unwrap_or("?").split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_hop(value))
            })
        })
        .collect()
}

/// One hop: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`, optionally in quotes.
fn parse_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) as the IPv4 address they are.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// `ip` with every bit past `prefix` cleared.
pub fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((bits & keep).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((bits & keep).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(lines: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn blocks_parse_and_match() {
        let block: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(block.contains(ip("10.1.200.3")));
        assert!(!block.contains(ip("10.2.0.1")));
        assert!(block.contains(ip("::ffff:10.1.0.9")));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("::1")));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/",
            "/8",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_send() {
        let proxies = TrustedProxies::parse(&["10.0.0.1"]).unwrap();
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(
            proxies.client(ip("203.0.113.5"), &spoofed),
            ip("203.0.113.5")
        );
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("10.0.0.1"), &spoofed), ip("10.0.0.1"));
    }

    #[test]
    fn trusted_proxies_name_the_rightmost_untrusted_hop() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8", "fd00::/8"]).unwrap();
        let peer = ip("10.0.0.1");
        // The client prepended a lie; the proxy appended the real address.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.7")]);
        assert_eq!(proxies.client(peer, &h), ip("198.51.100.7"));
        // Two proxies in a row, split over two lines.
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4, 198.51.100.7"),
            ("x-forwarded-for", "10.9.9.9"),
        ]);
        assert_eq!(proxies.client(peer, &h), ip("198.51.100.7"));
        // Every hop trusted: the leftmost.
        let h = headers(&[("x-forwarded-for", "10.3.3.3, 10.2.2.2")]);
        assert_eq!(proxies.client(peer, &h), ip("10.3.3.3"));
        // Unreadable rightmost hop: the proxy itself is counted.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, garbage")]);
        assert_eq!(proxies.client(peer, &h), peer);
        // No header at all: the proxy.
        assert_eq!(proxies.client(peer, &HeaderMap::new()), peer);
        // Ports and brackets.
        let h = headers(&[("x-forwarded-for", "198.51.100.7:5555")]);
        assert_eq!(proxies.client(peer, &h), ip("198.51.100.7"));
        let h = headers(&[("x-forwarded-for", "[2001:db8::9]:5555, fd00::1")]);
        assert_eq!(proxies.client(peer, &h), ip("2001:db8::9"));
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        let h = headers(&[(
            "forwarded",
            "for=1.2.3.4;proto=http, For=\"[2001:db8:cafe::17]:4711\";by=10.0.0.1",
        )]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &h), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "for=1.2.3.4, for=unknown")]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &h), ip("10.0.0.1"));
        let h = headers(&[
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &h), ip("198.51.100.7"));
    }

    #[test]
    fn masks() {
        assert_eq!(mask(ip("2001:db8:1:2:3:4:5:6"), 64), ip("2001:db8:1:2::"));
        assert_eq!(mask(ip("192.0.2.77"), 24), ip("192.0.2.0"));
        assert_eq!(mask(ip("192.0.2.77"), 0), ip("0.0.0.0"));
        assert_eq!(canonical(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }
}
