//! Composition root: builds the store, bindings, dispatcher and API from [`Settings`], and owns
//! the shutdown order (stop accepting → finish or release in-flight leases → exit).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{self, ApiLimits, ApiState, Tenants},
    binding::{self, BindingContext, Bindings},
    config::Settings,
    metrics::Metrics,
    queue::{Dispatcher, DispatcherConfig, RetryPolicy},
    store::{self, Store},
    webhook::{self, sender::Sender as WebhookSender},
};

pub struct App {
    listener: TcpListener,
    router: axum::Router,
    serve_limits: api::serve::ServeLimits,
    dispatcher: Dispatcher,
    receipts: mpsc::Receiver<binding::Receipt>,
    bindings_shutdown: CancellationToken,
    webhooks: WebhookSender,
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
}

impl App {
    /// Binds the listener and opens everything; nothing runs until [`App::run`].
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        crate::tls::install_provider();
        let mut metrics = Metrics::new()?;
        metrics.protect(settings.server.metrics_token.as_deref());
        let store = store::open(&settings.store).await?;

        let (receipts_tx, receipts) = mpsc::channel(4096);
        let bindings_shutdown = CancellationToken::new();
        let ctx = BindingContext {
            registry: metrics.registry.clone(),
            receipts: receipts_tx,
            shutdown: bindings_shutdown.clone(),
        };
        let mut list = Vec::new();
        list.extend(binding::http::build(&settings.bindings.http, &ctx).await?);
        list.extend(binding::wap::build(&settings.bindings.wap, &ctx).await?);
        list.extend(binding::sip::build(&settings.bindings.sip, &ctx).await?);
        list.extend(binding::obex::build(&settings.bindings.obex, &ctx).await?);
        let bindings = Bindings::new(list);

        let tenants = Arc::new(tenants(&settings));
        let q = &settings.queue;
        let owner = q.replica_id.clone().unwrap_or_else(default_replica_id);
        let dispatcher = Dispatcher::new(
            store.clone(),
            bindings.clone(),
            metrics.clone(),
            DispatcherConfig {
                owner: owner.clone(),
                workers: q.workers,
                claim_batch: q.claim_batch,
                lease: Duration::from_secs(q.lease_seconds),
                poll: Duration::from_millis(q.poll_interval_ms.max(10)),
                retry: RetryPolicy {
                    base: Duration::from_millis(q.backoff_base_ms),
                    max: Duration::from_millis(q.backoff_max_ms.max(q.backoff_base_ms)),
                },
                per_target: q.per_target_concurrency,
                tenant_max_inflight: q.tenant_max_inflight(),
                tenants: tenants.names(),
                grace: Duration::from_secs(settings.server.shutdown_grace_seconds),
                attempt_timeout: Duration::from_secs(300),
                receipt_grace: Duration::from_secs(q.receipt_grace_seconds),
                retention: Duration::from_secs(settings.store.retention_seconds),
                purge_interval: Duration::from_secs(settings.store.purge_interval_seconds),
            },
        );
        // Before the first claim: SQLite takes back every lease an earlier process on the file
        // left (this one holds the file's lock, so that process is gone); PostgreSQL registers
        // this replica. The claims that follow write the takeover events (DESIGN §10.1).
        let taken_back = store.start_replica(&owner, crate::queue::now_ms()).await?;
        if taken_back > 0 {
            tracing::warn!(
                message = "Took back leases left by an earlier process; those pushes resume now and may reach their devices twice.",
                leases = taken_back,
            );
        }
        let targets = Arc::new(webhook_targets(&settings)?);
        let webhooks = WebhookSender::new(
            store.clone(),
            targets.clone(),
            &settings.webhooks,
            owner.clone(),
            &metrics.registry,
        )?
        .yield_to(dispatcher.backlog());
        let state = ApiState {
            store: store.clone(),
            bindings,
            metrics: metrics.clone(),
            tenants,
            limits: ApiLimits {
                max_payload_bytes: settings.server.max_payload_bytes,
                body_limit_bytes: settings.server.body_limit_bytes,
                default_ttl_seconds: q.default_ttl_seconds,
                max_ttl_seconds: q.max_ttl_seconds,
                max_attempts: q.max_attempts,
                list_limit_max: 1000,
            },
            depth_refreshed: Arc::default(),
            depth_refresh_every: Duration::from_secs(settings.server.queue_depth_refresh_seconds),
            webhooks: targets,
            admins: Arc::new(admins(&settings)),
            replica_id: owner.as_str().into(),
            rate: Arc::new(api::ratelimit::RateLimits::new(
                settings
                    .tenants
                    .iter()
                    .filter_map(|t| t.max_pushes_per_second.map(|r| (t.name.clone(), r))),
            )),
        };
        let srv = &settings.server;
        let serve_limits = api::serve::ServeLimits {
            header_timeout: Duration::from_secs(srv.header_timeout_seconds),
            request_timeout: Duration::from_secs(srv.request_timeout_seconds),
            max_connections: srv.max_connections,
            max_inflight_requests: srv.max_inflight_requests,
            grace: Duration::from_secs(srv.shutdown_grace_seconds),
        };
        let router = api::serve::layers(api::router(state), &serve_limits);
        let listener = TcpListener::bind(settings.server.listen).await?;
        tracing::info!(
            message = "dmpushd ready.",
            listen = %listener.local_addr()?,
            store = %redact_url(&settings.store.url),
            replica = %owner,
        );
        Ok(Self {
            listener,
            router,
            serve_limits,
            dispatcher,
            receipts,
            bindings_shutdown,
            webhooks,
            store,
            metrics,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then drains in order and returns.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            listener,
            router,
            serve_limits,
            dispatcher,
            receipts,
            bindings_shutdown,
            webhooks,
            ..
        } = self;
        // Webhooks keep flowing while deliveries drain (their final states send webhooks too).
        let webhooks_stop = CancellationToken::new();
        let webhooks = tokio::spawn(webhooks.run(webhooks_stop.clone()));
        let dispatch_stop = CancellationToken::new();
        let dispatch = tokio::spawn(dispatcher.run(receipts, dispatch_stop.clone()));
        // The server stops accepting on `shutdown` and drains its connections (bounded by the
        // grace) while deliveries drain, so SIGTERM ends within the grace plus a little
        // whatever clients keep open (DESIGN §10.3).
        let server = tokio::spawn(api::serve::serve(
            listener,
            router,
            serve_limits,
            shutdown.clone(),
        ));
        shutdown.cancelled().await;
        tracing::info!(message = "API stopped accepting; draining deliveries.");
        dispatch_stop.cancel();
        let _ = dispatch.await;
        let served = server.await;
        webhooks_stop.cancel();
        let _ = webhooks.await;
        bindings_shutdown.cancel();
        tracing::info!(message = "Shut down cleanly.");
        served.map_err(Into::into)
    }
}

fn tenants(settings: &Settings) -> Tenants {
    let mut t = Tenants::new();
    for tenant in &settings.tenants {
        if let Some(h) = &tenant.token_sha256 {
            t.add_hash(h, &tenant.name);
        }
        if let Some(tok) = &tenant.token {
            t.add_token(tok, &tenant.name);
        }
    }
    if settings.tenants.is_empty() {
        let token = format!("dev-{}", uuid::Uuid::new_v4().simple());
        t.add_token(&token, "dev");
        // Printed once, on purpose: with no [[tenants]] configured this is the only way in.
        tracing::warn!(
            message = "DEVELOPMENT ONLY: no [[tenants]] configured; created tenant \"dev\". Configure tenants with token_sha256 for production.",
            dev_token = %token,
        );
    }
    t
}

/// `[[admins]]` tokens (never a development default: no admins, no admin API).
fn admins(settings: &Settings) -> Tenants {
    let mut t = Tenants::new();
    for a in &settings.admins {
        for h in a.hashes() {
            t.add_hash(&h, &a.name);
        }
    }
    t
}

/// Tenants' webhook targets and secrets (validated with the config).
fn webhook_targets(settings: &Settings) -> anyhow::Result<webhook::Targets> {
    let policy = settings.webhooks.policy().map_err(anyhow::Error::msg)?;
    let mut t = webhook::Targets::new(policy);
    for tenant in &settings.tenants {
        let secret = tenant
            .webhook_secret
            .as_deref()
            .map(webhook::Secret::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("tenants[{}].webhook_secret: {e}", tenant.name))?;
        t.add(
            &tenant.name,
            webhook::TenantWebhook {
                url: tenant.webhook_url.clone(),
                secret,
            },
        );
    }
    Ok(t)
}

fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "dmpushd".to_owned()
    } else {
        host
    };
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A store URL without its password, for logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
