//! SMPP PDU framing, decoding and receipt parsing: must never panic on SMSC bytes.
#![no_main]
use dmpushd::codec::smpp::{Body, Pdu, frame_len, parse_receipt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(n)) = frame_len(data)
        && n <= data.len()
        && let Ok(p) = Pdu::decode(&data[..n])
        && let Body::Sm(sm) = &p.body
    {
        let _ = parse_receipt(sm);
    }
});
