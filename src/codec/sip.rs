//! SIP for Push OTA over SIP (OMA-TS-DM_PushBinding §5.2, DM-PUSH-S-004): the sans-IO half of an
//! out-of-dialog MESSAGE user agent client (RFC 3428 "pager mode").
//!
//! * [`message`] — URIs, the MESSAGE request builder, the response parser (compact header forms,
//!   `Content-Length` framing for datagrams and streams);
//! * [`auth`] — HTTP Digest (RFC 2617 / RFC 3261 §22.4) challenge parsing and response computation;
//! * [`transaction`] — the non-INVITE client transaction of RFC 3261 §17.1.2 as a state machine
//!   driven by events and by time given as a parameter.
//!
//! No I/O, no clock, no environment: the binding (`binding::sip`) owns sockets and time.

pub mod auth;
pub mod message;
pub mod transaction;

pub use auth::{AuthError, Challenge};
pub use message::{ParseError, Response, SipUri, Transport};
pub use transaction::{Action, NonInviteClient, State, Timers};
