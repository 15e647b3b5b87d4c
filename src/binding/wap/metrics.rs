//! `dmpushd_smpp_*` metrics of the WAP binding's SMPP sessions.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct SmppMetrics {
    /// 1 while the session to an SMSC is bound.
    pub bound: IntGaugeVec,
    /// Bind transitions by `event` = `up` | `down`.
    pub binds: IntCounterVec,
    /// submit_sm sent and not yet answered.
    pub in_flight: IntGaugeVec,
    pub submit_latency: HistogramVec,
    /// ESME_RTHROTTLED / ESME_RMSGQFUL answers.
    pub throttled: IntCounterVec,
    /// Delivery receipts by `state` (DELIVRD, UNDELIV, …).
    pub receipts: IntCounterVec,
    /// submit_sm whose fate is unknown (no response, connection lost).
    pub ambiguous: IntCounterVec,
    /// submit_sm_resp by status name.
    pub submits: IntCounterVec,
}

impl SmppMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            bound: IntGaugeVec::new(
                Opts::new("dmpushd_smpp_bound", "1 while the SMPP session is bound"),
                &["smsc"],
            )?,
            binds: IntCounterVec::new(
                Opts::new("dmpushd_smpp_binds_total", "SMPP bind transitions"),
                &["smsc", "event"],
            )?,
            in_flight: IntGaugeVec::new(
                Opts::new(
                    "dmpushd_smpp_window_in_flight",
                    "submit_sm awaiting submit_sm_resp",
                ),
                &["smsc"],
            )?,
            submit_latency: HistogramVec::new(
                HistogramOpts::new(
                    "dmpushd_smpp_submit_latency_seconds",
                    "submit_sm to submit_sm_resp",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ]),
                &["smsc"],
            )?,
            throttled: IntCounterVec::new(
                Opts::new(
                    "dmpushd_smpp_throttled_total",
                    "ESME_RTHROTTLED / ESME_RMSGQFUL answers",
                ),
                &["smsc"],
            )?,
            receipts: IntCounterVec::new(
                Opts::new("dmpushd_smpp_receipts_total", "delivery receipts received"),
                &["smsc", "state"],
            )?,
            ambiguous: IntCounterVec::new(
                Opts::new(
                    "dmpushd_smpp_ambiguous_submits_total",
                    "submit_sm with no response (connection lost or timeout)",
                ),
                &["smsc"],
            )?,
            submits: IntCounterVec::new(
                Opts::new("dmpushd_smpp_submits_total", "submit_sm_resp by status"),
                &["smsc", "status"],
            )?,
        };
        registry.register(Box::new(m.bound.clone()))?;
        registry.register(Box::new(m.binds.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.submit_latency.clone()))?;
        registry.register(Box::new(m.throttled.clone()))?;
        registry.register(Box::new(m.receipts.clone()))?;
        registry.register(Box::new(m.ambiguous.clone()))?;
        registry.register(Box::new(m.submits.clone()))?;
        Ok(m)
    }
}
