//! Planning a push (pure, no I/O): the WSP Push PDU, the SMSC route for an MSISDN, and SMS
//! segmentation or the one UDP datagram. Shared by delivery, `/v1/pushes/preview` and
//! `dmpushd encode`, so what a preview shows is what a delivery sends.

use std::net::SocketAddr;

use super::{AppIdForm, PortAddressing, SmscConfig, ValidityMode, WapConfig};
use crate::binding::{BindingKind, CannotCarry, ContentType, DeviceBinding, WapBearer};
use crate::codec::{
    bootstrap::Signature,
    smpp::{self, tag},
    sms,
    wsp::{self, AppId, ContentTypeValue, Header, Param, ParamName, ParamValue, PushPdu},
};

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
    /// A bootstrap's MAC covers the WBXML exactly as sent, so the body must already be WBXML
    /// (the API compiles `+xml` at submit).
    #[error("a bootstrap push must be application/vnd.syncml.dm+wbxml (got {0})")]
    BootstrapNotWbxml(&'static str),
}

impl EncodeError {
    /// Whether the payload is the problem for this binding (→ Unsupported, `auto` falls back).
    pub(super) fn unsupported(&self) -> bool {
        matches!(
            self,
            Self::SecureRefused
                | Self::BootstrapNotWbxml(_)
                | Self::Segments(sms::SmsError::TooManySegments { .. })
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

/// The WSP Push PDU for a payload (content type and headers per config). A DM bootstrap adds
/// the `SEC` and `MAC` Content-Type parameters (protocol-facts §A.8: tokens 0x11/0x12, WSP
/// encoding 1.4; SEC a short-integer, MAC a text-string of 40 hex digits), which turns the
/// content type into Content-general-form: `Value-length C2 91 <sec> 92 <MAC> 00`.
pub fn wsp_pdu(
    cfg: &WapConfig,
    content_type: ContentType,
    body: &[u8],
    bootstrap: Option<&Signature>,
    tid: u8,
) -> Result<Vec<u8>, EncodeError> {
    if bootstrap.is_some() && content_type != ContentType::DmWbxml {
        return Err(EncodeError::BootstrapNotWbxml(content_type.as_str()));
    }
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
    let mut ct = ContentTypeValue::well_known(code);
    if let Some(sig) = bootstrap {
        ct.params = vec![
            Param {
                name: ParamName::WellKnown(wsp::param::SEC),
                value: ParamValue::Integer(u32::from(sig.sec.code())),
            },
            Param {
                name: ParamName::WellKnown(wsp::param::MAC),
                value: ParamValue::Text(sig.mac.clone()),
            },
        ];
    }
    let mut pdu = PushPdu::new(tid, ct, app, body);
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

/// The `submit_sm` for one segment on SMSC `s` (pure: shared by delivery and `dmpushd encode`).
pub fn submit_sm(
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

/// The SMPP validity_period for an SMSC's [`ValidityMode`] (SMPP 3.4 §7.1.1).
pub fn validity(s: &SmscConfig, remaining_secs: u64, expires_at_unix: i64) -> String {
    match s.validity {
        ValidityMode::Relative => smpp::relative_validity(remaining_secs),
        ValidityMode::Absolute => smpp::absolute_validity(expires_at_unix),
        ValidityMode::None => String::new(),
    }
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
    bootstrap: Option<&Signature>,
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
    let datagram = wsp_pdu(cfg, content_type, body, bootstrap, tid)?;
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
    bootstrap: Option<&Signature>,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    let (tid, reference) = preview_ids(body);
    let p = plan(cfg, target, content_type, body, bootstrap, tid, reference)?;
    Ok(p.units(cfg))
}

/// The TID and concatenation reference a preview (or `dmpushd encode`) uses: derived from the
/// body so the answer is deterministic; real deliveries use a counter.
pub fn preview_ids(body: &[u8]) -> (u8, u16) {
    // FNV-1a: a stable, cheap spread of the body into the reference space.
    let h = body.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    });
    (h as u8, (h >> 8) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::wap::SmscConfig;

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
            None,
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
            None,
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
            None,
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
        let e = encode_units(&c, &secure, ContentType::Notification, &[0; 10], None).unwrap_err();
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
        let p = plan(&c, &t, ContentType::DmXml, b"<SyncML/>", None, 5, 5).unwrap();
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
    fn bootstrap_adds_sec_and_mac_in_content_general_form() {
        use crate::codec::bootstrap::{Sec, Signature};
        let sig = Signature {
            sec: Sec::UserPin,
            mac: "0123456789ABCDEF0123456789ABCDEF01234567".into(),
        };
        let body = [0x03, 0x01, 0x6A, 0x00];
        let pdu = wsp_pdu(&cfg(), ContentType::DmWbxml, &body, Some(&sig), 9).unwrap();
        // TID, Push, HeadersLen; then Value-length 45 (> 30, so 0x1F + uintvar), media 0xC2,
        // SEC (0x91) = short-integer 1 (0x81), MAC (0x92) = text-string; then AF 87 and the body.
        let mut want = vec![0x09, 0x06, 2 + 45 + 2, 0x1F, 45, 0xC2, 0x91, 0x81, 0x92];
        want.extend_from_slice(sig.mac.as_bytes());
        want.extend_from_slice(&[0x00, 0xAF, 0x87]);
        want.extend_from_slice(&body);
        assert_eq!(hex::encode(&pdu), hex::encode(&want));
        let e = wsp_pdu(&cfg(), ContentType::DmXml, b"<SyncML/>", Some(&sig), 9).unwrap_err();
        assert!(e.unsupported(), "{e}");
    }
}
