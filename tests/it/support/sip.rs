//! Helpers for the SIP interop tests: running SIPp as a UAS, reading its message log, building
//! the binding and deliveries (`sip_*` and `api_sip`).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use dmpushd::binding::{
    Binding, BindingContext, ContentType, Delivery, DeviceBinding,
    sip::{SipConfig, build},
};

pub use super::free_port;

pub fn scenario(name: &str) -> PathBuf {
    super::repo_path("tests/peers/sip").join(name)
}

/// Is something bound to `port` on loopback (`/proc/net/udp`, or a TCP listener)?
pub fn port_bound(port: u16, tcp: bool) -> bool {
    let file = if tcp {
        "/proc/net/tcp"
    } else {
        "/proc/net/udp"
    };
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    let want = format!(":{port:04X}");
    text.lines().skip(1).any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.len() > 3 && cols[1].ends_with(&want) && (!tcp || cols[3] == "0A")
    })
}

pub struct Sipp {
    pub child: Child,
    pub dir: tempfile::TempDir,
    #[allow(dead_code)] // callers chose the port and still hold it
    pub port: u16,
}

impl Sipp {
    /// Starts `sipp` as a UAS on 127.0.0.1:`port` and waits (bounded) until it listens.
    pub fn start(
        sipp: &Path,
        tcp: bool,
        port: u16,
        scenario_file: &str,
        calls: u32,
        extra: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(sipp);
        cmd.current_dir(dir.path())
            .args(["-t", if tcp { "t1" } else { "u1" }])
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .arg("-sf")
            .arg(scenario(scenario_file))
            .args(["-m", &calls.to_string(), "-nostdin"])
            .args(["-trace_msg", "-message_file", "messages.log"])
            .args(["-trace_logs", "-log_file", "actions.log"])
            .args(["-trace_err", "-error_file", "errors.log"])
            // Bound the peer itself: it never outlives a stuck test by more than this.
            .args(["-timeout", "30s"])
            .args(extra)
            .stdout(Stdio::from(
                std::fs::File::create(dir.path().join("stdout.log")).expect("stdout"),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr.log")).expect("stderr"),
            ));
        let child = cmd.spawn().expect("spawn sipp");
        let mut s = Self { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !port_bound(port, tcp) {
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("sipp exited early ({st}): {}", s.file("stderr.log"));
            }
            assert!(Instant::now() < deadline, "sipp did not listen on {port}");
            std::thread::sleep(Duration::from_millis(10));
        }
        s
    }

    pub fn file(&self, name: &str) -> String {
        String::from_utf8_lossy(&self.raw(name)).into_owned()
    }

    pub fn raw(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Waits (bounded) for sipp to finish its `-m` calls and returns its exit status.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "sipp did not exit: {}\n{}",
                    self.file("stdout.log"),
                    self.file("errors.log")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Messages sipp received, from `-trace_msg`.
    pub fn received(&self) -> Vec<Received> {
        parse_message_log(&self.raw("messages.log"))
    }
}

/// One message from sipp's `-trace_msg` log.
#[derive(Debug)]
pub struct Received {
    /// `UDP` or `TCP`.
    pub proto: String,
    /// The byte count sipp read from the socket (`[N] bytes`).
    pub declared: usize,
    /// The message as logged. sipp logs it as a C string, so a body with a NUL octet is
    /// truncated there; `declared` still covers every byte received.
    pub logged: Vec<u8>,
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Parses sipp's `-message_file`: blocks `"<T> message received [N] bytes :\n\n"` followed by
/// the message, then a `-----` separator line.
pub fn parse_message_log(log: &[u8]) -> Vec<Received> {
    let marker = b" message received [";
    let sep = b"\n-----------------------------------------------";
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(p) = find(&log[i..], marker) {
        let start = i + p;
        let line_start = log[..start]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |n| n + 1);
        let proto = String::from_utf8_lossy(&log[line_start..start]).into_owned();
        let num_start = start + marker.len();
        let num_end = num_start + find(&log[num_start..], b"]").expect("]");
        let declared: usize = std::str::from_utf8(&log[num_start..num_end])
            .expect("utf8")
            .parse()
            .expect("length");
        let body_start = num_end + find(&log[num_end..], b"\n\n").expect("blank") + 2;
        let end = find(&log[body_start..], sep).map_or(log.len(), |e| body_start + e);
        let end = end.min(body_start + declared);
        out.push(Received {
            proto,
            declared,
            logged: log[body_start..end].to_vec(),
        });
        i = end;
    }
    out
}

pub fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Headers of a raw SIP message as `(name, value)`, and its body.
pub fn split_message(raw: &[u8]) -> (String, Vec<(String, String)>, Vec<u8>) {
    let end = find(raw, b"\r\n\r\n").expect("header end");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (first, headers, raw[end + 4..].to_vec())
}

pub fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub fn ctx() -> BindingContext {
    super::binding_context_unread()
}

pub async fn binding(cfg: &SipConfig) -> (Arc<dyn Binding>, prometheus::Registry) {
    let c = ctx();
    let b = build(cfg, &c).await.expect("build").expect("enabled");
    (b, c.registry)
}

pub fn delivery(uri: &str, content_type: ContentType, body: &[u8]) -> Delivery {
    let target = DeviceBinding::Sip {
        uri: uri.parse().unwrap(),
        gruu: None,
    };
    super::delivery(target, content_type, body)
}

/// A SyncML DM package (XML) of a realistic size.
pub const DM_XML: &str = r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>IMEI:493005100592800</LocURI></Target><Source><LocURI>https://dm.example.com/</LocURI></Source></SyncHdr><SyncBody><Final/></SyncBody></SyncML>"#;

/// Package #0 from protocol-facts §D.8 (39 octets: digest ‖ trigger), binary with high bytes.
pub const PKG0: [u8; 39] = [
    0xD3, 0x29, 0x0F, 0x1C, 0xBC, 0x08, 0xEA, 0x0E, 0x45, 0x86, 0x71, 0x99, 0xDB, 0x5C, 0xFC, 0xDF,
    0x03, 0x28, 0x00, 0x00, 0x00, 0x12, 0x34, 0x0F, 0x63, 0x6F, 0x6D, 0x2E, 0x65, 0x78, 0x61, 0x6D,
    0x70, 0x6C, 0x65, 0x2E, 0x64, 0x6D, 0x73,
];

/// Sum of a counter family in a registry, restricted to samples whose labels contain `labels`.
pub fn metric(reg: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for f in reg.gather().iter().filter(|f| f.name() == name) {
        let hist = f.get_field_type() == prometheus::proto::MetricType::HISTOGRAM;
        for m in f.get_metric() {
            let ok = labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            });
            if ok {
                sum += if hist {
                    m.get_histogram().get_sample_count() as f64
                } else {
                    m.get_counter().get_value()
                };
            }
        }
    }
    sum
}
