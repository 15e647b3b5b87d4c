//! `/v1/pushes`: submit (single, batch, raw), preview, read, list, cancel.
//!
//! * [`dto`] — request and response types (the OpenAPI schemas);
//! * [`submission`] — request → new push: validation and preparation, callable without axum;
//! * `handlers` — the axum handlers (routes and OpenAPI paths).

pub mod dto;
mod handlers;
pub mod submission;

// Globs: `#[utoipa::path]` generates a `__path_<handler>` type next to each handler, which
// `api::openapi` finds through the same path as the handler.
pub use dto::*;
pub use handlers::*;
