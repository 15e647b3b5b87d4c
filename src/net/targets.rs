//! Which addresses the gateway may connect to, checked **after DNS resolution** so that a name
//! cannot smuggle the gateway into its own network (SSRF): the addresses checked are the ones
//! connected to. IP-literal URLs skip the resolver and must be checked with
//! [`TargetPolicy::permits`] before the request. One implementation for the HTTP binding
//! (`[bindings.http] allow_targets`) and the webhook sender (`[webhooks] allow_targets`).

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Parses an `allow_targets` list (CIDR ranges or single addresses); `section` names the config
/// key in the error.
pub fn parse_allow_list(list: &[String], section: &str) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            s.trim()
                .parse::<IpNet>()
                .or_else(|_| s.trim().parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{section}.allow_targets: {s:?} is not a CIDR range"))
        })
        .collect()
}

/// Which addresses the gateway may connect to.
#[derive(Clone, Debug)]
pub struct TargetPolicy {
    allow: Vec<IpNet>,
}

impl TargetPolicy {
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        is_public(ip) || self.allow.iter().any(|n| n.contains(&ip))
    }

    /// The literal address of a URL's host that the policy refuses, if any (names are checked
    /// by [`CheckedResolver`] when connecting).
    pub fn refused_literal(&self, url: &url::Url) -> Option<IpAddr> {
        let ip = match url.host()? {
            url::Host::Ipv4(a) => IpAddr::V4(a),
            url::Host::Ipv6(a) => IpAddr::V6(a),
            url::Host::Domain(_) => return None,
        };
        (!self.permits(ip)).then_some(ip)
    }
}

/// Globally routable unicast (not loopback, private, link-local, CGNAT, documentation, …).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xC0) == 64) // 100.64.0.0/10 CGNAT (RFC 6598)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 (RFC 6890)
                || (o[0] == 198 && (o[1] & 0xFE) == 18) // 198.18.0.0/15 benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xFE00) == 0xFC00 // unique local fc00::/7
                || (s[0] & 0xFFC0) == 0xFE80 // link local fe80::/10
                || (s[0] == 0x2001 && s[1] == 0x0DB8)) // documentation
        }
    }
}

/// A reqwest resolver that drops addresses the policy refuses (and fails when none is left).
pub struct CheckedResolver {
    pub policy: TargetPolicy,
    /// The config section named in the error (`bindings.http`, `webhooks`).
    pub section: &'static str,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let section = self.section;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(TargetRefused(format!(
                    "{host} resolves only to addresses outside {section}.allow_targets ({})",
                    addrs
                        .iter()
                        .map(|a| a.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The resolver's refusal (found in a reqwest error's source chain).
#[derive(Debug, thiserror::Error)]
#[error("target refused: {0}")]
pub struct TargetRefused(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_private_addresses() {
        let p = TargetPolicy::new(vec![]);
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "100.64.0.1",
            "0.0.0.0",
            "::ffff:127.0.0.1",
        ] {
            assert!(!p.permits(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2a00:1450::1", "1.1.1.1"] {
            assert!(p.permits(ip.parse().unwrap()), "{ip}");
        }
        let p = TargetPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(p.permits("127.0.0.5".parse().unwrap()));
        assert!(!p.permits("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn literal_hosts_are_checked_names_are_left_to_the_resolver() {
        let p = TargetPolicy::new(vec![]);
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            p.refused_literal(&u("http://127.0.0.1:9/x")),
            Some("127.0.0.1".parse().unwrap())
        );
        assert!(p.refused_literal(&u("https://[::1]/")).is_some());
        assert_eq!(p.refused_literal(&u("https://8.8.8.8/")), None);
        assert_eq!(p.refused_literal(&u("https://localhost/")), None);
    }

    #[test]
    fn allow_list_parsing() {
        let ok = parse_allow_list(&["127.0.0.0/8".into(), "::1".into()], "webhooks").unwrap();
        assert_eq!(ok.len(), 2);
        let e = parse_allow_list(&["nope".into()], "webhooks").unwrap_err();
        assert!(e.contains("webhooks.allow_targets"), "{e}");
    }
}
