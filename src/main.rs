use std::process::ExitCode;

use clap::Parser;
use dmpushd::{
    app::App,
    cli::{Cli, Command},
    config::Settings,
    store, telemetry,
};
use tokio_util::sync::CancellationToken;

// mimalloc instead of glibc malloc: glibc's allocator was ~14 % of the gateway's CPU on the accept
// path (docs/perf/accept.md), with many short-lived per-request allocations across threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Encode(args) = &cli.command {
        // Offline tool: no configuration, no runtime.
        return match dmpushd::tool::encode::run(args) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dmpushd encode: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let (file, required) = cli.config_file();
    let settings = match Settings::load(Some(&file), required) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dmpushd: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dmpushd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(message = "Fatal error.", error = %format!("{e:#}"));
            eprintln!("dmpushd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Encode(_) => Ok(()),
        Command::CheckConfig => {
            let mut shown = serde_json::to_value(&settings)?;
            redact(&mut shown);
            if let Some(url) = shown.pointer_mut("/store/url") {
                *url =
                    serde_json::Value::String(dmpushd::app::redact_url(url.as_str().unwrap_or("")));
            }
            println!("{}", serde_json::to_string_pretty(&shown)?);
            println!("# configuration OK");
            Ok(())
        }
        Command::Migrate => {
            telemetry::init(&settings.log);
            store::migrate(&settings.store).await?;
            println!(
                "migrations applied to {}",
                dmpushd::app::redact_url(&settings.store.url)
            );
            Ok(())
        }
        Command::Sim(args) => {
            // No tracing subscriber: stdout carries the simulator's JSON event lines only.
            let shutdown = CancellationToken::new();
            tokio::spawn(signal(shutdown.clone()));
            dmpushd::sim::run(&args, shutdown).await
        }
        Command::Demo(args) => dmpushd::sim::demo(&args).await,
        Command::Serve => {
            telemetry::init(&settings.log);
            let app = App::build(settings).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(signal(shutdown.clone()));
            app.run(shutdown).await
        }
    }
}

/// Replaces every secret-looking value (passwords, clear-text tokens) before printing.
fn redact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                let secret = k.contains("password") || k.ends_with("token") || k.contains("secret");
                if secret && !val.is_null() {
                    *val = serde_json::Value::String("<redacted>".into());
                } else {
                    redact(val);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// SIGTERM or SIGINT → graceful shutdown.
async fn signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!(message = "Shutdown signal received.");
    token.cancel();
}
