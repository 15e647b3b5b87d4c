//! Package #0 parser: must never panic; whatever parses must rebuild to the same trigger octets.
#![no_main]

use dmpushd::codec::notification;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = notification::parse(data) {
        // Future-use bits are ignored on parse, so compare the re-encoded trigger modulo them.
        let t = notification::encode_trigger(&p.trigger).expect("parsed trigger re-encodes");
        assert_eq!(t.len(), data.len() - 16);
        assert_eq!(&t[5..], &data[21..]);
        let _ = notification::verify(data, &p.trigger.server_id, b"pw", b"nonce");
    }
});
