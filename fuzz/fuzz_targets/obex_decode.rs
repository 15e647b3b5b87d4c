//! OBEX decoders and client session: must never panic on anything a relay sends; whatever
//! decodes must re-encode to a packet that decodes to the same thing.
#![no_main]

use dmpushd::codec::obex::{
    self, Action, ClientSession, PutRequest, decode_request, decode_response,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = obex::frame_len(data);
    let _ = obex::parse_challenge(data, 0);
    let _ = obex::parse_auth_response(data, 0);
    for p in [
        decode_request(data),
        decode_response(data, true),
        decode_response(data, false),
    ]
    .into_iter()
    .flatten()
    {
        if let Ok(wire) = p.encode() {
            let again = if p.connect.is_some() {
                decode_response(&wire, true)
            } else {
                decode_response(&wire, false)
            };
            assert_eq!(again.as_ref(), Ok(&p));
        }
    }
    // Drive a session with the input cut into packets by their own length fields.
    let mut s = ClientSession::new(PutRequest {
        target: obex::TARGET_SYNCML_DM.to_vec(),
        name: Some("dm.wbxml".into()),
        mime_type: "application/vnd.syncml.dm+wbxml".into(),
        body: vec![0x5A; 700],
        max_rx: 1024,
        password: Some(b"pw".to_vec()),
        user_id: None,
    });
    let _ = s.start();
    let mut rest = data;
    while let Ok(Some(n)) = obex::frame_len(rest) {
        let Some(pkt) = rest.get(..n) else { break };
        match s.on_response(pkt) {
            Ok(Action::Send(_)) => {}
            Ok(Action::Done(_)) | Err(_) => break,
        }
        rest = &rest[n..];
    }
});
