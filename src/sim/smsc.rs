//! The simulated SMSC: an SMPP 3.4 server (message centre side) over TCP, built on the project's
//! sans-IO codec `crate::codec::smpp`. It accepts binds, answers enquire_link and unbind, takes
//! submit_sm, hands each SMS to the simulated handset behind the destination MSISDN, and sends
//! delivery receipts when registered_delivery asks for them.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::BytesMut;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

use super::{
    Events,
    device::{self, DmCredentials, Reassembled, Reassembler},
};
use crate::codec::smpp::{self, Body, Pdu, Sm, cmd, status, tag};

/// Status codes the server side needs beyond those in the codec (SMPP 3.4 §5.1.3).
mod st {
    /// Incorrect BIND status for the given command.
    pub const RINVBNDSTS: u32 = 0x04;
    /// ESME already in bound state.
    pub const RALYBND: u32 = 0x05;
    /// Invalid password.
    pub const RINVPASWD: u32 = 0x0E;
    /// Invalid system id.
    pub const RINVSYSID: u32 = 0x0F;
}

/// SMSC behaviour knobs (from `SimArgs`).
#[derive(Clone)]
pub struct SmscOptions {
    pub system_id: Option<String>,
    pub password: Option<String>,
    /// Every submit_sm is answered with this status (0 = accept).
    pub submit_status: u32,
    /// Accept at most this many submit_sm per second; beyond that ESME_RTHROTTLED (0 = no limit).
    pub throttle_per_sec: u32,
    pub no_dlr: bool,
    pub dlr_delay: Duration,
    pub reassembly_timeout: Duration,
    /// DM credentials per MSISDN (digits only, no `+`), `*` = any.
    pub devices: HashMap<String, DmCredentials>,
}

/// Digits of an address, so `+4477…` (international TON) and `4477…` name the same handset.
pub fn msisdn_key(addr: &str) -> String {
    addr.trim().trim_start_matches('+').to_owned()
}

pub fn lookup<'a>(
    devices: &'a HashMap<String, DmCredentials>,
    key: &str,
) -> Option<&'a DmCredentials> {
    devices.get(key).or_else(|| devices.get("*"))
}

/// A session that can take deliver_sm: (session number, its writer queue).
type ReceiverSession = (u64, mpsc::Sender<Pdu>);

struct Shared {
    opts: SmscOptions,
    events: Events,
    next_id: AtomicU32,
    next_seq: AtomicU32,
    reassembler: Mutex<Reassembler>,
    /// Sessions that can receive deliver_sm (receiver / transceiver), by system_id.
    receivers: Mutex<HashMap<String, Vec<ReceiverSession>>>,
    /// Start of the current one-second throttle window (opened by the first submit in it) and
    /// the submits accepted in it.
    throttle: Mutex<(Option<Instant>, u32)>,
    next_session: AtomicU32,
}

/// Starts the SMSC on `listener`; runs until `shutdown`.
pub fn spawn(
    listener: TcpListener,
    opts: SmscOptions,
    events: Events,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let shared = Arc::new(Shared {
        reassembler: Mutex::new(Reassembler::new(opts.reassembly_timeout)),
        opts,
        events,
        // Message ids start from a random point so two runs do not reuse ids (receipts are
        // correlated by id).
        next_id: AtomicU32::new(rand::random::<u32>() >> 4),
        next_seq: AtomicU32::new(1),
        receivers: Mutex::new(HashMap::new()),
        throttle: Mutex::new((None, 0)),
        next_session: AtomicU32::new(1),
    });
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    // Responses are small writes: without this, Nagle holds each one until the
                    // previous is acknowledged and the simulator, not the ESME, sets the pace.
                    let _ = tcp.set_nodelay(true);
                    let sh = shared.clone();
                    let stop = shutdown.clone();
                    tokio::spawn(async move { session(sh, tcp, peer, stop).await });
                }
                Err(e) => {
                    shared.events.emit(
                        "smsc",
                        json!({"event": "accept_error", "error": e.to_string()}),
                    );
                    // Accept errors (EMFILE…) are transient; pause instead of spinning.
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BindKind {
    Transmitter,
    Receiver,
    Transceiver,
}

impl BindKind {
    fn name(self) -> &'static str {
        match self {
            Self::Transmitter => "transmitter",
            Self::Receiver => "receiver",
            Self::Transceiver => "transceiver",
        }
    }
}

async fn session(sh: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, shutdown: CancellationToken) {
    let sid = u64::from(sh.next_session.fetch_add(1, Ordering::Relaxed));
    sh.events.emit(
        "smsc",
        json!({"event": "connect", "session": sid, "peer": peer.to_string()}),
    );
    let (mut rd, mut wr) = tcp.into_split();
    // Every PDU this session sends (responses and receipts) goes through one writer task, so
    // receipts from timers never interleave with responses mid-PDU.
    let (tx, mut rx) = mpsc::channel::<Pdu>(256);
    let writer = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let Ok(bytes) = p.encode() else { continue };
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
            if p.header.command_id == cmd::UNBIND | cmd::RESP {
                let _ = wr.shutdown().await;
                return;
            }
        }
    });
    let mut bound: Option<(BindKind, String)> = None;
    let mut buf = BytesMut::with_capacity(4096);
    let reason = 'conn: loop {
        // Parse every complete PDU in the buffer.
        loop {
            let len = match smpp::frame_len(&buf) {
                Ok(Some(l)) if buf.len() >= l => l,
                Ok(_) => break,
                Err(e) => {
                    let nack = Pdu {
                        header: smpp::Header {
                            command_id: cmd::GENERIC_NACK,
                            status: status::RINVCMDLEN,
                            sequence: 0,
                        },
                        body: Body::Empty,
                    };
                    let _ = tx.send(nack).await;
                    break 'conn format!("framing error: {e}");
                }
            };
            let frame = buf.split_to(len);
            let pdu = match Pdu::decode(&frame) {
                Ok(p) => p,
                Err(e) => {
                    let seq = frame
                        .get(12..16)
                        .and_then(|s| <[u8; 4]>::try_from(s).ok())
                        .map(u32::from_be_bytes)
                        .unwrap_or(0);
                    sh.events.emit(
                        "smsc",
                        json!({"event": "bad_pdu", "session": sid, "error": e.to_string()}),
                    );
                    let _ = tx
                        .send(Pdu {
                            header: smpp::Header {
                                command_id: cmd::GENERIC_NACK,
                                status: status::RSYSERR,
                                sequence: seq,
                            },
                            body: Body::Empty,
                        })
                        .await;
                    continue;
                }
            };
            match handle(&sh, sid, &tx, &mut bound, pdu).await {
                Flow::Continue => {}
                Flow::Close(r) => break 'conn r,
            }
        }
        let read = tokio::select! {
            _ = shutdown.cancelled() => break 'conn "simulator shutting down".to_owned(),
            r = rd.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) => break 'conn "peer closed the connection".to_owned(),
            Ok(_) => {}
            Err(e) => break 'conn format!("read error: {e}"),
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
    };
    if let Ok(mut r) = sh.receivers.lock() {
        for list in r.values_mut() {
            list.retain(|(id, _)| *id != sid);
        }
    }
    drop(tx);
    // The writer ends when every sender is gone (receipt timers hold clones for a bounded delay).
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    sh.events.emit(
        "smsc",
        json!({"event": "disconnect", "session": sid, "reason": reason}),
    );
}

enum Flow {
    Continue,
    Close(String),
}

async fn handle(
    sh: &Arc<Shared>,
    sid: u64,
    tx: &mpsc::Sender<Pdu>,
    bound: &mut Option<(BindKind, String)>,
    pdu: Pdu,
) -> Flow {
    let h = pdu.header;
    let reply = |status: u32, body: Body| Pdu::response(&h, status, body);
    match (h.command_id, pdu.body) {
        (cmd::BIND_TRANSMITTER | cmd::BIND_RECEIVER | cmd::BIND_TRANSCEIVER, Body::Bind(b)) => {
            let kind = match h.command_id {
                cmd::BIND_TRANSMITTER => BindKind::Transmitter,
                cmd::BIND_RECEIVER => BindKind::Receiver,
                _ => BindKind::Transceiver,
            };
            let status = if bound.is_some() {
                st::RALYBND
            } else if sh
                .opts
                .system_id
                .as_deref()
                .is_some_and(|s| s != b.system_id)
            {
                st::RINVSYSID
            } else if sh.opts.password.as_deref().is_some_and(|p| p != b.password) {
                st::RINVPASWD
            } else {
                status::ROK
            };
            // The password itself is never logged.
            sh.events.emit(
                "smsc",
                json!({"event": "bind", "session": sid, "kind": kind.name(),
                       "system_id": b.system_id, "interface_version": format!("0x{:02X}", b.interface_version),
                       "status": smpp::status_name(status)}),
            );
            let _ = tx
                .send(reply(status, Body::IdResp("dmpushd-sim".into())))
                .await;
            if status == st::RALYBND {
                // The existing bind stays; only the second bind is refused.
                return Flow::Continue;
            }
            if status != status::ROK {
                return Flow::Close(format!("bind refused: {}", smpp::status_name(status)));
            }
            if kind != BindKind::Transmitter
                && let Ok(mut r) = sh.receivers.lock()
            {
                r.entry(b.system_id.clone())
                    .or_default()
                    .push((sid, tx.clone()));
            }
            *bound = Some((kind, b.system_id));
        }
        (cmd::ENQUIRE_LINK, _) => {
            let _ = tx.send(reply(status::ROK, Body::Empty)).await;
        }
        (cmd::UNBIND, _) => {
            sh.events
                .emit("smsc", json!({"event": "unbind", "session": sid}));
            let _ = tx.send(reply(status::ROK, Body::Empty)).await;
            return Flow::Close("unbind".into());
        }
        (cmd::SUBMIT_SM, Body::Sm(sm)) => {
            let system_id = match bound {
                Some((BindKind::Transmitter | BindKind::Transceiver, s)) => s.clone(),
                _ => {
                    let _ = tx
                        .send(reply(st::RINVBNDSTS, Body::IdResp(String::new())))
                        .await;
                    return Flow::Continue;
                }
            };
            submit(sh, sid, tx, &h, sm, &system_id).await;
        }
        (id, _) if id & cmd::RESP != 0 => {
            // deliver_sm_resp / enquire_link_resp from the ESME: nothing to do.
        }
        (id, _) => {
            sh.events.emit(
                "smsc",
                json!({"event": "unsupported_command", "session": sid, "command_id": format!("0x{id:08X}")}),
            );
            let _ = tx
                .send(Pdu {
                    header: smpp::Header {
                        command_id: cmd::GENERIC_NACK,
                        status: status::RINVCMDID,
                        sequence: h.sequence,
                    },
                    body: Body::Empty,
                })
                .await;
        }
    }
    Flow::Continue
}

fn throttled(sh: &Shared) -> bool {
    let limit = sh.opts.throttle_per_sec;
    if limit == 0 {
        return false;
    }
    let Ok(mut t) = sh.throttle.lock() else {
        return false;
    };
    let now = Instant::now();
    if t.0
        .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1))
    {
        *t = (Some(now), 0);
    }
    if t.1 >= limit {
        return true;
    }
    t.1 += 1;
    false
}

async fn submit(
    sh: &Arc<Shared>,
    sid: u64,
    tx: &mpsc::Sender<Pdu>,
    h: &smpp::Header,
    sm: Sm,
    system_id: &str,
) {
    let status = if sh.opts.submit_status != 0 {
        sh.opts.submit_status
    } else if throttled(sh) {
        status::RTHROTTLED
    } else {
        status::ROK
    };
    let id = if status == status::ROK {
        format!("{:08x}", sh.next_id.fetch_add(1, Ordering::Relaxed))
    } else {
        String::new()
    };
    sh.events.emit(
        "smsc",
        json!({"event": "submit_sm", "session": sid, "to": sm.dest_addr, "from": sm.source_addr,
               "esm_class": format!("0x{:02X}", sm.esm_class),
               "data_coding": format!("0x{:02X}", sm.data_coding),
               "registered_delivery": sm.registered_delivery,
               "validity_period": sm.validity_period,
               "short_message_hex": hex::encode(&sm.short_message),
               "status": smpp::status_name(status), "message_id": id}),
    );
    let _ = tx
        .send(Pdu::response(h, status, Body::IdResp(id.clone())))
        .await;
    if status != status::ROK {
        return;
    }
    deliver_to_handset(sh, &sm);
    // registered_delivery bits 0–1 (SMPP 3.4 §5.2.17): 01 = receipt on final outcome,
    // 10 = receipt on failure only (this SMSC always delivers, so none).
    if sh.opts.no_dlr || sm.registered_delivery & 0x03 != 0x01 {
        return;
    }
    let sh2 = sh.clone();
    let system_id = system_id.to_owned();
    let own = tx.clone();
    let delay = sh.opts.dlr_delay;
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        send_receipt(&sh2, &system_id, own, &sm, &id).await;
    });
}

/// The receipt (SMPP 3.4 §4.6.1, esm_class 0x04; text form of Appendix B plus the
/// receipted_message_id and message_state TLVs of §5.3.2.12 / §5.3.2.35).
pub fn receipt_pdu(sequence: u32, sm: &Sm, id: &str, now: time::OffsetDateTime) -> Pdu {
    let date = format!(
        "{:02}{:02}{:02}{:02}{:02}",
        now.year().rem_euclid(100),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute()
    );
    let text = format!(
        "id:{id} sub:001 dlvrd:001 submit date:{date} done date:{date} stat:DELIVRD err:000 text:"
    );
    let mut rid = id.as_bytes().to_vec();
    rid.push(0);
    Pdu::new(
        cmd::DELIVER_SM,
        sequence,
        Body::Sm(Sm {
            source_ton: sm.dest_ton,
            source_npi: sm.dest_npi,
            source_addr: sm.dest_addr.clone(),
            dest_ton: sm.source_ton,
            dest_npi: sm.source_npi,
            dest_addr: sm.source_addr.clone(),
            esm_class: 0x04,
            short_message: text.into_bytes(),
            tlvs: vec![
                smpp::Tlv {
                    tag: tag::RECEIPTED_MESSAGE_ID,
                    value: rid,
                },
                // message_state 2 = DELIVERED (SMPP 3.4 §5.2.28).
                smpp::tlv_u8(tag::MESSAGE_STATE, 2),
            ],
            ..Sm::default()
        }),
    )
}

async fn send_receipt(sh: &Shared, system_id: &str, own: mpsc::Sender<Pdu>, sm: &Sm, id: &str) {
    let seq = sh.next_seq.fetch_add(1, Ordering::Relaxed);
    let pdu = receipt_pdu(seq, sm, id, time::OffsetDateTime::now_utc());
    // A transceiver gets its receipts on its own session; a transmitter's go to a receiver session
    // bound with the same system_id.
    let mut targets: Vec<mpsc::Sender<Pdu>> = match sh.receivers.lock() {
        Ok(r) => r
            .get(system_id)
            .map(|l| l.iter().map(|(_, t)| t.clone()).collect())
            .unwrap_or_default(),
        Err(_) => vec![],
    };
    if let Some(i) = targets.iter().position(|t| t.same_channel(&own)) {
        targets.swap(0, i);
    }
    for t in targets {
        if t.send(pdu.clone()).await.is_ok() {
            sh.events.emit(
                "smsc",
                json!({"event": "receipt", "message_id": id, "to": sm.source_addr, "stat": "DELIVRD"}),
            );
            return;
        }
    }
    sh.events.emit(
        "smsc",
        json!({"event": "receipt_undeliverable", "message_id": id, "reason": "no receiver session bound"}),
    );
}

/// The handset behind `sm.dest_addr` receives the SMS: reassembly, then the client rules.
fn deliver_to_handset(sh: &Shared, sm: &Sm) {
    let to = msisdn_key(&sm.dest_addr);
    let unit = match device::sms_unit(sm) {
        Ok(u) => u,
        Err(reason) => {
            sh.events.emit(
                "device",
                json!({"event": "wap_push", "bearer": "sms", "to": to, "routed": "discarded", "reason": reason}),
            );
            return;
        }
    };
    let concat = unit.concat;
    let now = Instant::now();
    let result = match sh.reassembler.lock() {
        Ok(mut r) => {
            for gone in r.expire(now) {
                sh.events.emit(
                    "device",
                    json!({"event": "reassembly_timeout", "bearer": "sms", "message": gone}),
                );
            }
            r.push(&to, &sm.source_addr, unit, now)
        }
        Err(_) => return,
    };
    match result {
        Reassembled::Pending { have, total } => sh.events.emit(
            "device",
            json!({"event": "segment", "bearer": "sms", "to": to, "have": have, "total": total,
                   "reference": concat.map(|c| c.0), "ref_bits": concat.map(|c| if c.1 { 16 } else { 8 })}),
        ),
        Reassembled::Duplicate => sh.events.emit(
            "device",
            json!({"event": "duplicate_segment", "bearer": "sms", "to": to}),
        ),
        Reassembled::Complete {
            dest_port,
            datagram,
            parts,
        } => {
            let creds = lookup(&sh.opts.devices, &to);
            let mut v = device::wdp_datagram(dest_port, &datagram, creds);
            if let Some(o) = v.as_object_mut() {
                o.insert("event".into(), json!("wap_push"));
                o.insert("bearer".into(), json!("sms"));
                o.insert("to".into(), json!(to));
                o.insert("from".into(), json!(sm.source_addr));
                o.insert("segments".into(), json!(parts));
                if let Some((_, wide, _, _)) = concat {
                    o.insert("ref_bits".into(), json!(if wide { 16 } else { 8 }));
                }
                o.insert("datagram_hex".into(), json!(hex::encode(&datagram)));
            }
            sh.events.emit("device", v);
        }
    }
}
