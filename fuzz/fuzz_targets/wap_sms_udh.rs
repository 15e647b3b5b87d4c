//! SMS user data header parser: must never panic.
#![no_main]
use dmpushd::codec::sms::parse_user_data;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_user_data(data);
});
