//! One delivery attempt: plan the request (Request-URI, To, next hop, transport), send it and
//! drive the client transaction (retransmissions over UDP, a pooled connection over TCP/TLS),
//! answer one digest challenge, follow one redirect when configured, and classify the final
//! response into an [`Outcome`].

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::net::UdpSocket;

use super::SipBinding;
use super::transport::{self, LinkError, StreamConn};
use crate::binding::{Delivery, DeviceBinding, Outcome};
use crate::codec::sip::{
    Action, NonInviteClient, Response, SipUri, Transport,
    auth::{self, DigestInput},
    message::{self, MessageRequest, parse_response},
};
use crate::domain::SipAddress;
use crate::net::targets::ResolveError;

/// Where and how one request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Plan {
    pub(super) request_uri: String,
    pub(super) to: String,
    pub(super) hop: SipUri,
    pub(super) transport: Transport,
}

/// Result of one client transaction.
enum TxResult {
    Final(Box<Response>),
    Timeout,
    Link(LinkError),
}

impl SipBinding {
    /// `sip:`/`sips:` as is; `tel:` through the configured domain (RFC 3261 §19.1.6).
    fn normalise(&self, uri: &SipAddress) -> Result<String, String> {
        match uri {
            SipAddress::Sip(u) => Ok(u.raw.clone()),
            SipAddress::Tel(t) => {
                let domain = self
                    .cfg
                    .domain
                    .as_deref()
                    .ok_or("tel: device URI needs [bindings.sip] domain")?;
                message::tel_to_sip(t, domain).map_err(|e| e.to_string())
            }
        }
    }

    pub(super) fn plan(
        &self,
        target: &DeviceBinding,
        request_uri: Option<&str>,
    ) -> Result<Plan, String> {
        let DeviceBinding::Sip { uri, gruu } = target else {
            return Err(format!("not a SIP target: {}", target.kind()));
        };
        let aor = self.normalise(uri)?;
        let request_uri = match (request_uri, gruu) {
            (Some(r), _) => r.to_string(),
            (None, Some(g)) => self.normalise(g)?,
            (None, None) => aor.clone(),
        };
        let ruri = SipUri::parse(&request_uri).map_err(|e| e.to_string())?;
        let hop = self.proxy.clone().unwrap_or_else(|| ruri.clone());
        // A sips: Request-URI must be secured on every hop (RFC 3261 §19.1.2 / §26.2.2).
        let transport = if ruri.secure {
            Transport::Tls
        } else {
            hop.transport().unwrap_or(self.default_transport)
        };
        Ok(Plan {
            request_uri,
            to: format!("<{aor}>"),
            hop,
            transport,
        })
    }

    /// The next hop's address. A host contacted directly must be one `allow_targets` permits
    /// (checked after DNS, DESIGN §10.3); the configured proxy is the operator's and is not
    /// checked.
    async fn resolve(&self, plan: &Plan, transport: Transport) -> Result<SocketAddr, Outcome> {
        let port = plan.hop.port.unwrap_or(transport.default_port());
        let host = plan.hop.host_unbracketed().to_string();
        let fail = |reason: String| Outcome::Transient {
            reason: format!("{}: {reason}", transport.as_str()),
            retry_after: None,
        };
        if self.proxy.is_none() {
            // A records only: RFC 3263 NAPTR/SRV is out of scope (docs/decisions/sip.md).
            return match tokio::time::timeout(
                self.timers.timer_f,
                self.policy.resolve(&host, port, super::SECTION),
            )
            .await
            {
                Err(_) => Err(fail(format!("resolving {host} timed out"))),
                Ok(Ok(addrs)) => addrs
                    .first()
                    .copied()
                    .ok_or_else(|| fail(format!("{host} has no address"))),
                Ok(Err(ResolveError::Refused(r))) => Err(Outcome::Permanent {
                    reason: r.to_string(),
                }),
                Ok(Err(e)) => Err(fail(e.to_string())),
            };
        }
        let mut addrs = tokio::time::timeout(
            self.timers.timer_f,
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        .map_err(|_| fail(format!("resolving {host} timed out")))?
        .map_err(|e| fail(format!("resolving {host}: {e}")))?;
        addrs
            .next()
            .ok_or_else(|| fail(format!("{host} has no address")))
    }

    pub(super) async fn deliver_inner(&self, d: Delivery) -> Outcome {
        let mut plan = match self.plan(&d.target, None) {
            Ok(p) => p,
            Err(reason) if matches!(d.target, DeviceBinding::Sip { .. }) => {
                return Outcome::Permanent { reason };
            }
            Err(reason) => return Outcome::Unsupported { reason },
        };
        let call_id = format!("{}@dmpushd", uuid::Uuid::new_v4().simple());
        let from_tag = format!("{:016x}", rand::random::<u64>());
        let mut cseq = 1u32;
        let mut authorization: Option<(&'static str, String)> = None;
        let mut challenged = false;
        let mut redirected = false;
        let mut udp: Option<(SocketAddr, UdpSocket)> = None;
        // At most: first try, one auth retry, one redirect (and its auth retry).
        for _ in 0..4 {
            let branch = format!("{}{:016x}", message::BRANCH_COOKIE, rand::random::<u64>());
            let mut transport = plan.transport;
            let addr = match self.resolve(&plan, transport).await {
                Ok(a) => a,
                Err(outcome) => return outcome,
            };
            let req = |sent_by: &str, transport: Transport| {
                MessageRequest {
                    request_uri: &plan.request_uri,
                    transport,
                    sent_by,
                    branch: &branch,
                    from: &self.from,
                    from_tag: &from_tag,
                    to: &plan.to,
                    call_id: &call_id,
                    cseq,
                    max_forwards: self.cfg.max_forwards,
                    route: &self.route,
                    accept_contact: self.accept_contact.as_deref(),
                    authorization: authorization.as_ref().map(|(n, v)| (*n, v.as_str())),
                    content_type: d.content_type.as_str(),
                    body: &d.body,
                }
                .encode()
            };
            let started = Instant::now();
            let result = if transport == Transport::Udp {
                if udp.as_ref().is_none_or(|(a, _)| *a != addr) {
                    match transport::udp_socket(addr).await {
                        Ok(s) => udp = Some((addr, s)),
                        Err(e) => return self.link_outcome(e),
                    }
                }
                let Some((_, sock)) = udp.as_ref() else {
                    return Outcome::Transient {
                        reason: "UDP socket unavailable".into(),
                        retry_after: None,
                    };
                };
                let local = sock
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| "0.0.0.0:0".into());
                let bytes = req(&local, Transport::Udp);
                // RFC 3261 §18.1.1, checked on the final bytes (after any Authorization).
                if bytes.len() > self.cfg.udp_max_request {
                    transport = Transport::Tcp;
                    self.stream_transaction(&plan, addr, transport, &req, &branch, cseq, &call_id)
                        .await
                } else {
                    self.udp_transaction(sock, &bytes, &branch, cseq, &call_id)
                        .await
                }
            } else {
                self.stream_transaction(&plan, addr, transport, &req, &branch, cseq, &call_id)
                    .await
            };
            let elapsed = started.elapsed().as_secs_f64();
            let t = transport.as_str();
            self.metrics
                .latency
                .with_label_values(&[t])
                .observe(elapsed);
            let resp = match result {
                TxResult::Final(r) => r,
                TxResult::Timeout => {
                    self.metrics
                        .requests
                        .with_label_values(&["timeout", t])
                        .inc();
                    return Outcome::Transient {
                        reason: format!(
                            "SIP MESSAGE over {t}: no final response within Timer F ({} ms)",
                            self.timers.timer_f.as_millis()
                        ),
                        retry_after: None,
                    };
                }
                TxResult::Link(e) => {
                    self.metrics.requests.with_label_values(&["error", t]).inc();
                    return self.link_outcome(e);
                }
            };
            let class = format!("{}xx", resp.status / 100);
            self.metrics.requests.with_label_values(&[&class, t]).inc();
            match resp.status {
                401 | 407 => {
                    if challenged {
                        return Outcome::Permanent {
                            reason: format!(
                                "SIP {} {}: credentials rejected (second challenge)",
                                resp.status, resp.reason
                            ),
                        };
                    }
                    challenged = true;
                    match self.answer_challenge(&resp, &plan, addr, &d.body) {
                        Ok(a) => authorization = Some(a),
                        Err(reason) => return Outcome::Permanent { reason },
                    }
                    // Same Call-ID and From tag, CSeq + 1 (RFC 3261 §22.2).
                    cseq += 1;
                }
                300..=399 if self.cfg.follow_redirects && !redirected => {
                    let Some(contact) = resp.contact_uris().into_iter().next() else {
                        return Outcome::Permanent {
                            reason: format!("SIP {} {} without Contact", resp.status, resp.reason),
                        };
                    };
                    redirected = true;
                    match self.plan(&d.target, Some(&contact)) {
                        Ok(p) => plan = p,
                        Err(e) => {
                            return Outcome::Permanent {
                                reason: format!("SIP {} redirect to {contact:?}: {e}", resp.status),
                            };
                        }
                    }
                    // A new target may have another realm: a fresh challenge is allowed.
                    authorization = None;
                    challenged = false;
                    cseq += 1;
                }
                _ => return classify(&resp, t),
            }
        }
        Outcome::Permanent {
            reason: "SIP: too many redirects or challenges".into(),
        }
    }

    /// Whether credential `i` may answer a challenge from the hop of `plan` at `addr`: the
    /// configured proxy always (it is the operator's), a host contacted directly only when the
    /// credential's `targets` name it (DESIGN §10.3).
    fn credential_may_answer(&self, i: usize, plan: &Plan, addr: SocketAddr) -> bool {
        self.proxy.is_some()
            || self
                .credential_targets
                .get(i)
                .is_some_and(|t| t.permits(plan.hop.host_unbracketed(), addr.ip()))
    }

    fn answer_challenge(
        &self,
        resp: &Response,
        plan: &Plan,
        addr: SocketAddr,
        body: &[u8],
    ) -> Result<(&'static str, String), String> {
        let request_uri = plan.request_uri.as_str();
        let (hdr, answer) = if resp.status == 407 {
            ("proxy-authenticate", "Proxy-Authorization")
        } else {
            ("www-authenticate", "Authorization")
        };
        // Several challenges may be offered (e.g. SHA-256 and MD5): take the first we can answer.
        let mut last_err = format!("SIP {} without {hdr}", resp.status);
        for value in resp.headers_named(hdr) {
            let ch = match auth::parse_challenge(value) {
                Ok(c) => c,
                Err(e) => {
                    last_err = format!("SIP {} challenge: {e}", resp.status);
                    continue;
                }
            };
            let mut for_realm = self
                .cfg
                .credentials
                .iter()
                .enumerate()
                .filter(|(_, c)| c.realm == ch.realm)
                .peekable();
            if for_realm.peek().is_none() {
                last_err = format!(
                    "SIP {}: no credentials for realm {:?}",
                    resp.status, ch.realm
                );
                continue;
            }
            let Some((_, cred)) =
                for_realm.find(|(i, _)| self.credential_may_answer(*i, plan, addr))
            else {
                // The realm is the operator's but this host is not where its credentials go:
                // answering would hand a digest of the operator's account to whoever runs it.
                return Err(format!(
                    "SIP {}: no credentials for this target",
                    resp.status
                ));
            };
            let cnonce = format!("{:016x}", rand::random::<u64>());
            let inp = DigestInput {
                username: &cred.username,
                password: &cred.password,
                method: "MESSAGE",
                uri: request_uri,
                body,
                cnonce: &cnonce,
                nc: 1,
            };
            match auth::authorization(&ch, &inp) {
                Ok(v) => return Ok((answer, v)),
                Err(e) => last_err = format!("SIP {} challenge: {e}", resp.status),
            }
        }
        Err(last_err)
    }

    fn link_outcome(&self, e: LinkError) -> Outcome {
        if e.permanent {
            Outcome::Permanent {
                reason: e.to_string(),
            }
        } else {
            Outcome::Transient {
                reason: e.to_string(),
                retry_after: None,
            }
        }
    }

    fn matches(resp: &Response, branch: &str, cseq: u32, call_id: &str) -> bool {
        resp.top_via_branch() == Some(branch)
            && resp.cseq() == Some((cseq, "MESSAGE"))
            && resp.call_id() == Some(call_id)
    }

    async fn udp_transaction(
        &self,
        sock: &UdpSocket,
        bytes: &[u8],
        branch: &str,
        cseq: u32,
        call_id: &str,
    ) -> TxResult {
        let link_err = |reason: String| {
            TxResult::Link(LinkError {
                transport: "udp",
                addr: sock
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
                reason,
                permanent: false,
            })
        };
        if let Err(e) = sock.send(bytes).await {
            return link_err(format!("send: {e}"));
        }
        let mut tx = NonInviteClient::new(false, self.timers, self.now());
        let mut buf = vec![0u8; message::MAX_MESSAGE + 1];
        loop {
            let Some(deadline) = tx.deadline() else {
                return TxResult::Timeout;
            };
            let wake = tokio::time::Instant::from_std(self.epoch + deadline);
            tokio::select! {
                r = sock.recv(&mut buf) => {
                    let n = match r {
                        Ok(n) => n,
                        // ICMP port unreachable surfaces here on a connected socket; the peer
                        // may come up before Timer F, so keep retransmitting (RFC 3261 §18.4
                        // allows but does not require treating it as a failure).
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                        Err(e) => return link_err(format!("recv: {e}")),
                    };
                    match parse_response(&buf[..n]) {
                        Ok(resp) if Self::matches(&resp, branch, cseq, call_id) => {
                            match tx.on_response(resp.status, self.now()) {
                                Some(Action::Final(_)) => return TxResult::Final(Box::new(resp)),
                                Some(_) => {}
                                None => self.metrics.stray.inc(),
                            }
                        }
                        _ => self.metrics.stray.inc(),
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    match tx.on_timer(self.now()) {
                        Some(Action::Retransmit) => {
                            self.metrics.retransmissions.with_label_values(&["udp"]).inc();
                            if let Err(e) = sock.send(bytes).await {
                                return link_err(format!("send: {e}"));
                            }
                        }
                        Some(Action::Timeout) => return TxResult::Timeout,
                        _ => {}
                    }
                }
                _ = self.shutdown.cancelled() => return link_err("shutting down".into()),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn stream_transaction(
        &self,
        plan: &Plan,
        addr: SocketAddr,
        transport: Transport,
        req: &(dyn Fn(&str, Transport) -> Vec<u8> + Sync),
        branch: &str,
        cseq: u32,
        call_id: &str,
    ) -> TxResult {
        let name = plan.hop.host_unbracketed().to_string();
        // One reconnect when a pooled connection turns out to be dead on write.
        let mut attempt = 0;
        let (conn, mut rx): (Arc<StreamConn>, _) = loop {
            let conn = match self
                .pool
                .get(transport, addr, &name, self.timers.timer_f)
                .await
            {
                Ok(c) => c,
                Err(e) => return TxResult::Link(e),
            };
            let rx = conn.register(branch);
            let bytes = req(&conn.local.to_string(), transport);
            match conn.send(&bytes).await {
                Ok(()) => break (conn, rx),
                Err(e) => {
                    conn.unregister(branch);
                    self.pool.evict(&conn);
                    attempt += 1;
                    if attempt > 1 {
                        return TxResult::Link(LinkError {
                            transport: transport.as_str(),
                            addr,
                            reason: format!("send: {e}"),
                            permanent: false,
                        });
                    }
                }
            }
        };
        let mut tx = NonInviteClient::new(true, self.timers, self.now());
        let result = loop {
            let Some(deadline) = tx.deadline() else {
                break TxResult::Timeout;
            };
            let wake = tokio::time::Instant::from_std(self.epoch + deadline);
            tokio::select! {
                r = rx.recv() => match r {
                    Some(resp) if Self::matches(&resp, branch, cseq, call_id) => {
                        match tx.on_response(resp.status, self.now()) {
                            Some(Action::Final(_)) => break TxResult::Final(Box::new(resp)),
                            Some(_) => {}
                            None => self.metrics.stray.inc(),
                        }
                    }
                    Some(_) => self.metrics.stray.inc(),
                    None => {
                        self.pool.evict(&conn);
                        break TxResult::Link(LinkError {
                            transport: transport.as_str(),
                            addr,
                            reason: "connection closed before a final response".into(),
                            permanent: false,
                        });
                    }
                },
                _ = tokio::time::sleep_until(wake) => {
                    if let Some(Action::Timeout) = tx.on_timer(self.now()) {
                        break TxResult::Timeout;
                    }
                }
                _ = self.shutdown.cancelled() => break TxResult::Link(LinkError {
                    transport: transport.as_str(),
                    addr,
                    reason: "shutting down".into(),
                    permanent: false,
                }),
            }
        };
        conn.unregister(branch);
        result
    }
}

/// Maps a final response that is not a challenge or a followed redirect to an outcome
/// (issue 5; RFC 3428 §7 for 200 vs 202; RFC 3261 §21 for the classes).
pub fn classify(resp: &Response, transport: &str) -> Outcome {
    let what = format!("SIP {} {} (over {transport})", resp.status, resp.reason);
    match resp.status {
        // 202: accepted by a store-and-forward element; no receipt will follow (RFC 3428 §7), so
        // the push ends `unconfirmed` (empty refs, DESIGN §10.1).
        202 => Outcome::Accepted {
            detail: what,
            refs: Vec::new(),
        },
        200..=299 => Outcome::Delivered { detail: what },
        408 | 480 | 486 | 500 | 503 | 504 => Outcome::Transient {
            reason: what,
            retry_after: resp.retry_after().map(|s| Duration::from_secs(s.into())),
        },
        _ => Outcome::Permanent { reason: what },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, extra: &str) -> Response {
        parse_response(
            format!(
                "SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nCSeq: 1 MESSAGE\r\nCall-ID: c\r\n{extra}Content-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn classification() {
        assert_eq!(classify(&resp(200, ""), "udp").label(), "delivered");
        assert!(matches!(
            classify(&resp(202, ""), "udp"),
            Outcome::Accepted { refs, .. } if refs.is_empty()
        ));
        assert_eq!(
            classify(&resp(503, "Retry-After: 30\r\n"), "udp"),
            Outcome::Transient {
                reason: "SIP 503 X (over udp)".into(),
                retry_after: Some(Duration::from_secs(30))
            }
        );
        for s in [408, 480, 486, 500, 504] {
            assert_eq!(classify(&resp(s, ""), "tcp").label(), "transient", "{s}");
        }
        for s in [302, 400, 403, 404, 415, 488, 603] {
            let o = classify(&resp(s, ""), "tcp");
            assert!(
                matches!(&o, Outcome::Permanent { reason } if reason.contains(&s.to_string())),
                "{s}: {o:?}"
            );
        }
    }
}
