//! Which addresses the gateway may connect to, checked **after DNS resolution** so that a name
//! cannot smuggle the gateway into its own network (SSRF): the addresses checked are the ones
//! connected to. IP-literal URLs skip the resolver and must be checked with
//! [`TargetPolicy::permits`] before the request. One implementation for every outbound path
//! (DESIGN §10.3): the HTTP binding (`[bindings.http] allow_targets`), the WAP UDP bearer
//! (`[bindings.wap]`), SIP device URIs contacted directly (`[bindings.sip]`), OBEX relays
//! (`[bindings.obex]`) and the webhook sender (`[webhooks]`).
//!
//! What a tenant learns from a refusal is only "target not allowed": never which addresses a
//! name resolved to (that would map the gateway's internal DNS for it).

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
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // IPv6 forms that embed an IPv4 address reach it through a translator or relay the
            // network may run: NAT64 64:ff9b::/96 (RFC 6052) and 6to4 2002::/16 (RFC 3056) are
            // not public whatever they embed (an operator who needs them lists them).
            if (s[0] == 0x0064 && s[1] == 0xFF9B && s[2..6] == [0; 4]) || s[0] == 0x2002 {
                return false;
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // IPv4-compatible ::a.b.c.d (RFC 4291 §2.5.5.1, deprecated) and the rest of ::/96.
                || s[0..6] == [0; 6]
                || (s[0] & 0xFE00) == 0xFC00 // unique local fc00::/7
                || (s[0] & 0xFFC0) == 0xFE80 // link local fe80::/10
                || (s[0] & 0xFFC0) == 0xFEC0 // site local fec0::/10 (RFC 3879, deprecated)
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
                return Err(Box::new(TargetRefused::after_dns(&host, section))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A refusal by the policy (found in a reqwest error's source chain, or returned by
/// [`TargetPolicy::resolve`]). Its text is what the tenant sees in push events: it starts with
/// "target not allowed" and names neither the resolved addresses nor why a connection would
/// have failed.
#[derive(Debug, thiserror::Error)]
#[error("target not allowed: {0}")]
pub struct TargetRefused(pub String);

impl TargetRefused {
    /// A literal address outside the list.
    pub fn literal(ip: IpAddr, section: &str) -> Self {
        Self(format!("{ip} is outside {section}.allow_targets"))
    }

    /// A name none of whose addresses the list permits.
    pub fn after_dns(host: &str, section: &str) -> Self {
        Self(format!(
            "{host} resolves to no address {section}.allow_targets permits"
        ))
    }
}

/// Why [`TargetPolicy::resolve`] found nothing to connect to.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Permanent: the policy refuses every address.
    #[error(transparent)]
    Refused(#[from] TargetRefused),
    /// Transient: DNS failed or answered nothing.
    #[error("resolving {host}: {reason}")]
    Dns { host: String, reason: String },
}

impl TargetPolicy {
    /// Resolves `host` (a name or an IP literal) and keeps the addresses the policy permits,
    /// in resolver order: what the non-HTTP bindings connect to. `section` names the config
    /// section in a refusal.
    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
        section: &str,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return if self.permits(ip) {
                Ok(vec![SocketAddr::new(ip, port)])
            } else {
                Err(TargetRefused::literal(ip, section).into())
            };
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ResolveError::Dns {
                host: host.to_owned(),
                reason: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(ResolveError::Dns {
                host: host.to_owned(),
                reason: "no address".into(),
            });
        }
        let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|a| self.permits(a.ip())).collect();
        if allowed.is_empty() {
            return Err(TargetRefused::after_dns(host, section).into());
        }
        Ok(allowed)
    }

    /// The literal IP of a host text (brackets allowed) that the policy refuses; names pass
    /// (they are checked after DNS at send time).
    pub fn refused_host(&self, host: &str) -> Option<IpAddr> {
        let h = host.trim_start_matches('[').trim_end_matches(']');
        let ip = h.parse::<IpAddr>().ok()?;
        (!self.permits(ip)).then_some(ip)
    }
}

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
    fn ipv6_forms_that_embed_ipv4_or_are_deprecated_are_not_public() {
        let p = TargetPolicy::new(vec![]);
        for ip in [
            "64:ff9b::7f00:1",  // NAT64 of 127.0.0.1
            "64:ff9b::808:808", // NAT64 of 8.8.8.8: still through a translator
            "2002:7f00:1::1",   // 6to4
            "2002:808:808::1",
            "::127.0.0.1", // IPv4-compatible
            "::8.8.8.8",
            "fec0::1", // site local
            "feff::1",
        ] {
            assert!(!p.permits(ip.parse().unwrap()), "{ip}");
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        assert!(!is_public("::ffff:10.0.0.1".parse().unwrap()));
        assert!(is_public("::ffff:8.8.8.8".parse().unwrap()));
        assert!(is_public("2a00:1450::1".parse().unwrap()));
        let allowed = TargetPolicy::new(vec!["64:ff9b::/96".parse().unwrap()]);
        assert!(allowed.permits("64:ff9b::808:808".parse().unwrap()));
    }

    #[tokio::test]
    async fn resolve_checks_literals_and_names_and_hides_addresses() {
        let p = TargetPolicy::new(vec![]);
        let e = p
            .resolve("127.0.0.1", 9, "bindings.obex")
            .await
            .unwrap_err();
        assert!(matches!(e, ResolveError::Refused(_)), "{e}");
        assert!(e.to_string().starts_with("target not allowed"), "{e}");
        let e = p.resolve("localhost", 9, "bindings.sip").await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ResolveError::Refused(_)), "{text}");
        assert!(text.contains("bindings.sip.allow_targets"), "{text}");
        assert!(
            !text.contains("127.0.0.1") && !text.contains("::1"),
            "no resolved address in {text}"
        );
        let open = TargetPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let a = open.resolve("127.0.0.1", 9, "x").await.unwrap();
        assert_eq!(a, vec!["127.0.0.1:9".parse().unwrap()]);
        assert_eq!(p.refused_host("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(p.refused_host("example.com"), None);
    }

    #[test]
    fn allow_list_parsing() {
        let ok = parse_allow_list(&["127.0.0.0/8".into(), "::1".into()], "webhooks").unwrap();
        assert_eq!(ok.len(), 2);
        let e = parse_allow_list(&["nope".into()], "webhooks").unwrap_err();
        assert!(e.contains("webhooks.allow_targets"), "{e}");
    }
}
