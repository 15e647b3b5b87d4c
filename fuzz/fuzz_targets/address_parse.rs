//! Fuzz target: the typed device-address parsers (src/domain/address.rs) and the allow-list
//! policy (src/net/targets.rs) take tenant-controlled text at every edge; none may panic, and a
//! parsed address must parse again from its own text (what the store keeps). Schemathesis found a
//! panic here once (a `tel:` check slicing inside a multi-byte character).
#![no_main]

use dmpushd::domain::{HttpTarget, Msisdn, ObexAddr, SipAddress, UdpAddr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = Msisdn::parse(s) {
        assert_eq!(Msisdn::parse(m.as_str()).as_ref(), Ok(&m));
    }
    if let Ok(u) = SipAddress::parse(s) {
        assert!(SipAddress::parse(u.as_str()).is_ok());
    }
    let _ = SipAddress::parse_gruu(s);
    if let Ok(h) = HttpTarget::parse(s) {
        assert!(HttpTarget::parse(h.as_str()).is_ok());
        let _ = h.redacted();
    }
    if let Ok(a) = UdpAddr::parse(s) {
        let _ = a.socket_addr(2948);
    }
    if let Ok(o) = ObexAddr::parse(s) {
        assert!(ObexAddr::parse(o.as_str()).is_ok());
    }
    let policy = dmpushd::net::targets::TargetPolicy::new(Vec::new());
    let _ = policy.refused_host(s);
    let _ = dmpushd::net::targets::parse_allow_list(&[s.to_owned()], "fuzz");
});
