//! The ESME side of one SMPP 3.4 session (bind_transceiver, a window of submit_sm, enquire_link
//! keep-alive, throttling, delivery receipts, unbind) as a pure state machine.
//!
//! Sans-IO in the style of `codec::sip::transaction` and quinn-proto: no sockets, no clock
//! reads. Time is a parameter (`now: Instant`, any monotonic clock; tests pass a simulated one).
//! The driver (`binding::wap::session`)
//! * feeds what it reads to [`Esme::on_bytes`] (or end of stream to [`Esme::on_eof`]),
//! * hands submit requests to [`Esme::submit`] while [`Esme::can_submit`] says so,
//! * writes what [`Esme::poll_transmit`] returns and reports completion with [`Esme::on_written`]
//!   — output not written within the response timeout means the SMSC stopped reading: the
//!   session is dead (every write has a deadline),
//! * sleeps until [`Esme::poll_timeout`] and then calls [`Esme::handle_timeout`],
//! * takes [`Event`]s from [`Esme::poll_event`] until [`Event::Dead`], after which the machine is
//!   finished (a new connection gets a new machine).
//!
//! `T` is the caller's tag of a submit_sm (e.g. the channel its result goes to); it comes back
//! in exactly one [`Event::Answered`] or [`Event::Unanswered`].

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use bytes::{Buf, BytesMut};
use thiserror::Error;

use super::{Bind, Body, Header, Pdu, Receipt, Sm, SmppError, cmd, status};

/// Timers and limits of one session (from the `[[bindings.wap.smsc]]` account).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// Maximum outstanding submit_sm (at least 1).
    pub window: usize,
    /// submit_sm per second (token bucket holding one second's worth, at least one token);
    /// 0 = unlimited.
    pub throughput: f64,
    /// Silence on the link after which we send enquire_link.
    pub enquire_link: Duration,
    /// Wait for bind_transceiver_resp / submit_sm_resp / enquire_link_resp, and for a write to
    /// complete (Kannel `wait-ack`).
    pub response_timeout: Duration,
    /// Pause after ESME_RTHROTTLED / ESME_RMSGQFUL (Kannel pauses the link; protocol-facts §C.8).
    pub throttle_backoff: Duration,
    /// How long our unbind waits for unbind_resp.
    pub unbind_timeout: Duration,
}

/// Why a session ended. Every one of them makes the driver reconnect; [`Dead::is_transient`]
/// tells whether reconnecting can be expected to help.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Dead {
    #[error("connection closed by SMSC")]
    ClosedBySmsc,
    /// The length field is impossible: the stream cannot be resynchronised.
    #[error("garbage from SMSC: {0}")]
    Garbage(SmppError),
    #[error("bad PDU from SMSC: {0}")]
    BadPdu(SmppError),
    #[error("no bind_transceiver_resp")]
    NoBindResp,
    #[error("bind rejected: {name} (0x{status:02X})")]
    BindRejected { status: u32, name: &'static str },
    #[error("bind answered with generic_nack {0}")]
    BindNacked(&'static str),
    #[error("bind: {0}")]
    BindEncode(SmppError),
    #[error("enquire_link unanswered: dead link")]
    EnquireUnanswered,
    /// Output was not written within the response timeout: the SMSC stopped reading.
    #[error("write timed out: SMSC not reading for {0} ms")]
    WriteStalled(u64),
    #[error("unbound by SMSC")]
    UnboundBySmsc,
    /// Our unbind completed (or its wait ran out): the session ended on purpose.
    #[error("shutdown")]
    Shutdown,
    /// A transport error the driver saw (read/write failure, TLS alert, …).
    #[error("{0}")]
    Transport(String),
}

impl Dead {
    /// `false` for rejections of our credentials or bind: reconnecting repeats them.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            Dead::BindRejected { .. } | Dead::BindNacked(_) | Dead::BindEncode(_)
        )
    }
}

/// What became of a submit_sm that was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// ESME_ROK with the SMSC's message_id.
    Accepted(String),
    /// ESME_ROK without a message_id: it was taken, but receipts cannot be correlated.
    NoMessageId,
    /// Any other status (submit_sm_resp or generic_nack).
    Rejected(u32),
}

/// Handle of a delivery receipt whose deliver_sm_resp waits for [`Esme::receipt_done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptToken(Header);

/// Why [`Esme::submit`] did not send.
#[derive(Debug, PartialEq, Eq, Error)]
pub enum SubmitError<T> {
    /// Not bound, window full, throttled or no token: [`Esme::can_submit`] was false.
    #[error("session cannot submit now")]
    NotReady(T),
    #[error("submit_sm not encodable: {1}")]
    Encode(T, SmppError),
}

/// What the machine tells its driver.
#[derive(Debug, PartialEq)]
pub enum Event<T> {
    /// bind_transceiver_resp ESME_ROK: submits may flow.
    Bound,
    /// A submit_sm got its submit_sm_resp (or a generic_nack) after `latency`.
    Answered {
        tag: T,
        status: u32,
        latency: Duration,
        answer: Answer,
    },
    /// A submit_sm was written (or queued for writing) but never answered: the SMSC may or may
    /// not have it.
    Unanswered { tag: T, why: String },
    /// ESME_RTHROTTLED / ESME_RMSGQFUL: no submit before `until`.
    Throttled { until: Instant },
    /// A parsed delivery receipt. With a token, its deliver_sm_resp waits for
    /// [`Esme::receipt_done`]; without (intermediate states), it was acknowledged already.
    Receipt {
        receipt: Receipt,
        token: Option<ReceiptToken>,
    },
    /// A deliver_sm flagged as a receipt that could not be parsed (acknowledged anyway).
    UnparseableReceipt,
    /// A generic_nack that matches nothing we sent.
    StrayNack { status: u32 },
    /// The session is over; no further events. Unanswered submits were reported before.
    Dead(Dead),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Binding { seq: u32, deadline: Instant },
    Bound,
    Unbinding { deadline: Instant },
    Dead,
}

struct Outstanding<T> {
    tag: T,
    sent: Instant,
    deadline: Instant,
}

/// One ESME session over one connection.
pub struct Esme<T> {
    cfg: Config,
    state: State,
    seq: u32,
    rx: BytesMut,
    /// Encoded PDUs not yet handed to the driver.
    out: Vec<u8>,
    /// Since when output has been waiting (queued or handed out, not yet reported written).
    out_since: Option<Instant>,
    pending: HashMap<u32, Outstanding<T>>,
    last_rx: Instant,
    enquire: Option<(u32, Instant)>,
    throttle_until: Option<Instant>,
    tokens: f64,
    refill_at: Instant,
    events: VecDeque<Event<T>>,
}

impl<T> Esme<T> {
    /// A session on a fresh connection: queues bind_transceiver at once. `last_seq` is the last
    /// sequence number used (0 for none), so numbers keep increasing across reconnects.
    pub fn new(cfg: Config, bind: Bind, last_seq: u32, now: Instant) -> Self {
        let cap = bucket_capacity(cfg.throughput);
        let mut me = Self {
            cfg: Config {
                window: cfg.window.max(1),
                ..cfg
            },
            state: State::Dead,
            seq: last_seq,
            rx: BytesMut::with_capacity(8192),
            out: Vec::new(),
            out_since: None,
            pending: HashMap::new(),
            last_rx: now,
            enquire: None,
            throttle_until: None,
            tokens: cap,
            refill_at: now,
            events: VecDeque::new(),
        };
        let seq = me.next_seq();
        match me.queue(&Pdu::new(cmd::BIND_TRANSCEIVER, seq, Body::Bind(bind)), now) {
            Ok(()) => {
                me.state = State::Binding {
                    seq,
                    deadline: now + cfg.response_timeout,
                }
            }
            Err(e) => me.events.push_back(Event::Dead(Dead::BindEncode(e))),
        }
        me
    }

    /// The last sequence number used (hand it to the next session's [`Esme::new`]).
    pub fn last_sequence(&self) -> u32 {
        self.seq
    }

    pub fn is_bound(&self) -> bool {
        self.state == State::Bound
    }

    pub fn is_dead(&self) -> bool {
        self.state == State::Dead
    }

    /// submit_sm written and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn next_seq(&mut self) -> u32 {
        // Sequence numbers are 1..=0x7FFFFFFF (SMPP 3.4 §5.1.4).
        self.seq = if self.seq >= 0x7FFF_FFFF {
            1
        } else {
            self.seq + 1
        };
        self.seq
    }

    fn queue(&mut self, pdu: &Pdu, now: Instant) -> Result<(), SmppError> {
        let b = pdu.encode()?;
        if self.out.is_empty() && self.out_since.is_none() {
            self.out_since = Some(now);
        }
        self.out.extend_from_slice(&b);
        Ok(())
    }

    fn refill(&mut self, now: Instant) {
        let rate = self.cfg.throughput;
        if rate > 0.0 {
            let cap = bucket_capacity(rate);
            let dt = now.saturating_duration_since(self.refill_at).as_secs_f64();
            self.tokens = (self.tokens + dt * rate).min(cap);
        }
        self.refill_at = self.refill_at.max(now);
    }

    fn throttled(&self, now: Instant) -> bool {
        self.throttle_until.is_some_and(|t| t > now)
    }

    /// Whether [`Esme::submit`] would send now: bound, window not full, not throttled, a token.
    pub fn can_submit(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.state == State::Bound
            && self.pending.len() < self.cfg.window
            && !self.throttled(now)
            && (self.cfg.throughput <= 0.0 || self.tokens >= 1.0)
    }

    /// Queues a submit_sm; returns its sequence number. Its response deadline starts now.
    pub fn submit(&mut self, sm: Sm, tag: T, now: Instant) -> Result<u32, SubmitError<T>> {
        if !self.can_submit(now) {
            return Err(SubmitError::NotReady(tag));
        }
        // Encode before taking a sequence number or a token: a PDU that cannot be built costs
        // nothing.
        let probe = Pdu::new(cmd::SUBMIT_SM, 0, Body::Sm(sm));
        let mut bytes = match probe.encode() {
            Ok(b) => b,
            Err(e) => return Err(SubmitError::Encode(tag, e)),
        };
        let seq = self.next_seq();
        bytes[12..16].copy_from_slice(&seq.to_be_bytes());
        if self.out.is_empty() && self.out_since.is_none() {
            self.out_since = Some(now);
        }
        self.out.extend_from_slice(&bytes);
        if self.cfg.throughput > 0.0 {
            self.tokens -= 1.0;
        }
        self.pending.insert(
            seq,
            Outstanding {
                tag,
                sent: now,
                deadline: now + self.cfg.response_timeout,
            },
        );
        Ok(seq)
    }

    /// Octets to write now, if any. The write deadline runs from when they were queued until
    /// [`Esme::on_written`].
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.out))
    }

    /// Everything handed out by [`Esme::poll_transmit`] has been written.
    pub fn on_written(&mut self, now: Instant) {
        // Output queued meanwhile gets a full deadline of its own.
        self.out_since = (!self.out.is_empty()).then_some(now);
    }

    /// When the output waiting now must have been written by.
    pub fn write_deadline(&self) -> Option<Instant> {
        self.out_since.map(|t| t + self.cfg.response_timeout)
    }

    /// The next instant [`Esme::handle_timeout`] has something to do; `None` once dead.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut wake = match self.state {
            State::Dead => return None,
            State::Binding { deadline, .. } | State::Unbinding { deadline } => deadline,
            State::Bound => {
                let mut w = self
                    .enquire
                    .map_or(self.last_rx + self.cfg.enquire_link, |(_, d)| d);
                if let Some(d) = self.pending.values().map(|p| p.deadline).min() {
                    w = w.min(d);
                }
                if let Some(t) = self.throttle_until {
                    w = w.min(t);
                }
                let rate = self.cfg.throughput;
                if rate > 0.0 && self.tokens < 1.0 {
                    let need = ((1.0 - self.tokens) / rate).max(0.0005);
                    w = w.min(self.refill_at + Duration::from_secs_f64(need));
                }
                w
            }
        };
        if let Some(d) = self.write_deadline() {
            wake = wake.min(d);
        }
        Some(wake)
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Dead {
            return;
        }
        if self.write_deadline().is_some_and(|d| d <= now) {
            let ms = self.cfg.response_timeout.as_millis() as u64;
            return self.die(Dead::WriteStalled(ms));
        }
        self.refill(now);
        match self.state {
            State::Binding { deadline, .. } if deadline <= now => self.die(Dead::NoBindResp),
            State::Unbinding { deadline } if deadline <= now => self.die(Dead::Shutdown),
            State::Bound => {
                if self.enquire.is_some_and(|(_, d)| d <= now) {
                    return self.die(Dead::EnquireUnanswered);
                }
                let mut expired: Vec<u32> = self
                    .pending
                    .iter()
                    .filter(|(_, p)| p.deadline <= now)
                    .map(|(s, _)| *s)
                    .collect();
                expired.sort_unstable();
                for s in expired {
                    if let Some(p) = self.pending.remove(&s) {
                        self.events.push_back(Event::Unanswered {
                            tag: p.tag,
                            why: format!(
                                "no submit_sm_resp within {} ms",
                                self.cfg.response_timeout.as_millis()
                            ),
                        });
                    }
                }
                if self.throttle_until.is_some_and(|t| t <= now) {
                    self.throttle_until = None;
                }
                if self.enquire.is_none() && now >= self.last_rx + self.cfg.enquire_link {
                    let seq = self.next_seq();
                    if self
                        .queue(&Pdu::new(cmd::ENQUIRE_LINK, seq, Body::Empty), now)
                        .is_ok()
                    {
                        self.enquire = Some((seq, now + self.cfg.response_timeout));
                    }
                }
            }
            _ => {}
        }
    }

    /// Octets read from the SMSC.
    pub fn on_bytes(&mut self, data: &[u8], now: Instant) {
        if self.state == State::Dead {
            return;
        }
        self.last_rx = now;
        self.rx.extend_from_slice(data);
        while self.state != State::Dead {
            let len = match super::frame_len(&self.rx) {
                Ok(Some(l)) => l,
                Ok(None) => return,
                Err(e) => return self.die(Dead::Garbage(e)),
            };
            if self.rx.len() < len {
                return;
            }
            let pdu = Pdu::decode(&self.rx[..len]);
            self.rx.advance(len);
            match pdu {
                Ok(p) => self.on_pdu(p, now),
                Err(e) => return self.die(Dead::BadPdu(e)),
            }
        }
    }

    /// The SMSC closed the connection.
    pub fn on_eof(&mut self) {
        if self.state != State::Dead {
            self.die(Dead::ClosedBySmsc);
        }
    }

    /// The driver's transport failed (read/write error): the session is over.
    pub fn on_transport_error(&mut self, what: String) {
        if self.state != State::Dead {
            self.die(Dead::Transport(what));
        }
    }

    /// Starts a graceful unbind (shutdown). Submits still outstanding are answered while we
    /// wait for unbind_resp, up to the unbind timeout; before bind the session just ends.
    pub fn unbind(&mut self, now: Instant) {
        match self.state {
            State::Bound => {
                let seq = self.next_seq();
                if self
                    .queue(&Pdu::new(cmd::UNBIND, seq, Body::Empty), now)
                    .is_err()
                {
                    return self.die(Dead::Shutdown);
                }
                self.state = State::Unbinding {
                    deadline: now + self.cfg.unbind_timeout,
                };
            }
            State::Binding { .. } => self.die(Dead::Shutdown),
            State::Unbinding { .. } | State::Dead => {}
        }
    }

    /// The caller's verdict on a receipt: `committed` ⇒ deliver_sm_resp ESME_ROK; otherwise
    /// ESME_RX_T_APPN so the SMSC delivers it again later (SMPP 3.4 §5.1.3).
    pub fn receipt_done(&mut self, token: ReceiptToken, committed: bool, now: Instant) {
        if self.state != State::Bound {
            return; // the SMSC redelivers unacknowledged receipts after the next bind
        }
        let st = if committed {
            status::ROK
        } else {
            status::RX_T_APPN
        };
        let _ = self.queue(
            &Pdu::response(&token.0, st, Body::IdResp(String::new())),
            now,
        );
    }

    pub fn poll_event(&mut self) -> Option<Event<T>> {
        self.events.pop_front()
    }

    /// Ends the session: every outstanding submit becomes unanswered, then [`Event::Dead`].
    fn die(&mut self, why: Dead) {
        // Only a goodbye to the SMSC's own unbind is still worth writing.
        if why != Dead::UnboundBySmsc {
            self.out.clear();
            self.out_since = None;
        }
        let mut seqs: Vec<u32> = self.pending.keys().copied().collect();
        seqs.sort_unstable();
        for s in seqs {
            if let Some(p) = self.pending.remove(&s) {
                self.events.push_back(Event::Unanswered {
                    tag: p.tag,
                    why: format!("session ended: {why}"),
                });
            }
        }
        self.state = State::Dead;
        self.enquire = None;
        self.events.push_back(Event::Dead(why));
    }

    fn on_pdu(&mut self, pdu: Pdu, now: Instant) {
        let h = pdu.header;
        match self.state {
            State::Dead => {}
            State::Binding { seq, .. } => {
                if h.command_id == cmd::BIND_TRANSCEIVER | cmd::RESP && h.sequence == seq {
                    if h.status != status::ROK {
                        return self.die(Dead::BindRejected {
                            status: h.status,
                            name: super::status_name(h.status),
                        });
                    }
                    self.state = State::Bound;
                    self.last_rx = now;
                    self.events.push_back(Event::Bound);
                } else if h.command_id == cmd::GENERIC_NACK {
                    self.die(Dead::BindNacked(super::status_name(h.status)));
                }
                // Anything else before the bind completes is ignored.
            }
            State::Unbinding { .. } => match h.command_id {
                c if c == cmd::UNBIND | cmd::RESP => self.die(Dead::Shutdown),
                c if c == cmd::SUBMIT_SM | cmd::RESP => self.on_submit_resp(pdu, now),
                // Requests while we leave stay unanswered; receipts come again next bind.
                _ => {}
            },
            State::Bound => self.on_bound_pdu(pdu, now),
        }
    }

    fn on_submit_resp(&mut self, pdu: Pdu, now: Instant) {
        let h = pdu.header;
        let nack = h.command_id == cmd::GENERIC_NACK;
        if self.enquire.is_some_and(|(s, _)| s == h.sequence) {
            self.enquire = None;
        }
        let Some(p) = self.pending.remove(&h.sequence) else {
            if nack {
                self.events.push_back(Event::StrayNack { status: h.status });
            }
            return;
        };
        let answer = if h.status == status::ROK && !nack {
            match pdu.body {
                Body::IdResp(id) if !id.is_empty() => Answer::Accepted(id),
                _ => Answer::NoMessageId,
            }
        } else {
            if h.status == status::RTHROTTLED || h.status == status::RMSGQFUL {
                let until = now + self.cfg.throttle_backoff;
                self.throttle_until = Some(until);
                self.events.push_back(Event::Throttled { until });
            }
            Answer::Rejected(h.status)
        };
        self.events.push_back(Event::Answered {
            tag: p.tag,
            status: h.status,
            latency: now.saturating_duration_since(p.sent),
            answer,
        });
    }

    fn on_bound_pdu(&mut self, pdu: Pdu, now: Instant) {
        let h = pdu.header;
        match h.command_id {
            c if c == cmd::SUBMIT_SM | cmd::RESP || c == cmd::GENERIC_NACK => {
                self.on_submit_resp(pdu, now)
            }
            c if c == cmd::ENQUIRE_LINK | cmd::RESP
                && self.enquire.is_some_and(|(s, _)| s == h.sequence) =>
            {
                self.enquire = None;
            }
            cmd::ENQUIRE_LINK => {
                let _ = self.queue(&Pdu::response(&h, status::ROK, Body::Empty), now);
            }
            cmd::DELIVER_SM => {
                if let Body::Sm(sm) = &pdu.body
                    && super::is_receipt(sm)
                {
                    match super::parse_receipt(sm) {
                        Some(receipt) => {
                            // A final receipt is acknowledged only once the caller has
                            // committed it: if we die first, the SMSC delivers it again.
                            let token = receipt.delivered.map(|_| ReceiptToken(h));
                            let needs_ack = token.is_some();
                            self.events.push_back(Event::Receipt { receipt, token });
                            if needs_ack {
                                return;
                            }
                        }
                        None => self.events.push_back(Event::UnparseableReceipt),
                    }
                }
                let _ = self.queue(
                    &Pdu::response(&h, status::ROK, Body::IdResp(String::new())),
                    now,
                );
            }
            cmd::UNBIND => {
                let _ = self.queue(&Pdu::response(&h, status::ROK, Body::Empty), now);
                self.die(Dead::UnboundBySmsc);
            }
            c if c & cmd::RESP == 0 => {
                // A request we do not implement: generic_nack (SMPP 3.4 §4.3).
                let nack = Pdu {
                    header: Header {
                        command_id: cmd::GENERIC_NACK,
                        status: status::RINVCMDID,
                        sequence: h.sequence,
                    },
                    body: Body::Empty,
                };
                let _ = self.queue(&nack, now);
            }
            _ => {}
        }
    }
}

/// Token bucket capacity: one second of throughput, at least one token (0 = no bucket).
fn bucket_capacity(rate: f64) -> f64 {
    if rate > 0.0 { rate.max(1.0) } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESP: Duration = Duration::from_millis(400);
    const ENQ: Duration = Duration::from_secs(10);

    fn cfg() -> Config {
        Config {
            window: 2,
            throughput: 0.0,
            enquire_link: ENQ,
            response_timeout: RESP,
            throttle_backoff: Duration::from_secs(1),
            unbind_timeout: Duration::from_millis(300),
        }
    }

    fn bind() -> Bind {
        Bind {
            system_id: "esme".into(),
            password: "pw".into(),
            system_type: String::new(),
            interface_version: super::super::INTERFACE_VERSION,
            addr_ton: 0,
            addr_npi: 0,
            address_range: String::new(),
        }
    }

    /// A simulated clock: `at(ms)` is `ms` after the test's epoch.
    struct Clock(Instant);
    impl Clock {
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    /// Decodes everything the machine wants written and reports it written.
    fn sent(m: &mut Esme<u32>, now: Instant) -> Vec<Pdu> {
        let mut out = Vec::new();
        if let Some(b) = m.poll_transmit() {
            let mut rest = &b[..];
            while !rest.is_empty() {
                let len = super::super::frame_len(rest).unwrap().unwrap();
                out.push(Pdu::decode(&rest[..len]).unwrap());
                rest = &rest[len..];
            }
            m.on_written(now);
        }
        out
    }

    fn events(m: &mut Esme<u32>) -> Vec<Event<u32>> {
        std::iter::from_fn(|| m.poll_event()).collect()
    }

    fn feed(m: &mut Esme<u32>, p: Pdu, now: Instant) {
        m.on_bytes(&p.encode().unwrap(), now);
    }

    fn resp(command_id: u32, seq: u32, st: u32, body: Body) -> Pdu {
        Pdu {
            header: Header {
                command_id,
                status: st,
                sequence: seq,
            },
            body,
        }
    }

    fn submit_resp(seq: u32, st: u32, id: &str) -> Pdu {
        resp(cmd::SUBMIT_SM | cmd::RESP, seq, st, Body::IdResp(id.into()))
    }

    /// A machine bound at t = 0 with `cfg`.
    fn bound(c: Config) -> (Esme<u32>, Clock) {
        let clock = Clock(Instant::now());
        let mut m = Esme::new(c, bind(), 0, clock.at(0));
        let out = sent(&mut m, clock.at(0));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].header.command_id, cmd::BIND_TRANSCEIVER);
        assert!(!m.can_submit(clock.at(0)), "no submit before bind_resp");
        let seq = out[0].header.sequence;
        feed(
            &mut m,
            resp(
                cmd::BIND_TRANSCEIVER | cmd::RESP,
                seq,
                0,
                Body::IdResp("SMSC".into()),
            ),
            clock.at(0),
        );
        assert_eq!(events(&mut m), vec![Event::Bound]);
        (m, clock)
    }

    fn dead_reason(evs: &[Event<u32>]) -> Option<&Dead> {
        match evs.last() {
            Some(Event::Dead(d)) => Some(d),
            _ => None,
        }
    }

    #[test]
    fn bind_rejected_and_bind_timeout_end_the_session() {
        let clock = Clock(Instant::now());
        let mut m: Esme<u32> = Esme::new(cfg(), bind(), 0, clock.at(0));
        let seq = sent(&mut m, clock.at(0))[0].header.sequence;
        feed(
            &mut m,
            resp(cmd::BIND_TRANSCEIVER | cmd::RESP, seq, 0x0E, Body::Empty),
            clock.at(5),
        );
        let evs = events(&mut m);
        let d = dead_reason(&evs).unwrap();
        assert_eq!(d.to_string(), "bind rejected: ESME_RINVPASWD (0x0E)");
        assert!(!d.is_transient());

        let mut m: Esme<u32> = Esme::new(cfg(), bind(), 0, clock.at(0));
        sent(&mut m, clock.at(0));
        assert_eq!(m.poll_timeout(), Some(clock.at(400)));
        m.handle_timeout(clock.at(399));
        assert!(events(&mut m).is_empty());
        m.handle_timeout(clock.at(400));
        assert_eq!(events(&mut m), vec![Event::Dead(Dead::NoBindResp)]);
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn bytes_read_together_with_bind_resp_are_not_lost() {
        let clock = Clock(Instant::now());
        let mut m: Esme<u32> = Esme::new(cfg(), bind(), 0, clock.at(0));
        let seq = sent(&mut m, clock.at(0))[0].header.sequence;
        let mut b = resp(cmd::BIND_TRANSCEIVER | cmd::RESP, seq, 0, Body::Empty)
            .encode()
            .unwrap();
        b.extend(
            Pdu::new(cmd::ENQUIRE_LINK, 9, Body::Empty)
                .encode()
                .unwrap(),
        );
        m.on_bytes(&b, clock.at(1));
        assert_eq!(events(&mut m), vec![Event::Bound]);
        let out = sent(&mut m, clock.at(1));
        assert_eq!(out[0].header.command_id, cmd::ENQUIRE_LINK | cmd::RESP);
    }

    #[test]
    fn window_full_refuses_submits_until_a_response_frees_a_slot() {
        let (mut m, c) = bound(cfg());
        let s1 = m.submit(Sm::default(), 1, c.at(1)).unwrap();
        let s2 = m.submit(Sm::default(), 2, c.at(1)).unwrap();
        assert!(!m.can_submit(c.at(2)));
        assert_eq!(
            m.submit(Sm::default(), 3, c.at(2)),
            Err(SubmitError::NotReady(3))
        );
        let out = sent(&mut m, c.at(2));
        assert_eq!(out.len(), 2, "the refused submit was not written");
        assert_eq!(m.in_flight(), 2);
        feed(&mut m, submit_resp(s2, 0, "ABC"), c.at(50));
        assert_eq!(
            events(&mut m),
            vec![Event::Answered {
                tag: 2,
                status: 0,
                latency: Duration::from_millis(49),
                answer: Answer::Accepted("ABC".into())
            }]
        );
        assert!(m.can_submit(c.at(50)));
        assert!(m.submit(Sm::default(), 3, c.at(50)).is_ok());
        assert!(!m.can_submit(c.at(50)));
        feed(&mut m, submit_resp(s1, 0, ""), c.at(60));
        assert!(matches!(
            events(&mut m).as_slice(),
            [Event::Answered {
                tag: 1,
                answer: Answer::NoMessageId,
                ..
            }]
        ));
    }

    #[test]
    fn throttled_answer_pauses_submits_for_the_backoff() {
        let (mut m, c) = bound(cfg());
        let s = m.submit(Sm::default(), 1, c.at(0)).unwrap();
        sent(&mut m, c.at(0));
        feed(&mut m, submit_resp(s, status::RTHROTTLED, ""), c.at(10));
        let evs = events(&mut m);
        assert_eq!(evs[0], Event::Throttled { until: c.at(1010) });
        assert!(matches!(
            evs[1],
            Event::Answered {
                tag: 1,
                status: status::RTHROTTLED,
                answer: Answer::Rejected(status::RTHROTTLED),
                ..
            }
        ));
        assert!(!m.can_submit(c.at(1009)), "paused while throttled");
        assert_eq!(m.poll_timeout(), Some(c.at(1010)));
        m.handle_timeout(c.at(1010));
        assert!(m.can_submit(c.at(1010)));
    }

    #[test]
    fn token_bucket_spaces_submits() {
        let (mut m, c) = bound(Config {
            throughput: 2.0,
            window: 10,
            ..cfg()
        });
        // Capacity is one second's worth: 2 at once, then one every 500 ms.
        assert!(m.submit(Sm::default(), 1, c.at(0)).is_ok());
        assert!(m.submit(Sm::default(), 2, c.at(0)).is_ok());
        assert!(!m.can_submit(c.at(0)));
        assert_eq!(m.poll_timeout(), Some(c.at(400)), "response deadline first");
        assert!(!m.can_submit(c.at(499)));
        assert!(m.can_submit(c.at(500)));
        assert!(m.submit(Sm::default(), 3, c.at(500)).is_ok());
        assert!(!m.can_submit(c.at(700)));
    }

    #[test]
    fn missing_response_is_unanswered_after_the_timeout_and_the_session_lives_on() {
        let (mut m, c) = bound(cfg());
        let s = m.submit(Sm::default(), 7, c.at(100)).unwrap();
        sent(&mut m, c.at(100));
        assert_eq!(m.poll_timeout(), Some(c.at(500)));
        m.handle_timeout(c.at(499));
        assert!(events(&mut m).is_empty());
        m.handle_timeout(c.at(500));
        assert_eq!(
            events(&mut m),
            vec![Event::Unanswered {
                tag: 7,
                why: "no submit_sm_resp within 400 ms".into()
            }]
        );
        assert!(m.is_bound());
        assert_eq!(m.in_flight(), 0);
        // A late answer matches nothing and changes nothing.
        feed(&mut m, submit_resp(s, 0, "LATE"), c.at(600));
        assert!(events(&mut m).is_empty());
    }

    #[test]
    fn enquire_link_after_silence_and_dead_link_when_unanswered() {
        let (mut m, c) = bound(cfg());
        assert_eq!(m.poll_timeout(), Some(c.at(10_000)));
        m.handle_timeout(c.at(10_000));
        let out = sent(&mut m, c.at(10_000));
        assert_eq!(out[0].header.command_id, cmd::ENQUIRE_LINK);
        // Answered: the link lives, the next one comes after another silence.
        feed(
            &mut m,
            resp(
                cmd::ENQUIRE_LINK | cmd::RESP,
                out[0].header.sequence,
                0,
                Body::Empty,
            ),
            c.at(10_050),
        );
        assert!(events(&mut m).is_empty());
        assert_eq!(m.poll_timeout(), Some(c.at(20_050)));
        m.handle_timeout(c.at(20_050));
        let out = sent(&mut m, c.at(20_050));
        assert_eq!(out[0].header.command_id, cmd::ENQUIRE_LINK);
        let s = m.submit(Sm::default(), 1, c.at(20_100));
        assert!(s.is_ok());
        sent(&mut m, c.at(20_100));
        // Silence: dead within enquire_link + response timeout of the last byte received.
        assert_eq!(m.poll_timeout(), Some(c.at(20_450)));
        m.handle_timeout(c.at(20_450));
        let evs = events(&mut m);
        assert_eq!(
            evs,
            vec![
                Event::Unanswered {
                    tag: 1,
                    why: "session ended: enquire_link unanswered: dead link".into()
                },
                Event::Dead(Dead::EnquireUnanswered)
            ]
        );
        assert!(m.is_dead());
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn smsc_enquire_link_is_answered_and_counts_as_traffic() {
        let (mut m, c) = bound(cfg());
        feed(
            &mut m,
            Pdu::new(cmd::ENQUIRE_LINK, 77, Body::Empty),
            c.at(9_000),
        );
        let out = sent(&mut m, c.at(9_000));
        assert_eq!(out[0].header.command_id, cmd::ENQUIRE_LINK | cmd::RESP);
        assert_eq!(out[0].header.sequence, 77);
        assert_eq!(m.poll_timeout(), Some(c.at(19_000)));
    }

    #[test]
    fn smsc_that_stops_reading_kills_the_session_at_the_write_deadline() {
        // The SMSC floods enquire_link while reading nothing: the answers pile up unwritten.
        let (mut m, c) = bound(cfg());
        let s = m.submit(Sm::default(), 1, c.at(0)).unwrap();
        sent(&mut m, c.at(0));
        feed(&mut m, submit_resp(s, 0, "1"), c.at(1));
        events(&mut m);
        for i in 0..5u32 {
            feed(
                &mut m,
                Pdu::new(cmd::ENQUIRE_LINK, 100 + i, Body::Empty),
                c.at(10 + u64::from(i)),
            );
        }
        // The driver took the bytes but the write never completes (no on_written).
        let out = m.poll_transmit().unwrap();
        assert_eq!(out.len(), 5 * 16);
        assert_eq!(m.write_deadline(), Some(c.at(410)));
        assert_eq!(m.poll_timeout(), Some(c.at(410)));
        m.handle_timeout(c.at(409));
        assert!(events(&mut m).is_empty());
        m.handle_timeout(c.at(410));
        assert_eq!(events(&mut m), vec![Event::Dead(Dead::WriteStalled(400))]);
        assert_eq!(m.poll_transmit(), None, "nothing more is written");

        // Same when the output is never even taken.
        let (mut m, c) = bound(cfg());
        feed(
            &mut m,
            Pdu::new(cmd::ENQUIRE_LINK, 5, Body::Empty),
            c.at(20),
        );
        m.submit(Sm::default(), 9, c.at(30)).unwrap();
        m.handle_timeout(c.at(420));
        let evs = events(&mut m);
        assert!(
            matches!(&evs[0], Event::Unanswered { tag: 9, why } if why.contains("write timed out"))
        );
        assert_eq!(evs[1], Event::Dead(Dead::WriteStalled(400)));
    }

    #[test]
    fn garbage_and_undecodable_pdus_end_the_session() {
        let (mut m, c) = bound(cfg());
        m.submit(Sm::default(), 1, c.at(0)).unwrap();
        sent(&mut m, c.at(0));
        m.on_bytes(b"THIS IS NOT SMPP AT ALL\r\n", c.at(5));
        let evs = events(&mut m);
        assert!(
            matches!(&evs[0], Event::Unanswered { tag: 1, why } if why.starts_with("session ended: garbage from SMSC"))
        );
        assert!(matches!(evs[1], Event::Dead(Dead::Garbage(_))));

        // Well framed, but the body is truncated.
        let (mut m, c) = bound(cfg());
        let mut b = vec![0, 0, 0, 17];
        b.extend_from_slice(&cmd::DELIVER_SM.to_be_bytes());
        b.extend_from_slice(&[0; 8]);
        b.push(b'x');
        m.on_bytes(&b, c.at(5));
        assert!(matches!(
            events(&mut m).as_slice(),
            [Event::Dead(Dead::BadPdu(_))]
        ));
    }

    #[test]
    fn split_reads_are_reassembled() {
        let (mut m, c) = bound(cfg());
        let s = m.submit(Sm::default(), 1, c.at(0)).unwrap();
        sent(&mut m, c.at(0));
        let b = submit_resp(s, 0, "ABC").encode().unwrap();
        for byte in &b {
            m.on_bytes(std::slice::from_ref(byte), c.at(3));
        }
        assert!(matches!(
            events(&mut m).as_slice(),
            [Event::Answered { tag: 1, .. }]
        ));
    }

    #[test]
    fn unknown_request_gets_generic_nack_and_stray_nack_is_reported() {
        let (mut m, c) = bound(cfg());
        feed(
            &mut m,
            Pdu::new(0x0000_0103, 42, Body::Other(vec![])),
            c.at(1),
        );
        let out = sent(&mut m, c.at(1));
        assert_eq!(out[0].header.command_id, cmd::GENERIC_NACK);
        assert_eq!(out[0].header.status, status::RINVCMDID);
        assert_eq!(out[0].header.sequence, 42);
        feed(
            &mut m,
            resp(cmd::GENERIC_NACK, 999, status::RINVCMDLEN, Body::Empty),
            c.at(2),
        );
        assert_eq!(
            events(&mut m),
            vec![Event::StrayNack {
                status: status::RINVCMDLEN
            }]
        );
        assert!(m.is_bound());
    }

    #[test]
    fn unbind_by_the_smsc_is_answered_and_ends_the_session() {
        let (mut m, c) = bound(cfg());
        m.submit(Sm::default(), 1, c.at(0)).unwrap();
        sent(&mut m, c.at(0));
        feed(&mut m, Pdu::new(cmd::UNBIND, 3, Body::Empty), c.at(10));
        let evs = events(&mut m);
        assert!(
            matches!(&evs[0], Event::Unanswered { tag: 1, why } if why == "session ended: unbound by SMSC")
        );
        assert_eq!(evs[1], Event::Dead(Dead::UnboundBySmsc));
        let out = sent(&mut m, c.at(10));
        assert_eq!(out.len(), 1, "the unbind_resp is still written");
        assert_eq!(out[0].header.command_id, cmd::UNBIND | cmd::RESP);
        assert_eq!(out[0].header.sequence, 3);
    }

    #[test]
    fn our_unbind_collects_answers_then_ends_on_unbind_resp_or_timeout() {
        let (mut m, c) = bound(cfg());
        let s1 = m.submit(Sm::default(), 1, c.at(0)).unwrap();
        m.submit(Sm::default(), 2, c.at(0)).unwrap();
        sent(&mut m, c.at(0));
        m.unbind(c.at(10));
        assert!(!m.can_submit(c.at(10)));
        let out = sent(&mut m, c.at(10));
        assert_eq!(out[0].header.command_id, cmd::UNBIND);
        let unbind_seq = out[0].header.sequence;
        feed(&mut m, submit_resp(s1, 0, "A1"), c.at(20));
        // Requests from the SMSC while we leave are not answered.
        feed(
            &mut m,
            Pdu::new(cmd::ENQUIRE_LINK, 8, Body::Empty),
            c.at(21),
        );
        assert_eq!(m.poll_transmit(), None);
        feed(
            &mut m,
            resp(cmd::UNBIND | cmd::RESP, unbind_seq, 0, Body::Empty),
            c.at(30),
        );
        let evs = events(&mut m);
        assert!(matches!(
            &evs[0],
            Event::Answered { tag: 1, answer: Answer::Accepted(id), .. } if id == "A1"
        ));
        assert!(
            matches!(&evs[1], Event::Unanswered { tag: 2, why } if why == "session ended: shutdown")
        );
        assert_eq!(evs[2], Event::Dead(Dead::Shutdown));

        // No unbind_resp: the session ends at the unbind timeout.
        let (mut m, c) = bound(cfg());
        m.unbind(c.at(0));
        sent(&mut m, c.at(0));
        assert_eq!(m.poll_timeout(), Some(c.at(300)));
        m.handle_timeout(c.at(300));
        assert_eq!(events(&mut m), vec![Event::Dead(Dead::Shutdown)]);
    }

    fn receipt_pdu(seq: u32, id: &str, stat: &str) -> Pdu {
        Pdu::new(
            cmd::DELIVER_SM,
            seq,
            Body::Sm(Sm {
                esm_class: 0x04,
                short_message: format!(
                    "id:{id} sub:001 dlvrd:001 submit date:2611240500 done date:2611240501 stat:{stat} err:000 text:"
                )
                .into_bytes(),
                ..Default::default()
            }),
        )
    }

    fn receipt_token(evs: &[Event<u32>]) -> ReceiptToken {
        evs.iter()
            .find_map(|e| match e {
                Event::Receipt {
                    token: Some(t),
                    receipt,
                } => {
                    assert_eq!(receipt.delivered, Some(true));
                    Some(*t)
                }
                _ => None,
            })
            .expect("a receipt waiting for its verdict")
    }

    #[test]
    fn receipt_before_and_after_its_submit_sm_resp_is_acked_only_on_the_verdict() {
        // Before: some SMSCs send the receipt ahead of the submit_sm_resp.
        let (mut m, c) = bound(cfg());
        let s = m.submit(Sm::default(), 1, c.at(0)).unwrap();
        sent(&mut m, c.at(0));
        feed(&mut m, receipt_pdu(500, "ABC", "DELIVRD"), c.at(5));
        let evs = events(&mut m);
        let tok = receipt_token(&evs);
        assert_eq!(
            m.poll_transmit(),
            None,
            "no deliver_sm_resp before the verdict"
        );
        feed(&mut m, submit_resp(s, 0, "ABC"), c.at(6));
        assert!(matches!(
            events(&mut m).as_slice(),
            [Event::Answered {
                tag: 1,
                answer: Answer::Accepted(_),
                ..
            }]
        ));
        m.receipt_done(tok, true, c.at(50));
        let out = sent(&mut m, c.at(50));
        assert_eq!(out[0].header.command_id, cmd::DELIVER_SM | cmd::RESP);
        assert_eq!(out[0].header.sequence, 500);
        assert_eq!(out[0].header.status, status::ROK);

        // After, and not recorded: ESME_RX_T_APPN so the SMSC delivers it again.
        let s = m.submit(Sm::default(), 2, c.at(60)).unwrap();
        sent(&mut m, c.at(60));
        feed(&mut m, submit_resp(s, 0, "DEF"), c.at(61));
        feed(&mut m, receipt_pdu(501, "DEF", "DELIVRD"), c.at(62));
        let evs = events(&mut m);
        let tok = receipt_token(&evs);
        m.receipt_done(tok, false, c.at(70));
        let out = sent(&mut m, c.at(70));
        assert_eq!(out[0].header.sequence, 501);
        assert_eq!(out[0].header.status, status::RX_T_APPN);
    }

    #[test]
    fn intermediate_and_unparseable_receipts_and_plain_deliver_sm_are_acked_at_once() {
        let (mut m, c) = bound(cfg());
        feed(&mut m, receipt_pdu(10, "A", "ENROUTE"), c.at(1));
        feed(
            &mut m,
            Pdu::new(
                cmd::DELIVER_SM,
                11,
                Body::Sm(Sm {
                    esm_class: 0x04,
                    short_message: b"nothing useful".to_vec(),
                    ..Default::default()
                }),
            ),
            c.at(2),
        );
        feed(
            &mut m,
            Pdu::new(cmd::DELIVER_SM, 12, Body::Sm(Sm::default())),
            c.at(3),
        );
        let evs = events(&mut m);
        assert!(
            matches!(&evs[0], Event::Receipt { token: None, receipt } if receipt.state == "ENROUTE")
        );
        assert_eq!(evs[1], Event::UnparseableReceipt);
        assert_eq!(evs.len(), 2);
        let seqs: Vec<_> = sent(&mut m, c.at(3))
            .iter()
            .map(|p| (p.header.command_id, p.header.sequence))
            .collect();
        let r = cmd::DELIVER_SM | cmd::RESP;
        assert_eq!(seqs, vec![(r, 10), (r, 11), (r, 12)]);
    }

    #[test]
    fn sequence_numbers_wrap_to_one_and_continue_across_sessions() {
        let clock = Clock(Instant::now());
        let mut m: Esme<u32> = Esme::new(cfg(), bind(), 0x7FFF_FFFD, clock.at(0));
        let bind_seq = sent(&mut m, clock.at(0))[0].header.sequence;
        assert_eq!(bind_seq, 0x7FFF_FFFE);
        feed(
            &mut m,
            resp(cmd::BIND_TRANSCEIVER | cmd::RESP, bind_seq, 0, Body::Empty),
            clock.at(0),
        );
        events(&mut m);
        assert_eq!(m.submit(Sm::default(), 1, clock.at(0)), Ok(0x7FFF_FFFF));
        assert_eq!(m.submit(Sm::default(), 2, clock.at(0)), Ok(1));
        let out = sent(&mut m, clock.at(0));
        assert_eq!(out[1].header.sequence, 1);
        feed(&mut m, submit_resp(1, 0, "X"), clock.at(1));
        assert!(matches!(
            events(&mut m).as_slice(),
            [Event::Answered { tag: 2, .. }]
        ));
        assert_eq!(m.last_sequence(), 1);
    }

    #[test]
    fn unencodable_submit_costs_no_sequence_number() {
        let (mut m, c) = bound(cfg());
        let before = m.last_sequence();
        let bad = Sm {
            short_message: vec![0; 300],
            ..Default::default()
        };
        assert!(matches!(
            m.submit(bad, 1, c.at(0)),
            Err(SubmitError::Encode(1, _))
        ));
        assert_eq!(m.last_sequence(), before);
        assert_eq!(m.in_flight(), 0);
        assert_eq!(m.poll_transmit(), None);
    }

    #[test]
    fn eof_and_transport_errors_end_the_session_with_outstanding_submits_unanswered() {
        let (mut m, c) = bound(cfg());
        m.submit(Sm::default(), 1, c.at(0)).unwrap();
        m.on_eof();
        let evs = events(&mut m);
        assert!(
            matches!(&evs[0], Event::Unanswered { tag: 1, why } if why == "session ended: connection closed by SMSC")
        );
        assert_eq!(evs[1], Event::Dead(Dead::ClosedBySmsc));
        m.on_transport_error("read: reset".into());
        assert!(events(&mut m).is_empty(), "dead once");
    }
}
