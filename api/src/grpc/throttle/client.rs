//! Who an attempt comes from: the client address of a request (behind
//! trusted proxies only) and the unit it is counted by.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tonic::metadata::MetadataMap;

/// Who an attempt comes from, as far as throttling is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Client {
    /// No peer address (not a TCP connection).
    Unknown,
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6Net(u64),
}

impl Client {
    pub fn from_ip(ip: Option<IpAddr>) -> Self {
        match ip.map(canonical) {
            None => Client::Unknown,
            Some(IpAddr::V4(v4)) => Client::V4(v4),
            Some(IpAddr::V6(v6)) => Client::V6Net((u128::from(v6) >> 64) as u64),
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, from dual-stack sockets)
/// are the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A proxy address or network in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let base: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR block"))?;
        let base = canonical(base);
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { base, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, canonical(ip)) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(base) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(base) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Where a request's client address comes from: the TCP peer, unless the
/// peer is a trusted proxy, in which case the configured header (in
/// `X-Forwarded-For` form) names it. The header is read from the right,
/// past every trusted proxy, to the first address that is not one: entries
/// to the left of that were written by the client and prove nothing.
#[derive(Clone, Debug, Default)]
pub struct ClientAddresses {
    proxies: Vec<Network>,
    header: String,
}

impl ClientAddresses {
    /// `Err((index, reason))` names the entry of `proxies` that is invalid.
    pub fn new(proxies: &[String], header: &str) -> Result<Self, (usize, String)> {
        let proxies = proxies
            .iter()
            .enumerate()
            .map(|(index, text)| Network::parse(text).map_err(|why| (index, why)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            proxies,
            header: header.trim().to_ascii_lowercase(),
        })
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.proxies.iter().any(|net| net.contains(ip))
    }

    pub fn resolve(&self, peer: Option<SocketAddr>, metadata: &MetadataMap) -> Option<IpAddr> {
        let mut client = canonical(peer?.ip());
        if !self.trusted(client) || self.header.is_empty() {
            return Some(client);
        }
        for value in metadata.get_all(self.header.as_str()).iter().rev() {
            let Ok(text) = value.to_str() else {
                return Some(client);
            };
            for hop in text.rsplit(',') {
                let Some(ip) = parse_hop(hop) else {
                    // Malformed: stop at the last proxy we believe.
                    return Some(client);
                };
                client = canonical(ip);
                if !self.trusted(client) {
                    return Some(client);
                }
            }
        }
        Some(client)
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port
/// (`1.2.3.4:80`, `[2001:db8::1]:443`) or in brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_come_from_trusted_proxies_only() {
        let proxies = ClientAddresses::new(
            &["10.0.0.0/8".into(), "2001:db8:ffff::/48".into()],
            "X-Forwarded-For",
        )
        .expect("valid");
        let peer = |ip: &str| Some(SocketAddr::new(ip.parse().expect("ip"), 4000));
        let header = |value: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert("x-forwarded-for", value.parse().expect("ascii"));
            metadata
        };
        let ip = |text: &str| Some(text.parse::<IpAddr>().expect("ip"));
        // An untrusted peer's header is ignored.
        assert_eq!(
            proxies.resolve(peer("198.51.100.7"), &header("203.0.113.1")),
            ip("198.51.100.7")
        );
        // A trusted peer: the rightmost untrusted hop, past other proxies;
        // what the client itself wrote further left is ignored.
        assert_eq!(
            proxies.resolve(peer("10.1.2.3"), &header("6.6.6.6, 203.0.113.9, 10.9.9.9")),
            ip("203.0.113.9")
        );
        assert_eq!(
            proxies.resolve(peer("::ffff:10.1.2.3"), &header("[2001:db8::5]:443")),
            ip("2001:db8::5")
        );
        assert_eq!(
            proxies.resolve(peer("10.1.2.3"), &MetadataMap::new()),
            ip("10.1.2.3"),
            "no header: the proxy itself"
        );
        assert_eq!(
            proxies.resolve(peer("10.1.2.3"), &header("203.0.113.9, garbage")),
            ip("10.1.2.3"),
            "a malformed hop stops the walk at the last trusted address"
        );
        assert_eq!(proxies.resolve(None, &MetadataMap::new()), None);

        for bad in ["10.0.0.0/33", "nope", "::/129", "1.2.3.4/x"] {
            let err = ClientAddresses::new(&["127.0.0.1".into(), bad.into()], "x-forwarded-for");
            assert_eq!(err.err().map(|(index, _)| index), Some(1), "{bad}");
        }
        let net = Network::parse("0.0.0.0/0").expect("all of IPv4");
        assert!(net.contains(IpAddr::from([192, 0, 2, 1])));
        assert!(!net.contains("2001:db8::1".parse().expect("ip")));
    }
}
