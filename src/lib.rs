//! dmpushd — an OMA Device Management push gateway.
//!
//! Data flows one way: API → queue (store) → dispatcher → binding → transport, with outcomes
//! flowing back into the queue. See `docs/ARCHITECTURE.md`.

pub mod api;
pub mod app;
pub mod binding;
pub mod cli;
pub mod codec;
pub mod config;
pub mod domain;
pub mod metrics;
pub mod net;
pub mod queue;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tool;
pub mod webhook;
