//! `dmpushd encode --target …`: the exact bytes a binding would send, offline (issue 13 item 6).
//!
//! No second encoder: WAP goes through [`wap::plan`] and [`wap::submit_sm`] (what delivery
//! uses); SIP, HTTP and OBEX through their bindings' own [`Binding::preview_bootstrap`] (what
//! `/v1/pushes/preview` shows). Per-attempt values (WSP TID, concatenation reference, SMPP
//! sequence numbers, SIP branch/tag/Call-ID) are placeholders or derived from the body, exactly as
//! in a preview; everything else is what goes on the wire.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::encode::{EncodeArgs, read_input};
use crate::{
    api::validate::{self, BindingInput},
    binding::{
        Binding, BindingContext, ContentType, DeviceBinding, Signature,
        http::HttpBinding,
        obex::ObexBinding,
        sip::SipBinding,
        wap::{self, Plan, SmscConfig},
    },
    codec::{
        bootstrap,
        smpp::{Body, Pdu, cmd},
    },
    config::Settings,
};

/// What `encode --target` prints, before formatting.
struct Wire {
    binding: &'static str,
    summary: String,
    /// The WSP push PDU (WAP only).
    wsp_pdu: Option<Vec<u8>>,
    /// WAP over SMS: per segment (UDH, user data, submit_sm PDU).
    segments: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    /// Every other unit, with its label (udp_datagram, sip_message, http_request, obex_packet).
    units: Vec<(&'static str, Vec<u8>)>,
}

pub fn run(args: &EncodeArgs) -> anyhow::Result<String> {
    let target_json = args.target.as_deref().unwrap_or_default();
    let input: BindingInput =
        serde_json::from_str(target_json).context("--target is not a binding object")?;
    let target = validate::bindings(&[input], "target")
        .map_err(|p| anyhow::anyhow!("--target: {}", p.detail))?
        .remove(0);
    // Empty = the clap default (a struct built with `Default` in tests).
    let content_type = match args.content_type.as_str() {
        "" => ContentType::DmWbxml,
        ct => validate::content_type(ct)
            .map_err(|p| anyhow::anyhow!("--content-type: {}", p.detail))?,
    };
    let settings = match &args.config {
        Some(f) => {
            Settings::load(Some(f), true).with_context(|| format!("--config {}", f.display()))?
        }
        None => Settings::default(),
    };
    let mut body = read_input(args)?;
    let mut content_type = content_type;
    let bootstrap = match &args.sec {
        None => None,
        Some(sec) => {
            let sec: bootstrap::Sec = sec.parse()?;
            // As the API does: the MAC covers the WBXML as sent, so +xml is compiled first.
            if content_type == ContentType::DmXml {
                body = crate::codec::wbxml::xml_to_wbxml(&body)?;
                content_type = ContentType::DmWbxml;
            }
            let km = bootstrap::KeyMaterial {
                imsi: args.imsi.clone(),
                user_pin: args.user_pin.clone(),
            };
            Some(Signature::sign(sec, &km, &body)?)
        }
    };
    let wire = match &target {
        DeviceBinding::Wap { .. } => wap_wire(
            args,
            &settings,
            &target,
            content_type,
            &body,
            bootstrap.as_ref(),
        )?,
        _ => other_wire(&settings, &target, content_type, &body, bootstrap.as_ref())?,
    };
    match args.format.as_str() {
        "hex" | "" => hex_text(&wire),
        "json" => {
            let mut v = json!({
                "binding": wire.binding,
                "summary": wire.summary,
                "content_type": content_type.as_str(),
            });
            if let Some(p) = &wire.wsp_pdu {
                v["wsp_pdu"] = json!(hex::encode_upper(p));
            }
            if !wire.segments.is_empty() {
                v["segments"] = Value::Array(
                    wire.segments
                        .iter()
                        .map(|(udh, ud, pdu)| {
                            json!({
                                "udh": hex::encode_upper(udh),
                                "user_data": hex::encode_upper(ud),
                                "submit_sm": hex::encode_upper(pdu),
                            })
                        })
                        .collect(),
                );
            }
            if !wire.units.is_empty() {
                v["units"] = Value::Array(
                    wire.units
                        .iter()
                        .map(|(kind, u)| json!({"kind": kind, "hex": hex::encode_upper(u)}))
                        .collect(),
                );
            }
            Ok(format!("{}\n", serde_json::to_string_pretty(&v)?))
        }
        f => bail!("--format {f}: hex or json"),
    }
}

fn hex_text(w: &Wire) -> anyhow::Result<String> {
    let mut out = String::new();
    writeln!(out, "# {}: {}", w.binding, w.summary)?;
    if let Some(p) = &w.wsp_pdu {
        writeln!(out, "wsp_pdu {}", hex::encode_upper(p))?;
    }
    let n = w.segments.len();
    for (i, (udh, ud, pdu)) in w.segments.iter().enumerate() {
        writeln!(out, "segment {}/{n} udh {}", i + 1, hex::encode_upper(udh))?;
        writeln!(
            out,
            "segment {}/{n} user_data {}",
            i + 1,
            hex::encode_upper(ud)
        )?;
        writeln!(
            out,
            "segment {}/{n} submit_sm {}",
            i + 1,
            hex::encode_upper(pdu)
        )?;
    }
    for (kind, u) in &w.units {
        writeln!(out, "{kind} {}", hex::encode_upper(u))?;
    }
    Ok(out)
}

fn wap_wire(
    args: &EncodeArgs,
    settings: &Settings,
    target: &DeviceBinding,
    content_type: ContentType,
    body: &[u8],
    bootstrap: Option<&Signature>,
) -> anyhow::Result<Wire> {
    let mut cfg = settings.bindings.wap.clone();
    if cfg.smsc.is_empty() {
        // Offline without a configuration: one SMSC with the default settings and no routes.
        cfg.smsc.push(SmscConfig {
            name: "default".into(),
            ..Default::default()
        });
    }
    let (tid, reference) = wap::preview_ids(body);
    let plan = wap::plan(&cfg, target, content_type, body, bootstrap, tid, reference)?;
    Ok(match plan {
        Plan::Udp { addr, datagram } => Wire {
            binding: "wap",
            summary: format!("1 UDP datagram to {addr} ({} octets)", datagram.len()),
            wsp_pdu: Some(datagram.clone()),
            segments: Vec::new(),
            units: vec![("udp_datagram", datagram)],
        },
        Plan::Sms {
            smsc,
            dest_addr,
            datagram,
            segments,
            ..
        } => {
            let s = &cfg.smsc[smsc];
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let validity = wap::validity(s, args.ttl_seconds, now + args.ttl_seconds as i64);
            let mut out = Vec::with_capacity(segments.len());
            for (i, seg) in segments.iter().enumerate() {
                let sm = wap::submit_sm(s, &dest_addr, seg, reference, validity.clone());
                // Sequence numbers are per session; 1, 2, … here.
                let pdu = Pdu::new(cmd::SUBMIT_SM, i as u32 + 1, Body::Sm(sm)).encode()?;
                let ud = if s.port_addressing == wap::PortAddressing::Tlv {
                    seg.payload.clone()
                } else {
                    seg.user_data()
                };
                let udh = if s.port_addressing == wap::PortAddressing::Tlv {
                    Vec::new()
                } else {
                    seg.udh.clone()
                };
                out.push((udh, ud, pdu));
            }
            Wire {
                binding: "wap",
                summary: format!(
                    "{} SMS segment{} to {dest_addr} via smsc {}",
                    out.len(),
                    if out.len() == 1 { "" } else { "s" },
                    s.name
                ),
                wsp_pdu: Some(datagram),
                segments: out,
                units: Vec::new(),
            }
        }
    })
}

fn other_wire(
    settings: &Settings,
    target: &DeviceBinding,
    content_type: ContentType,
    body: &[u8],
    bootstrap: Option<&Signature>,
) -> anyhow::Result<Wire> {
    let registry = prometheus::Registry::new();
    let (binding, label): (Box<dyn Binding>, &'static str) = match target {
        DeviceBinding::Http { .. } => {
            let mut cfg = settings.bindings.http.clone();
            cfg.enabled = true;
            (Box::new(HttpBinding::new(&cfg, &registry)?), "http_request")
        }
        DeviceBinding::Obex { .. } => {
            let mut cfg = settings.bindings.obex.clone();
            cfg.enabled = true;
            (Box::new(ObexBinding::new(&cfg, &registry)?), "obex_packet")
        }
        DeviceBinding::Sip { .. } => {
            // Nothing is sent, bound or spawned: the context only satisfies the constructor.
            let (tx, _rx) = tokio::sync::mpsc::channel(1);
            let ctx = BindingContext {
                registry: registry.clone(),
                receipts: tx,
                shutdown: tokio_util::sync::CancellationToken::new(),
            };
            let mut cfg = settings.bindings.sip.clone();
            cfg.enabled = true;
            (Box::new(SipBinding::new(&cfg, &ctx)?), "sip_message")
        }
        DeviceBinding::Wap { .. } => bail!("wap targets are encoded by wap_wire"),
    };
    let p = binding
        .preview_bootstrap(target, content_type, body, bootstrap)
        .map_err(|e| anyhow::anyhow!("{}: {e}", binding.kind()))?;
    let units = p
        .units_hex
        .iter()
        .map(|h| hex::decode(h).map(|u| (label, u)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Wire {
        binding: binding.kind().as_str(),
        summary: p.summary,
        wsp_pdu: None,
        segments: Vec::new(),
        units,
    })
}
