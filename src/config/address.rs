//! The listen address as people write it: `IP:port`, or `localhost:port` (the IPv4 loopback). Host names other
//! than `localhost` are refused with a hint, since a node binds one address and a name may resolve to several.

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Deserializer};

/// Parses `IP:port` (`127.0.0.1:3000`, `[::1]:3000`, `0.0.0.0:3000`) or `localhost:port`.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
    }
    Err(format!(
        "{text:?} is not an address to listen on: use IP:port (127.0.0.1:3000 for this machine only, \
         0.0.0.0:3000 for every interface) or localhost:port"
    ))
}

/// Serde `deserialize_with` for a listen address (see [`parse_listen`]).
pub fn deserialize_listen<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_listen(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_port_and_localhost_are_accepted_names_are_not() {
        assert_eq!(
            parse_listen("0.0.0.0:4000").unwrap(),
            "0.0.0.0:4000".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:4000").unwrap(),
            "[::1]:4000".parse().unwrap()
        );
        assert_eq!(
            parse_listen("localhost:3000").unwrap(),
            "127.0.0.1:3000".parse().unwrap()
        );
        for bad in [
            "localhost",
            "example.com:3000",
            "3000",
            "localhost:99999",
            "",
        ] {
            let e = parse_listen(bad).unwrap_err();
            assert!(e.contains("use IP:port"), "{bad}: {e}");
        }
    }
}
