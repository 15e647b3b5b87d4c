//! Sans-IO protocol codecs (DESIGN §3 invariant): no I/O, no clock, no environment, and no imports
//! from tokio, sqlx, axum or reqwest. Time, when needed, is a parameter.

pub mod bootstrap;
pub mod hmac;
pub mod notification;
pub mod obex;
pub mod sip;
pub mod smpp;
pub mod sms;
pub mod wbxml;
pub mod wsp;
