//! Fuzz target: the SIP response parser and stream framer (src/codec/sip/message.rs) and the
//! digest challenge parser must never panic on peer-controlled bytes.
//! Needs in fuzz/Cargo.toml:
//! [[bin]]
//! name = "sip_response"
//! path = "fuzz_targets/sip_response.rs"
//! test = false
//! doc = false
//! bench = false
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dmpushd::codec::sip::message::parse_response(data);
    let _ = dmpushd::codec::sip::message::frame_stream(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = dmpushd::codec::sip::auth::parse_challenge(s);
        let _ = dmpushd::codec::sip::SipUri::parse(s);
    }
});
