//! Network policy shared by every component that connects to an address a client gave us
//! (the HTTP binding, the webhook sender).

pub mod targets;
