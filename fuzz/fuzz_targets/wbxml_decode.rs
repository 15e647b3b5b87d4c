//! WBXML decoder: must never panic; whatever decodes must serialise to XML that parses and re-encodes.
#![no_main]

use dmpushd::codec::wbxml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = wbxml::decode(data) {
        let xml = wbxml::xml::to_string(&doc);
        let again = wbxml::xml::parse(xml.as_bytes()).expect("decoder output must be readable XML");
        let _ = wbxml::encode(&again);
    }
    // The XML side must not panic either.
    let _ = wbxml::xml_to_wbxml(data);
});
