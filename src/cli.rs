//! Command line (DESIGN §5): `serve`, `migrate`, `check-config`, `encode`, `sim`, `demo`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// OMA Device Management push gateway.
#[derive(Debug, Parser)]
#[command(name = "dmpushd", version, about)]
pub struct Cli {
    /// Configuration file (TOML). Default `config/dmpushd.toml` if it exists; every key can be
    /// overridden by `DMPUSHD__SECTION__KEY` environment variables.
    #[arg(long, short, global = true, env = "DMPUSHD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: REST API, dispatcher and bindings.
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Load and validate the configuration, print it (secrets redacted) and exit.
    CheckConfig,
    /// Show the exact bytes a push would produce (WBXML, package #0, …), or decode them.
    Encode(Box<crate::tool::encode::EncodeArgs>),
    /// Run a simulated SMSC (SMPP server) and simulated devices (SMS, UDP, HTTP) that apply the
    /// DM client rules and print what they decode, one JSON line per event.
    Sim(Box<crate::sim::SimArgs>),
    /// Run the gateway and the simulator together: register a device, push, show what it decoded.
    Demo(crate::sim::DemoArgs),
}

pub const DEFAULT_CONFIG: &str = "config/dmpushd.toml";

impl Cli {
    /// The file to load and whether it must exist (an explicitly named one must).
    pub fn config_file(&self) -> (PathBuf, bool) {
        match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        }
    }
}
