//! WSP connectionless Push PDU decoder: must never panic; whatever decodes must re-encode to a
//! PDU that decodes to the same value.
#![no_main]
use dmpushd::codec::wsp::PushPdu;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pdu) = PushPdu::decode(data)
        && let Ok(bytes) = pdu.encode()
    {
        assert_eq!(PushPdu::decode(&bytes).ok().as_ref(), Some(&pdu));
    }
});
