//! The one integration-test crate of dmpushd.
//!
//! Every file here used to be its own test binary under `tests/`; each linked the whole crate
//! graph again (one link step and a few hundred megabytes per file). As modules of one crate they
//! link once, and they share one helper home, `support/`, instead of four copied by `#[path]`.
//!
//! Tests keep their area in their path: `api_http::…`, `wap_smpp_faults::…`,
//! `store_conformance::pg::…`. Run one area with `cargo nextest run -E 'test(/^wap_smpp_faults::/)'`
//! (or `cargo test --test it wap_smpp_faults::`). nextest runs every test in its own process, so
//! process-wide state (environment, tracing subscriber, prometheus default registry) is not
//! shared between tests; `scripts/test.sh` uses nextest for that reason.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic on failure

mod support;

// Readiness and the admin API, and deploy/ against a real Prometheus (issue 13).
mod admin;
mod deploy;

// The REST API end to end, one module per binding behind it.
mod api_bootstrap;
mod api_http;
mod api_limits;
mod api_sip;
mod api_wap;

// The binary: configuration contract, crash safety, several replicas.
mod cli;
mod config_reference;
mod crash;
mod openapi_contract;
mod recovery;
mod replicas;

// Codecs against goldens, properties and independent implementations.
mod codec_encode_tool;
mod codec_golden;
mod codec_proptest;
mod codec_wbxml_interop;

// OBEX binding.
mod obex_peer;
mod obex_server;

// Device simulator.
mod sim_cli;
mod sim_devices;

// SIP binding.
mod sip_sipp;
mod sip_tls;
mod sip_tshark;
mod sip_uas_misbehave;

// The tenant boundary: allow_targets on every outbound path.
mod tenant_secrets;
mod tenant_targets;

// Push outcomes end to end: unconfirmed, receipt correlation, fallback on a failed receipt.
mod outcomes;

// Per-tenant fairness in the dispatcher; bounded label sets and buffers (issue 12).
mod bounded;
mod fairness;

// Store.
mod store_conformance;
mod store_postgres;
mod store_replicas;

// Webhooks (issue 11).
mod webhooks;

// WAP binding.
mod wap_check;
mod wap_smpp_faults;
mod wap_smpp_sim;
mod wap_tshark;
