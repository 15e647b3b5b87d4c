//! Delivery: submit_sm over a bound SMSC session (one per segment, within the window), or one
//! UDP datagram; and the mapping of segment results to an [`Outcome`].

use std::{sync::atomic::Ordering, time::Duration};

use tokio::{sync::oneshot, time::timeout};

use super::plan::{EncodeError, Plan, plan};
use super::{
    AmbiguousPolicy, PortAddressing, SECTION, SegResult, SmscConfig, ValidityMode, WapBinding,
    session,
};
use crate::binding::{Delivery, NextHopRef, Outcome};
use crate::codec::{
    smpp::{self, tag},
    sms,
};
use crate::net::targets::TargetRefused;

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
                SegResult::Accepted(id) => refs.push(NextHopRef::new(
                    s.name.clone(),
                    smpp::normalise_id(&id, false),
                )),
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

    pub(super) async fn deliver_one(&self, d: Delivery) -> Outcome {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let p = match plan(&self.cfg, &d.target, d.content_type, &d.body, n as u8, n) {
            Ok(p) => p,
            Err(e) => return encode_outcome(e),
        };
        match p {
            Plan::Udp { addr, datagram } => {
                // Checked again at send time: the list may have narrowed since submit.
                if !self.policy.permits(addr.ip()) {
                    return Outcome::Permanent {
                        reason: TargetRefused::literal(addr.ip(), SECTION).to_string(),
                    };
                }
                let sock = if addr.is_ipv6() {
                    &self.udp6
                } else {
                    &self.udp
                };
                let Some(sock) = sock else {
                    return Outcome::Permanent {
                        reason: format!(
                            "no IPv{} UDP bearer socket on this gateway",
                            if addr.is_ipv6() { 6 } else { 4 }
                        ),
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
