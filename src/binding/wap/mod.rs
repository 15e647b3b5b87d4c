//! WAP push binding (DM-PUSH-S-002): a WSP connectionless Push PDU carried by WDP over SMS
//! (through SMPP 3.4 SMSC accounts) or over UDP.
//!
//! Anatomy: config ([`WapConfig`]) → encode ([`encode_units`]: WSP PDU, then SMS segments with
//! UDH or one UDP datagram) → transport (SMPP session tasks in [`session`], or a UDP socket) →
//! [`Outcome`]. Delivery receipts from the SMSCs go to `BindingContext::receipts` with the same
//! canonical reference as the `refs` of [`Outcome::Accepted`]: `"<smsc name>:<message id>"`.

pub mod metrics;
pub mod session;

use crate::binding::{CannotCarry, NotReady};
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU16, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use futures_util::{FutureExt, future::BoxFuture};
use serde::{Deserialize, Serialize};
use tokio::{net::UdpSocket, sync::oneshot, time::timeout};

pub use session::{PortAddressing, SegResult, SmscConfig, ValidityMode};

use super::{
    Binding, BindingContext, BindingKind, ContentType, Delivery, DeviceBinding, Outcome, Preview,
    WapBearer,
};
use crate::codec::{
    smpp::{self, tag},
    sms::{self, RefWidth},
    wsp::{self, AppId, ContentTypeValue, Header, PushPdu},
};

/// X-Wap-Application-Id form (protocol-facts §A.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppIdForm {
    /// Short integer `0x87` (2 octets; the normal form).
    #[default]
    Code,
    /// `x-wap-application:syncml.dm` as text (29 octets), for handsets that need it.
    Text,
}

/// What to do when a submit_sm was sent but its fate is unknown (no resp, connection lost).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AmbiguousPolicy {
    /// Outcome::Transient with a reason starting "ambiguous": the queue retries (a duplicate
    /// SMS is possible, a lost push is not).
    #[default]
    Resend,
    /// Outcome::Permanent: never risk a duplicate.
    Fail,
}

/// `[bindings.wap]` settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WapConfig {
    /// The binding exists only when enabled (default: on; the UDP bearer needs no SMSC).
    pub enabled: bool,
    /// Maximum SMS per push; beyond it `preview` fails and `deliver` answers Unsupported.
    pub max_segments: usize,
    /// Concatenation reference width: "8" (default) or "16".
    pub concat_ref: RefWidth,
    /// Compile XML payloads to WBXML before segmentation (see [`compile_xml`]).
    pub compile_xml: bool,
    pub app_id: AppIdForm,
    /// Handset-profile extras in the WSP headers.
    pub content_length_header: bool,
    /// e.g. "1.3" → `Encoding-Version: 1.3` (`C3 93`), as Kannel adds.
    pub encoding_version: Option<String>,
    pub initiator_uri: Option<String>,
    /// Push-Flag bit mask (protocol-facts §A.6).
    pub push_flag: Option<u8>,
    /// Local address of the UDP bearer's socket, e.g. "0.0.0.0:9200" (source port 9200).
    pub udp_bind: SocketAddr,
    /// Destination port when a UDP binding address has none.
    pub udp_default_port: u16,
    pub ambiguous: AmbiguousPolicy,
    /// Upper bound on one `deliver` call (queueing for the window + all submit_sm_resp).
    pub deliver_timeout_ms: u64,
    pub smsc: Vec<SmscConfig>,
}

impl Default for WapConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_segments: 10,
            concat_ref: RefWidth::Eight,
            compile_xml: true,
            app_id: AppIdForm::Code,
            content_length_header: false,
            encoding_version: None,
            initiator_uri: None,
            push_flag: None,
            udp_bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            udp_default_port: sms::PORT_WAP_PUSH,
            ambiguous: AmbiguousPolicy::Resend,
            deliver_timeout_ms: 90_000,
            smsc: Vec::new(),
        }
    }
}

/// Why a payload cannot be encoded for a target (pure; no I/O).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EncodeError {
    #[error(
        "secure connectionless push (WTLS, port 2949) is not supported: it needs a WTLS session \
         and no WTLS stack is available (docs/decisions/wap.md)"
    )]
    SecureRefused,
    #[error("not a wap binding")]
    WrongBinding,
    #[error("wap binding with bearer sms has no msisdn")]
    NoMsisdn,
    #[error("wap binding with bearer udp has no address (ip:port or ip)")]
    NoAddress,
    #[error("no SMSC is configured for msisdn prefix of {0}")]
    NoRoute(String),
    #[error("{0}")]
    Segments(#[from] sms::SmsError),
    #[error("WSP encoding failed: {0}")]
    Wsp(#[from] wsp::WspError),
    #[error("invalid [bindings.wap] setting: {0}")]
    Config(String),
}

impl EncodeError {
    /// Whether the payload is the problem for this binding (→ Unsupported, `auto` falls back).
    fn unsupported(&self) -> bool {
        matches!(
            self,
            Self::SecureRefused | Self::Segments(sms::SmsError::TooManySegments { .. })
        )
    }
}

/// XML → WBXML compile step applied to `application/vnd.syncml.dm+xml` when `compile_xml` is on.
///
/// Returns `None` when no compiler is available in this build: the payload then goes as XML
/// (content type 0xC3).
/// XML → WBXML for the SMS bearer (fewer segments; `bindings.wap.compile_xml`). `None` would mean
/// "no compiler available"; the WBXML codec covers SyncML DM 1.1/1.2, MetInf, DevInf and DM DDF.
pub fn compile_xml(xml: &[u8]) -> Option<Result<Vec<u8>, String>> {
    Some(crate::codec::wbxml::xml_to_wbxml(xml).map_err(|e| e.to_string()))
}

/// A fully encoded push for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Sms {
        /// Index into `WapConfig::smsc` of the preferred route.
        smsc: usize,
        /// Other SMSCs that route this MSISDN, in order of preference.
        alternatives: Vec<usize>,
        dest_addr: String,
        datagram: Vec<u8>,
        segments: Vec<sms::Segment>,
    },
    Udp {
        addr: SocketAddr,
        datagram: Vec<u8>,
    },
}

impl Plan {
    /// Exactly what goes on the wire per unit: SMPP short_message (UDH + payload, or payload
    /// only with TLV port addressing), or the UDP datagram.
    pub fn units(&self, cfg: &WapConfig) -> Vec<Vec<u8>> {
        match self {
            Plan::Udp { datagram, .. } => vec![datagram.clone()],
            Plan::Sms { smsc, segments, .. } => {
                let tlv = cfg
                    .smsc
                    .get(*smsc)
                    .is_some_and(|s| s.port_addressing == PortAddressing::Tlv);
                segments
                    .iter()
                    .map(|s| {
                        if tlv {
                            s.payload.clone()
                        } else {
                            s.user_data()
                        }
                    })
                    .collect()
            }
        }
    }
}

/// The WSP Push PDU for a payload (content type and headers per config).
pub fn wsp_pdu(
    cfg: &WapConfig,
    content_type: ContentType,
    body: &[u8],
    tid: u8,
) -> Result<Vec<u8>, EncodeError> {
    let (code, body) = match content_type {
        ContentType::Notification => (wsp::content_code::NOTIFICATION, body.to_vec()),
        ContentType::DmWbxml => (wsp::content_code::DM_WBXML, body.to_vec()),
        ContentType::DmXml => match cfg.compile_xml.then(|| compile_xml(body)).flatten() {
            Some(Ok(wbxml)) => (wsp::content_code::DM_WBXML, wbxml),
            // XML the WBXML tables cannot express (no known vocabulary) still goes out, as
            // dm+xml (0x43 is a valid DM push content type, seed §5.1.1): a bigger SMS beats none.
            Some(Err(_)) | None => (wsp::content_code::DM_XML, body.to_vec()),
        },
    };
    let app = match cfg.app_id {
        AppIdForm::Code => AppId::Code(wsp::APP_ID_SYNCML_DM),
        AppIdForm::Text => AppId::Uri(wsp::APP_ID_SYNCML_DM_TEXT.into()),
    };
    let mut pdu = PushPdu::new(tid, ContentTypeValue::well_known(code), app, body);
    if cfg.content_length_header {
        let n = u32::try_from(pdu.body.len()).map_err(|_| EncodeError::Config("body".into()))?;
        pdu.headers.push(Header::ContentLength(n));
    }
    if let Some(v) = &cfg.encoding_version {
        let (maj, min) = v
            .split_once('.')
            .and_then(|(a, b)| Some((a.parse::<u8>().ok()?, b.parse::<u8>().ok()?)))
            .ok_or_else(|| EncodeError::Config(format!("encoding_version {v:?}")))?;
        pdu.headers.push(Header::EncodingVersion(maj, min));
    }
    if let Some(u) = &cfg.initiator_uri {
        pdu.headers.push(Header::InitiatorUri(u.clone()));
    }
    if let Some(f) = cfg.push_flag {
        pdu.headers.push(Header::PushFlag(f));
    }
    Ok(pdu.encode()?)
}

/// SMSCs that route `digits`, best (longest prefix) first; default routes (no prefixes) last.
pub fn route(cfg: &WapConfig, digits: &str) -> Vec<usize> {
    let mut c: Vec<(usize, usize)> = cfg
        .smsc
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            if s.routes.is_empty() {
                return Some((i, 0));
            }
            s.routes
                .iter()
                .map(|p| p.trim_start_matches('+'))
                .filter(|p| digits.starts_with(p))
                .map(|p| p.len() + 1)
                .max()
                .map(|l| (i, l))
        })
        .collect();
    c.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    c.into_iter().map(|(i, _)| i).collect()
}

impl From<EncodeError> for CannotCarry {
    fn from(e: EncodeError) -> Self {
        match e {
            EncodeError::WrongBinding => Self::WrongTarget(BindingKind::Wap),
            e if e.unsupported() => Self::Payload(e.to_string()),
            e => Self::Target(e.to_string()),
        }
    }
}

/// Encodes a push for a target with explicit TID and concatenation reference (pure).
pub fn plan(
    cfg: &WapConfig,
    target: &DeviceBinding,
    content_type: ContentType,
    body: &[u8],
    tid: u8,
    reference: u16,
) -> Result<Plan, EncodeError> {
    let DeviceBinding::Wap {
        msisdn,
        bearer,
        address,
        secure,
    } = target
    else {
        return Err(EncodeError::WrongBinding);
    };
    if *secure {
        return Err(EncodeError::SecureRefused);
    }
    let datagram = wsp_pdu(cfg, content_type, body, tid)?;
    match bearer {
        WapBearer::Udp => {
            let addr = address
                .as_ref()
                .ok_or(EncodeError::NoAddress)?
                .socket_addr(cfg.udp_default_port);
            Ok(Plan::Udp { addr, datagram })
        }
        WapBearer::Sms => {
            let m = msisdn.as_ref().ok_or(EncodeError::NoMsisdn)?;
            let digits = m.digits().to_owned();
            let routes = route(cfg, &digits);
            let (&smsc, rest) = routes
                .split_first()
                .ok_or_else(|| EncodeError::NoRoute(m.to_string()))?;
            let segments = sms::segment(
                &datagram,
                &sms::SegmentOptions {
                    dest_port: sms::PORT_WAP_PUSH,
                    src_port: sms::PORT_WSP,
                    ref_width: cfg.concat_ref,
                    reference,
                    max_segments: cfg.max_segments,
                },
            )?;
            Ok(Plan::Sms {
                smsc,
                alternatives: rest.to_vec(),
                dest_addr: digits,
                datagram,
                segments,
            })
        }
    }
}

/// Pure helper for `/v1/pushes/preview` and `dmpushd encode`: the exact SMS user data (one per
/// segment) or UDP datagram. TID and concatenation reference are derived from the body so the
/// answer is deterministic; real deliveries use a counter.
pub fn encode_units(
    cfg: &WapConfig,
    target: &DeviceBinding,
    content_type: ContentType,
    body: &[u8],
) -> Result<Vec<Vec<u8>>, EncodeError> {
    // FNV-1a: a stable, cheap spread of the body into the reference space.
    let h = body.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    });
    let p = plan(cfg, target, content_type, body, h as u8, (h >> 8) as u16)?;
    Ok(p.units(cfg))
}

/// The binding.
pub struct WapBinding {
    cfg: WapConfig,
    smscs: Vec<session::SmscHandle>,
    udp: Option<UdpSocket>,
    counter: AtomicU16,
}

impl WapBinding {
    fn submit_sm(
        &self,
        s: &SmscConfig,
        dest: &str,
        seg: &sms::Segment,
        reference: u16,
        validity: String,
    ) -> smpp::Sm {
        let tlv = s.port_addressing == PortAddressing::Tlv;
        let mut sm = smpp::Sm {
            service_type: s.service_type.clone(),
            source_ton: s.source_ton,
            source_npi: s.source_npi,
            source_addr: s.source_addr.clone(),
            dest_ton: s.dest_ton,
            dest_npi: s.dest_npi,
            dest_addr: dest.to_owned(),
            // UDHI (SMPP 3.4 §5.2.12) unless the SMSC builds the UDH from TLVs.
            esm_class: (s.messaging_mode & 0x03) | if tlv { 0 } else { smpp::ESM_UDHI },
            validity_period: validity,
            registered_delivery: s.registered_delivery,
            data_coding: s.data_coding,
            short_message: if tlv {
                seg.payload.clone()
            } else {
                seg.user_data()
            },
            ..Default::default()
        };
        if tlv {
            sm.tlvs.push(smpp::tlv_u16(tag::SOURCE_PORT, sms::PORT_WSP));
            sm.tlvs
                .push(smpp::tlv_u16(tag::DESTINATION_PORT, sms::PORT_WAP_PUSH));
            if seg.total > 1 {
                sm.tlvs.push(smpp::tlv_u16(tag::SAR_MSG_REF_NUM, reference));
                sm.tlvs
                    .push(smpp::tlv_u8(tag::SAR_TOTAL_SEGMENTS, seg.total));
                sm.tlvs.push(smpp::tlv_u8(tag::SAR_SEGMENT_SEQNUM, seg.seq));
            }
        }
        sm
    }

    async fn deliver_sms(
        &self,
        d: &Delivery,
        smsc: usize,
        alternatives: &[usize],
        dest: &str,
        segments: &[sms::Segment],
        reference: u16,
    ) -> Outcome {
        // Prefer a bound SMSC among those that route this MSISDN.
        let Some(idx) = std::iter::once(smsc)
            .chain(alternatives.iter().copied())
            .find(|i| self.smscs.get(*i).is_some_and(|h| h.is_bound()))
        else {
            let name = self.cfg.smsc.get(smsc).map_or("?", |s| s.name.as_str());
            return Outcome::Transient {
                reason: format!("smsc {name} not bound"),
                retry_after: None,
            };
        };
        let h = &self.smscs[idx];
        let s = &*h.cfg;
        let p = segments;
        let remaining = (d.expires_at - d.now).whole_seconds();
        if remaining <= 0 {
            return Outcome::Permanent {
                reason: "push expired before submission".into(),
            };
        }
        let validity = match s.validity {
            ValidityMode::Relative => smpp::relative_validity(remaining as u64),
            ValidityMode::Absolute => smpp::absolute_validity(d.expires_at.unix_timestamp()),
            ValidityMode::None => String::new(),
        };
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.cfg.deliver_timeout_ms);
        let mut waits = Vec::with_capacity(p.len());
        for seg in p {
            let (tx, rx) = oneshot::channel();
            let req = session::SubmitReq {
                sm: self.submit_sm(s, dest, seg, reference, validity.clone()),
                reply: tx,
            };
            match tokio::time::timeout_at(deadline, h.tx.send(req)).await {
                Ok(Ok(())) => waits.push(rx),
                _ => {
                    // Earlier segments may already be in flight.
                    waits.push({
                        let (tx, rx) = oneshot::channel();
                        let _ = tx.send(SegResult::NotSent(format!(
                            "smsc {} queue full or closed",
                            s.name
                        )));
                        rx
                    });
                    break;
                }
            }
        }
        let mut results = Vec::with_capacity(waits.len());
        for rx in waits {
            results.push(match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => SegResult::Ambiguous("session dropped the request".into()),
                Err(_) => SegResult::Ambiguous(format!(
                    "no answer within deliver_timeout_ms={}",
                    self.cfg.deliver_timeout_ms
                )),
            });
        }
        self.combine(s, results)
    }

    fn combine(&self, s: &SmscConfig, results: Vec<SegResult>) -> Outcome {
        let n = results.len();
        let mut refs = Vec::with_capacity(n);
        let mut permanent = None;
        let mut ambiguous = None;
        let mut transient = None;
        let mut not_sent = None;
        for r in results {
            match r {
                SegResult::Accepted(id) => {
                    refs.push(format!("{}:{}", s.name, smpp::normalise_id(&id, false)))
                }
                SegResult::Rejected(code) => {
                    let why = format!(
                        "smsc {}: submit_sm rejected with {} (0x{code:02X})",
                        s.name,
                        smpp::status_name(code)
                    );
                    if smpp::status_is_transient(code) {
                        transient.get_or_insert(why);
                    } else {
                        permanent.get_or_insert(why);
                    }
                }
                SegResult::Ambiguous(why) => {
                    ambiguous.get_or_insert(format!("ambiguous: smsc {}: {why}", s.name));
                }
                SegResult::NotSent(why) => {
                    not_sent.get_or_insert(why);
                }
            }
        }
        if let Some(reason) = permanent {
            return Outcome::Permanent { reason };
        }
        if let Some(reason) = ambiguous {
            return match self.cfg.ambiguous {
                AmbiguousPolicy::Resend => Outcome::Transient {
                    reason,
                    retry_after: None,
                },
                AmbiguousPolicy::Fail => Outcome::Permanent { reason },
            };
        }
        if let Some(reason) = transient {
            return Outcome::Transient {
                reason,
                retry_after: Some(Duration::from_millis(s.throttle_backoff_ms)),
            };
        }
        if let Some(reason) = not_sent {
            return Outcome::Transient {
                reason,
                retry_after: None,
            };
        }
        Outcome::Accepted {
            detail: format!("{n} SMS via smsc {}", s.name),
            // No receipt comes without registered_delivery: empty refs (Outcome docs).
            refs: if s.registered_delivery & 0x03 != 0 {
                refs
            } else {
                Vec::new()
            },
        }
    }

    async fn deliver_one(&self, d: Delivery) -> Outcome {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let p = match plan(&self.cfg, &d.target, d.content_type, &d.body, n as u8, n) {
            Ok(p) => p,
            Err(e) => return encode_outcome(e),
        };
        match p {
            Plan::Udp { addr, datagram } => {
                let Some(sock) = &self.udp else {
                    return Outcome::Permanent {
                        reason: "UDP bearer socket unavailable".into(),
                    };
                };
                match timeout(Duration::from_secs(5), sock.send_to(&datagram, addr)).await {
                    Ok(Ok(_)) => {
                        // The attempt span adds push_id and device_id to this line.
                        tracing::debug!(octets = datagram.len(), %addr, "WDP datagram sent");
                        Outcome::Accepted {
                            detail: format!(
                                "WSP push datagram ({} octets) sent to {addr}",
                                datagram.len()
                            ),
                            refs: Vec::new(),
                        }
                    }
                    Ok(Err(e)) => Outcome::Transient {
                        reason: format!("UDP send to {addr}: {e}"),
                        retry_after: None,
                    },
                    Err(_) => Outcome::Transient {
                        reason: format!("UDP send to {addr} timed out"),
                        retry_after: None,
                    },
                }
            }
            Plan::Sms {
                smsc,
                alternatives,
                dest_addr,
                segments,
                ..
            } => {
                self.deliver_sms(&d, smsc, &alternatives, &dest_addr, &segments, n)
                    .await
            }
        }
    }
}

fn encode_outcome(e: EncodeError) -> Outcome {
    if e.unsupported() {
        Outcome::Unsupported {
            reason: e.to_string(),
        }
    } else {
        Outcome::Permanent {
            reason: e.to_string(),
        }
    }
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
        let units = encode_units(&self.cfg, target, content_type, body)?;
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
        Ok(Preview {
            summary,
            units_hex: units.iter().map(hex::encode).collect(),
        })
    }

    fn deliver(&self, delivery: Delivery) -> BoxFuture<'_, Outcome> {
        self.deliver_one(delivery).boxed()
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
    let udp = UdpSocket::bind(cfg.udp_bind)
        .await
        .with_context(|| format!("binding the UDP bearer socket on {}", cfg.udp_bind))?;
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
                ctx.shutdown.clone(),
            )
        })
        .collect();
    Ok(Some(Arc::new(WapBinding {
        cfg: cfg.clone(),
        smscs,
        udp: Some(udp),
        counter: AtomicU16::new(rand::random()),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sms_target(m: &str) -> DeviceBinding {
        DeviceBinding::Wap {
            msisdn: Some(m.parse().unwrap()),
            bearer: WapBearer::Sms,
            address: None,
            secure: false,
        }
    }

    fn cfg() -> WapConfig {
        WapConfig {
            enabled: true,
            smsc: vec![
                SmscConfig {
                    name: "de".into(),
                    routes: vec!["+49".into()],
                    ..Default::default()
                },
                SmscConfig {
                    name: "default".into(),
                    ..Default::default()
                },
                SmscConfig {
                    name: "de-mobile".into(),
                    routes: vec!["4917".into()],
                    port_addressing: PortAddressing::Tlv,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn routes_longest_prefix_first_default_last() {
        let c = cfg();
        assert_eq!(route(&c, "491701234567"), vec![2, 0, 1]);
        assert_eq!(route(&c, "4930123456"), vec![0, 1]);
        assert_eq!(route(&c, "33123456789"), vec![1]);
    }

    #[test]
    fn notification_is_one_sms_with_port_udh() {
        let body = [0u8; 39];
        let u = encode_units(
            &cfg(),
            &sms_target("+4930123456"),
            ContentType::Notification,
            &body,
        )
        .unwrap();
        assert_eq!(u.len(), 1);
        assert_eq!(&u[0][..7], &hex::decode("0605040b8423f0").unwrap()[..]);
        assert_eq!(&u[0][8..13], &[0x06, 0x03, 0xC4, 0xAF, 0x87]);
        assert_eq!(u[0].len(), 7 + 6 + 39);
    }

    #[test]
    fn tlv_smsc_units_have_no_udh() {
        let u = encode_units(
            &cfg(),
            &sms_target("+491701234567"),
            ContentType::DmWbxml,
            &[1; 300],
        )
        .unwrap();
        assert_eq!(u.len(), 3);
        assert_eq!(u[0][1], 0x06, "payload starts with the WSP PDU (TID, 0x06)");
    }

    #[test]
    fn too_many_segments_and_secure_are_refused_with_reasons() {
        let mut c = cfg();
        c.max_segments = 2;
        let e = encode_units(
            &c,
            &sms_target("+4930123456"),
            ContentType::DmWbxml,
            &[0; 600],
        )
        .unwrap_err();
        assert!(e.to_string().contains("needs 5 SMS segments"), "{e}");
        assert!(e.unsupported());
        let secure = DeviceBinding::Wap {
            msisdn: Some("+4930123456".parse().unwrap()),
            bearer: WapBearer::Sms,
            address: None,
            secure: true,
        };
        let e = encode_units(&c, &secure, ContentType::Notification, &[0; 10]).unwrap_err();
        assert_eq!(e, EncodeError::SecureRefused);
        assert!(e.to_string().contains("WTLS"));
    }

    #[test]
    fn udp_units_and_extras() {
        let mut c = cfg();
        c.app_id = AppIdForm::Text;
        c.encoding_version = Some("1.3".into());
        c.content_length_header = true;
        let t = DeviceBinding::Wap {
            msisdn: None,
            bearer: WapBearer::Udp,
            address: Some("127.0.0.1".parse().unwrap()),
            secure: false,
        };
        let p = plan(&c, &t, ContentType::DmXml, b"<SyncML/>", 5, 5).unwrap();
        let Plan::Udp { addr, datagram } = p else {
            panic!("udp plan expected")
        };
        assert_eq!(addr.port(), 2948);
        let pdu = PushPdu::decode(&datagram).unwrap();
        assert_eq!(pdu.content_type, ContentTypeValue::well_known(0x43));
        assert_eq!(
            pdu.app_id(),
            Some(&AppId::Uri(wsp::APP_ID_SYNCML_DM_TEXT.into()))
        );
        assert!(pdu.headers.contains(&Header::EncodingVersion(1, 3)));
        assert!(pdu.headers.contains(&Header::ContentLength(9)));
        assert_eq!(pdu.body, b"<SyncML/>");
    }

    #[test]
    fn config_parses_from_toml_and_debug_hides_the_password() {
        let toml = r#"
[bindings.wap]
enabled = true
concat_ref = "16"
ambiguous = "fail"
udp_bind = "0.0.0.0:9200"
encoding_version = "1.3"

[[bindings.wap.smsc]]
name = "a"
host = "smsc.example.net"
password = "s3cr3t-pw"
port_addressing = "tlv"
validity = "absolute"
routes = ["+49", "33"]
throughput = 50.0
"#;
        #[derive(Deserialize)]
        struct Root {
            bindings: Bindings,
        }
        #[derive(Deserialize)]
        struct Bindings {
            wap: WapConfig,
        }
        let r: Root = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        let w = r.bindings.wap;
        assert!(w.enabled);
        assert_eq!(w.concat_ref, RefWidth::Sixteen);
        assert_eq!(w.ambiguous, AmbiguousPolicy::Fail);
        assert_eq!(w.udp_bind.port(), 9200);
        let s = &w.smsc[0];
        assert_eq!(s.port_addressing, PortAddressing::Tlv);
        assert_eq!(s.validity, ValidityMode::Absolute);
        assert_eq!(s.window, 10, "defaults fill the rest");
        assert!(
            !format!("{w:?}").contains("s3cr3t"),
            "password must not reach logs"
        );
    }
}
