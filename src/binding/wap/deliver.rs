//! Delivery: submit_sm over a bound SMSC session (one per segment, within the window), or one
//! UDP datagram; and the mapping of segment results to an [`Outcome`].

use std::{sync::atomic::Ordering, time::Duration};

use tokio::{sync::oneshot, time::timeout};

use super::plan::{EncodeError, Plan, plan, submit_sm, validity};
use super::{AmbiguousPolicy, SECTION, SegResult, SmscConfig, WapBinding, session};
use crate::binding::{Delivery, NextHopRef, Outcome};
use crate::codec::{smpp, sms};
use crate::net::targets::TargetRefused;

impl WapBinding {
    async fn deliver_sms(
        &self,
        d: &Delivery,
        smsc: usize,
        alternatives: &[usize],
        dest: &str,
        segments: &[sms::Segment],
        reference: u16,
    ) -> Outcome {
        // Prefer a bound, not suspended SMSC among those that route this MSISDN.
        let candidates = || std::iter::once(smsc).chain(alternatives.iter().copied());
        let Some(idx) = candidates().find(|i| self.smscs.get(*i).is_some_and(|h| h.is_usable()))
        else {
            // Every route suspended by an operator: not a failure, and not an attempt
            // (DESIGN §10.4). Unbound routes keep their ordinary transient outcome.
            let suspended: Vec<&str> = candidates()
                .filter_map(|i| self.smscs.get(i))
                .filter(|h| h.is_suspended())
                .map(|h| h.cfg.name.as_str())
                .collect();
            if !suspended.is_empty() {
                return Outcome::Deferred {
                    reason: format!("smsc {} suspended by an operator", suspended.join(", ")),
                    retry_after: Duration::from_millis(self.cfg.suspended_retry_ms),
                };
            }
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
        let validity = validity(s, remaining as u64, d.expires_at.unix_timestamp());
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.cfg.deliver_timeout_ms);
        let mut waits = Vec::with_capacity(p.len());
        for seg in p {
            let (tx, rx) = oneshot::channel();
            let req = session::SubmitReq {
                sm: submit_sm(s, dest, seg, reference, validity.clone()),
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
        let p = match plan(
            &self.cfg,
            &d.target,
            d.content_type,
            &d.body,
            d.bootstrap.as_ref(),
            n as u8,
            n,
        ) {
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
