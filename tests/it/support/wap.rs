//! Helpers of the WAP binding's integration tests: pcap writing, tshark, the npm SMSC
//! simulator, deliveries.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use dmpushd::binding::{ContentType, Delivery, DeviceBinding, WapBearer};

pub use super::{fixture_path as fixture, wait_until};

pub fn sms_target(msisdn: &str) -> DeviceBinding {
    DeviceBinding::Wap {
        msisdn: Some(msisdn.parse().unwrap()),
        bearer: WapBearer::Sms,
        address: None,
        secure: false,
    }
}

/// A delivery valid for a day: the SMPP tests check the relative validity period derived from
/// it.
pub fn delivery(target: DeviceBinding, ct: ContentType, body: &[u8]) -> Delivery {
    let mut d = super::delivery(target, ct, body);
    d.push_id = "p-test".into();
    d.expires_at = d.now + time::Duration::hours(24);
    d
}

/// The 39-octet General Package #0 of protocol-facts §D.8 (any valid bytes do for transport).
pub fn pkg0() -> Vec<u8> {
    hex::decode(concat!(
        "d3290f1cbc08ea0e45867199db5cfcdf",
        "03280000001234",
        "0f636f6d2e6578616d706c652e646d73"
    ))
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// pcap (classic libpcap, Ethernet/IPv4)
// ---------------------------------------------------------------------------------------------

fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn ether(ip: Vec<u8>) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend(ip);
    f
}

pub fn udp_frame(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    ether(ipv4(17, &u))
}

/// A TCP flow (handshake, then one segment per message) from client to server.
pub fn tcp_flow(cport: u16, sport: u16, msgs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let seg = |from_client: bool, seq: u32, ack: u32, flags: u8, data: &[u8]| {
        let (a, b) = if from_client {
            (cport, sport)
        } else {
            (sport, cport)
        };
        let mut t = Vec::new();
        t.extend_from_slice(&a.to_be_bytes());
        t.extend_from_slice(&b.to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&ack.to_be_bytes());
        t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(data);
        ether(ipv4(6, &t))
    };
    let (mut c, s) = (1000u32, 5000u32);
    let mut frames = vec![
        seg(true, c, 0, 0x02, &[]),
        seg(false, s, c + 1, 0x12, &[]),
        seg(true, c + 1, s + 1, 0x10, &[]),
    ];
    c += 1;
    for m in msgs {
        frames.push(seg(true, c, s + 1, 0x18, m));
        c += m.len() as u32;
        frames.push(seg(false, s + 1, c, 0x10, &[]));
    }
    frames
}

pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        out.extend_from_slice(&((i as u32) * 1000).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).unwrap();
}

/// `tshark -r pcap -d … -Y filter -T fields -e …`, one Vec per output line.
pub fn tshark_fields(
    pcap: &Path,
    decode_as: &[&str],
    filter: &str,
    fields: &[&str],
) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap);
    for d in decode_as {
        cmd.args(["-d", d]);
    }
    cmd.args([
        "-Y",
        filter,
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = run_bounded(cmd, 60);
    String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// tshark's JSON with raw bytes (`-T json -x`): the hex of the first `<proto>_raw` per packet.
pub fn tshark_raw(pcap: &Path, decode_as: &[&str], filter: &str, proto: &str) -> Vec<Vec<u8>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap);
    for d in decode_as {
        cmd.args(["-d", d]);
    }
    cmd.args(["-Y", filter, "-T", "json", "-x"]);
    let out = run_bounded(cmd, 60);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("tshark JSON");
    let key = format!("{proto}_raw");
    fn find<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(x) = m.get(key) {
                    let first = if let serde_json::Value::Array(a) = x {
                        a.first()
                    } else {
                        Some(x)
                    };
                    if let Some(serde_json::Value::String(s)) = first {
                        return Some(s);
                    }
                    if let Some(serde_json::Value::Array(a)) = first
                        && let Some(serde_json::Value::String(s)) = a.first()
                    {
                        return Some(s);
                    }
                }
                m.values().find_map(|x| find(x, key))
            }
            serde_json::Value::Array(a) => a.iter().find_map(|x| find(x, key)),
            _ => None,
        }
    }
    v.as_array()
        .map(|pkts| {
            pkts.iter()
                .filter_map(|p| find(p, &key))
                .map(|h| hex::decode(h).expect("hex"))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs a peer command with a time bound; returns stdout, panics with stderr on failure.
pub fn run_bounded(mut cmd: Command, secs: u64) -> Vec<u8> {
    use std::io::Read;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peer");
    // Drain the pipes concurrently so a large output cannot block the child.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = t_out.join().unwrap();
    let err = t_err.join().unwrap();
    assert!(
        status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&err)
    );
    out
}

/// `wbxml2xml` of some WBXML (the XML as libwbxml renders it, canonical for comparisons).
pub fn wbxml2xml(wbxml: &[u8], dir: &Path, name: &str) -> String {
    let p = dir.join(format!("{name}.wbxml"));
    std::fs::write(&p, wbxml).unwrap();
    let mut cmd = Command::new("wbxml2xml");
    cmd.args(["-m", "0", "-o", "-"]).arg(&p);
    String::from_utf8(run_bounded(cmd, 30)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// npm smpp SMSC simulator
// ---------------------------------------------------------------------------------------------

pub struct Sim {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Sim {
    /// Starts `tests/peers/smpp/smsc-sim.js` on a free port with extra args.
    pub fn start(dir: &Path, extra: &[&str]) -> Sim {
        let script = super::repo_path("tests/peers/smpp/smsc-sim.js");
        assert!(
            super::repo_path("tests/peers/smpp/node_modules/smpp").is_dir(),
            "npm smpp missing: run scripts/install.d/wap.sh"
        );
        let log = dir.join(format!("smsc-{}.jsonl", rand_suffix()));
        let mut child = Command::new("node")
            .arg(&script)
            .args(["--port", "0", "--log"])
            .arg(&log)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("simulator did not report its port");
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected simulator output {line:?}"));
        Sim { child, port, log }
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn events_of(&self, event: &str) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == event)
            .collect()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.flush();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) * 1_000_003 + u64::from(std::process::id())
}

// ---------------------------------------------------------------------------------------------
// In-process scripted SMSC
// ---------------------------------------------------------------------------------------------

/// An in-process SMSC (transceiver binds only) that answers every `submit_sm` with the same
/// message id — as SMSCs that number per bind, wrap, or restart do — and sends delivery receipts
/// only when the test says so. Loopback only.
pub struct ScriptedSmsc {
    pub port: u16,
    /// `registered_delivery` of every submit_sm received, in order.
    submits: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    /// Writer of the current session (the latest bind).
    session: std::sync::Arc<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<Vec<u8>>>>>,
    /// deliver_sm_resp received (receipts the gateway acknowledged).
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ScriptedSmsc {
    pub async fn start(message_id: &str) -> ScriptedSmsc {
        use dmpushd::codec::smpp::{self, Body, Pdu, cmd};
        use std::sync::{Arc, Mutex, atomic::AtomicUsize};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let submits = Arc::new(Mutex::new(Vec::new()));
        let session = Arc::new(Mutex::new(None));
        let acked = Arc::new(AtomicUsize::new(0));
        let (sub2, ses2, ack2) = (submits.clone(), session.clone(), acked.clone());
        let id = message_id.to_owned();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
                *ses2.lock().unwrap() = Some(tx);
                let (sub, ack, id) = (sub2.clone(), ack2.clone(), id.clone());
                tokio::spawn(async move {
                    let mut buf = bytes::BytesMut::new();
                    loop {
                        tokio::select! {
                            Some(b) = rx.recv() => if s.write_all(&b).await.is_err() { return },
                            r = s.read_buf(&mut buf) => if !matches!(r, Ok(n) if n > 0) { return },
                        }
                        while let Ok(Some(len)) = smpp::frame_len(&buf) {
                            if buf.len() < len {
                                break;
                            }
                            let frame = buf.split_to(len);
                            let Ok(pdu) = Pdu::decode(&frame) else { return };
                            let h = pdu.header;
                            let reply = match (h.command_id, &pdu.body) {
                                (cmd::BIND_TRANSCEIVER, _) => {
                                    Some(Pdu::response(&h, 0, Body::IdResp("SCRIPTED".into())))
                                }
                                (cmd::ENQUIRE_LINK | cmd::UNBIND, _) => {
                                    Some(Pdu::response(&h, 0, Body::Empty))
                                }
                                (cmd::SUBMIT_SM, Body::Sm(sm)) => {
                                    sub.lock().unwrap().push(sm.registered_delivery);
                                    Some(Pdu::response(&h, 0, Body::IdResp(id.clone())))
                                }
                                (c, _) if c == cmd::DELIVER_SM | cmd::RESP => {
                                    ack.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                    None
                                }
                                _ => None,
                            };
                            if let Some(r) = reply
                                && s.write_all(&r.encode().unwrap()).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                });
            }
        });
        ScriptedSmsc {
            port,
            submits,
            session,
            acked,
        }
    }

    /// `registered_delivery` of the submits so far.
    pub fn submits(&self) -> Vec<u8> {
        self.submits.lock().unwrap().clone()
    }

    /// Receipts the gateway acknowledged (it does so only after committing them).
    pub fn acked(&self) -> usize {
        self.acked.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sends a delivery receipt for message `id` with final state `stat` (DELIVRD, UNDELIV, …).
    pub fn receipt(&self, id: &str, stat: &str) {
        use dmpushd::codec::smpp::{self, Body, Pdu, cmd};
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(50_000);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pdu = Pdu::new(
            cmd::DELIVER_SM,
            seq,
            Body::Sm(smpp::Sm {
                esm_class: 0x04,
                short_message: format!(
                    "id:{id} sub:001 dlvrd:000 submit date:2611240500 done date:2611240501 stat:{stat} err:000 text:"
                )
                .into_bytes(),
                ..Default::default()
            }),
        );
        let tx = self
            .session
            .lock()
            .unwrap()
            .clone()
            .expect("a bound session");
        tx.send(pdu.encode().unwrap()).unwrap();
    }
}
