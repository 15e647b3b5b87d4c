//! WAP push binding (DM-PUSH-S-002): a WSP connectionless Push PDU carried by WDP over SMS
//! (through SMPP 3.4 SMSC accounts) or over UDP.
//!
//! Anatomy: config ([`WapConfig`]) → encode ([`encode_units`]: WSP PDU, then SMS segments with
//! UDH or one UDP datagram) → transport (SMPP session tasks in [`session`], or a UDP socket) →
//! [`Outcome`]. Delivery receipts from the SMSCs go to `BindingContext::receipts` with the same
//! canonical reference as the `refs` of [`Outcome::Accepted`]: a `NextHopRef` of the SMSC's
//! `name` (the account) and the normalised message id.
//!
//! Layout: [`config`] (settings), [`plan`](mod@plan) (pure planning shared by delivery, preview and
//! `encode`), `deliver` (SMPP / UDP delivery and outcome mapping), [`session`] (SMPP session
//! tasks), [`metrics`]; this file builds the binding and implements [`Binding`] on it.

pub mod config;
mod deliver;
pub mod metrics;
pub mod plan;
pub mod session;

pub use config::{AmbiguousPolicy, AppIdForm, WapConfig};
pub use plan::{
    EncodeError, Plan, compile_xml, encode_units, plan, preview_ids, route, submit_sm, validity,
    wsp_pdu,
};
pub use session::{PortAddressing, SegResult, SmscConfig, ValidityMode};

use std::{
    sync::{Arc, atomic::AtomicU16},
    time::Duration,
};

use anyhow::Context as _;
use futures_util::{FutureExt, future::BoxFuture};
use tokio::net::UdpSocket;

use super::{
    Binding, BindingContext, BindingKind, CannotCarry, ContentType, Delivery, DeviceBinding,
    NotReady, Outcome, Preview, RefusedTarget, Signature, WapBearer,
};
use crate::net::targets::{TargetPolicy, TargetRefused, parse_allow_list};

/// The config section named in refusals.
const SECTION: &str = "bindings.wap";

/// The binding.
pub struct WapBinding {
    cfg: WapConfig,
    smscs: Vec<session::SmscHandle>,
    metrics: metrics::SmppMetrics,
    udp: Option<UdpSocket>,
    /// The IPv6 socket for IPv6 UDP targets (`udp_bind`'s port on `[::]`, or on the address
    /// itself when `udp_bind` is IPv6); `None` when the host has no IPv6.
    udp6: Option<UdpSocket>,
    policy: TargetPolicy,
    counter: AtomicU16,
}

impl Binding for WapBinding {
    fn kind(&self) -> BindingKind {
        BindingKind::Wap
    }

    fn preview(
        &self,
        target: &DeviceBinding,
        content_type: ContentType,
        body: &[u8],
    ) -> Result<Preview, CannotCarry> {
        self.preview_bootstrap(target, content_type, body, None)
    }

    fn check(
        &self,
        target: &DeviceBinding,
        content_type: ContentType,
        body: &[u8],
    ) -> Result<(), CannotCarry> {
        self.check_bootstrap(target, content_type, body, None)
    }

    fn carries_bootstrap(&self) -> bool {
        true
    }

    /// The submit-time check: the plan a delivery makes (so the same refusals: no route, too
    /// many segments, secure push, no address), without the preview's per-unit copies, hex and
    /// summary. TID and concatenation reference change octets, not sizes, so any will do.
    fn check_bootstrap(
        &self,
        target: &DeviceBinding,
        content_type: ContentType,
        body: &[u8],
        bootstrap: Option<&Signature>,
    ) -> Result<(), CannotCarry> {
        plan(&self.cfg, target, content_type, body, bootstrap, 0, 0)
            .map(|_| ())
            .map_err(CannotCarry::from)
    }

    fn preview_bootstrap(
        &self,
        target: &DeviceBinding,
        content_type: ContentType,
        body: &[u8],
        bootstrap: Option<&Signature>,
    ) -> Result<Preview, CannotCarry> {
        let units = encode_units(&self.cfg, target, content_type, body, bootstrap)?;
        let summary = match target {
            DeviceBinding::Wap {
                bearer: WapBearer::Udp,
                ..
            } => format!("1 UDP datagram ({} octets)", units[0].len()),
            _ => format!(
                "{} SMS segment{}",
                units.len(),
                if units.len() == 1 { "" } else { "s" }
            ),
        };
        let summary = match bootstrap {
            // SEC names the method; the MAC is on the wire (units_hex) and nowhere else.
            Some(b) => format!("{summary}; bootstrap SEC={} with MAC", b.sec.name()),
            None => summary,
        };
        Ok(Preview {
            summary,
            units_hex: units.iter().map(hex::encode).collect(),
        })
    }

    fn refused_target(&self, target: &DeviceBinding) -> Option<RefusedTarget> {
        // The address is checked whatever the bearer: it is kept, and a later bearer change
        // would use it.
        let DeviceBinding::Wap {
            address: Some(a), ..
        } = target
        else {
            return None;
        };
        (!self.policy.permits(a.ip())).then(|| RefusedTarget {
            field: "address",
            reason: TargetRefused::literal(a.ip(), SECTION).to_string(),
        })
    }

    fn deliver(&self, delivery: Delivery) -> BoxFuture<'_, Outcome> {
        self.deliver_one(delivery).boxed()
    }

    fn status(&self) -> serde_json::Value {
        let smscs: Vec<serde_json::Value> = self
            .smscs
            .iter()
            .map(|h| {
                let name = h.cfg.name.as_str();
                let m = &self.metrics;
                serde_json::json!({
                    "name": name,
                    "bound": h.is_bound(),
                    "suspended": h.is_suspended(),
                    "binds": m.binds.with_label_values(&[name, "up"]).get(),
                    "window": h.cfg.window,
                    "window_in_use": m.in_flight.with_label_values(&[name]).get(),
                    // Submits waiting for a window slot in the session's queue.
                    "queued_submits": h.tx.max_capacity() - h.tx.capacity(),
                    "throughput_limit_per_second": h.cfg.throughput,
                    "submits_ok": m.submits.with_label_values(&[name, crate::codec::smpp::status_name(0)]).get(),
                    "throttled": m.throttled.with_label_values(&[name]).get(),
                    "ambiguous": m.ambiguous.with_label_values(&[name]).get(),
                    "last_error": h.last_error().map(|(at, message)| serde_json::json!({
                        "at": crate::api::rfc3339(at),
                        "message": message,
                    })),
                })
            })
            .collect();
        serde_json::json!({ "smscs": smscs })
    }

    fn set_suspended(&self, name: &str, suspended: bool) -> Option<()> {
        let h = self.smscs.iter().find(|h| h.cfg.name == name)?;
        h.suspended
            .store(suspended, std::sync::atomic::Ordering::Release);
        tracing::warn!(smsc = %name, suspended, "SMSC suspension changed by an operator");
        Some(())
    }

    fn ready(&self) -> Result<(), NotReady> {
        if self.smscs.is_empty() || self.smscs.iter().any(|h| h.is_bound()) {
            Ok(())
        } else {
            Err(NotReady(format!(
                "no SMSC bound ({})",
                self.smscs
                    .iter()
                    .map(|h| h.cfg.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}

/// Builds the binding, or `None` when it is not configured.
pub async fn build(
    cfg: &WapConfig,
    ctx: &BindingContext,
) -> anyhow::Result<Option<Arc<dyn Binding>>> {
    Ok(build_wap(cfg, ctx).await?.map(|b| b as Arc<dyn Binding>))
}

/// Same as [`build`], typed (tests and tools use it).
pub async fn build_wap(
    cfg: &WapConfig,
    ctx: &BindingContext,
) -> anyhow::Result<Option<Arc<WapBinding>>> {
    if !cfg.enabled {
        return Ok(None);
    }
    anyhow::ensure!(
        (1..=255).contains(&cfg.max_segments),
        "bindings.wap.max_segments must be 1..=255"
    );
    let mut names = std::collections::HashSet::new();
    for s in &cfg.smsc {
        anyhow::ensure!(
            names.insert(s.name.clone()) && !s.name.is_empty() && !s.name.contains(':'),
            "bindings.wap.smsc names must be unique, non-empty and without ':' ({:?})",
            s.name
        );
        anyhow::ensure!(
            s.window >= 1,
            "bindings.wap.smsc {:?}: window must be ≥ 1",
            s.name
        );
    }
    let metrics = metrics::SmppMetrics::register(&ctx.registry)
        .context("registering dmpushd_smpp_* metrics")?;
    let policy = TargetPolicy::new(
        parse_allow_list(&cfg.allow_targets, SECTION).map_err(anyhow::Error::msg)?,
    );
    let (udp, udp6) = if cfg.udp_bind.is_ipv6() {
        let s = UdpSocket::bind(cfg.udp_bind)
            .await
            .with_context(|| format!("binding the UDP bearer socket on {}", cfg.udp_bind))?;
        (None, Some(s))
    } else {
        let s = UdpSocket::bind(cfg.udp_bind)
            .await
            .with_context(|| format!("binding the UDP bearer socket on {}", cfg.udp_bind))?;
        // IPv6 targets need an IPv6 socket: the same port on `[::]` when it is free (a
        // dual-stack socket may collide with the IPv4 one), else any port; a host without IPv6
        // fails IPv6 targets permanently at send time.
        let any6 = std::net::Ipv6Addr::UNSPECIFIED;
        let v6 = match UdpSocket::bind((any6, cfg.udp_bind.port())).await {
            Ok(s) => Some(s),
            Err(_) => match UdpSocket::bind((any6, 0)).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::info!(error = %e, "no IPv6 UDP bearer socket; IPv6 UDP targets will fail");
                    None
                }
            },
        };
        (Some(s), v6)
    };
    // TLS settings are checked before any session starts.
    let tls = cfg
        .smsc
        .iter()
        .map(session::tls_client)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let smscs = cfg
        .smsc
        .iter()
        .zip(tls)
        .map(|(s, tls)| {
            session::spawn(
                s.clone(),
                tls,
                metrics.clone(),
                ctx.receipts.clone(),
                Duration::from_secs(cfg.receipt_hold_seconds),
                ctx.shutdown.clone(),
            )
        })
        .collect();
    Ok(Some(Arc::new(WapBinding {
        cfg: cfg.clone(),
        smscs,
        metrics,
        udp,
        udp6,
        policy,
        counter: AtomicU16::new(rand::random()),
    })))
}
