//! `dmpushd encode`: an operator tool around the codecs.
//!
//! * `dmpushd encode FILE.xml` — XML → WBXML, printed as hex.
//! * `dmpushd encode --decode FILE.wbxml` — WBXML (binary or hex text) → XML.
//! * `dmpushd encode --notification --server-id … --session-id … [--nonce-b64 …]` — build package #0
//!   (the password comes from `--server-password` or `DMPUSHD_SERVER_PASSWORD`), printed as hex.
//! * `dmpushd encode --decode --notification FILE` — package #0 → fields, plus the digest check when
//!   `--server-id`/password/nonce are given.
//! * `--sec NETWPIN|USERPIN|USERNETWPIN --imsi … --user-pin …` — also print the bootstrap MAC of the WBXML.
//! * `dmpushd encode --target '{"type":"wap","msisdn":"+49…"}' FILE` — the exact bytes a binding
//!   would send for FILE (issue 13 item 6): the WSP PDU, every SMS segment's UDH and user data and
//!   its `submit_sm` PDU, or the UDP datagram; the SIP MESSAGE; the OBEX packets; the HTTP request.
//!   `--target` takes one item of the API's `bindings`; `--config` supplies the binding settings
//!   (SMSC routes and modes, SIP From …); `--format hex|json`. Each binding's own pure planning
//!   code produces the bytes (the same code `/v1/pushes/preview` and delivery use).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine;

use crate::codec::{bootstrap, notification, wbxml};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct EncodeArgs {
    /// Input file: XML (encode) or WBXML / package #0, binary or hex text (with --decode).
    #[arg(value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Go the other way: WBXML → XML, or package #0 → fields.
    #[arg(long)]
    pub decode: bool,
    /// Work on a DM notification (General Package #0) instead of a WBXML document.
    #[arg(long)]
    pub notification: bool,
    /// WBXML version to write: 1.1, 1.2 or 1.3.
    #[arg(long, default_value = "1.3")]
    pub wbxml_version: String,
    /// Write every text inline (STR_I) instead of using the string table for repeats.
    #[arg(long)]
    pub no_string_table: bool,
    /// Package #0: server identifier (DMAcc ServerID).
    #[arg(long)]
    pub server_id: Option<String>,
    /// Package #0: server password (prefer the environment variable: argv is visible to others).
    #[arg(long, env = "DMPUSHD_SERVER_PASSWORD", hide_env_values = true)]
    pub server_password: Option<String>,
    /// Package #0: server nonce, base64 (as in NextNonce).
    #[arg(long, conflicts_with = "nonce_hex")]
    pub nonce_b64: Option<String>,
    /// Package #0: server nonce, hex.
    #[arg(long)]
    pub nonce_hex: Option<String>,
    /// Package #0: session id, decimal or 0x-hex.
    #[arg(long, default_value = "1")]
    pub session_id: String,
    /// Package #0: ui-mode: not-specified, background, informative, user-interaction.
    #[arg(long, default_value = "not-specified")]
    pub ui_mode: String,
    /// Package #0: initiator: server or client.
    #[arg(long, default_value = "server")]
    pub initiator: String,
    /// Package #0: version field (10 bits; 11 per DM 1.2.1 §6.2.2.6).
    #[arg(long, default_value_t = notification::DEFAULT_VERSION)]
    pub version: u16,
    /// Package #0: vendor-specific trigger body, hex.
    #[arg(long)]
    pub vendor_hex: Option<String>,
    /// Bootstrap: also print SEC and MAC for the WBXML (NETWPIN, USERPIN, USERNETWPIN).
    #[arg(long)]
    pub sec: Option<String>,
    /// Bootstrap: IMSI for NETWPIN / USERNETWPIN.
    #[arg(long)]
    pub imsi: Option<String>,
    /// Bootstrap: user PIN for USERPIN / USERNETWPIN.
    #[arg(long, env = "DMPUSHD_USER_PIN", hide_env_values = true)]
    pub user_pin: Option<String>,
    /// Wire mode: one binding object as in the API's `bindings` (JSON), e.g.
    /// `{"type":"wap","bearer":"sms","msisdn":"+491701234567"}`. FILE is the payload.
    #[arg(long, value_name = "JSON")]
    pub target: Option<String>,
    /// Wire mode: the payload's content type.
    #[arg(long, default_value = "application/vnd.syncml.dm+wbxml")]
    pub content_type: String,
    /// Wire mode: binding settings from this configuration file (default: built-in defaults,
    /// with one default-route SMSC when none is configured).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Wire mode: the push's time to live, for the SMPP validity_period.
    #[arg(long, default_value_t = 3600)]
    pub ttl_seconds: u64,
    /// Wire mode: `hex` (one labelled line per unit) or `json`.
    #[arg(long, default_value = "hex")]
    pub format: String,
}

/// Runs the tool and returns the text to print.
pub fn run(args: &EncodeArgs) -> anyhow::Result<String> {
    if args.target.is_some() {
        return super::encode_wire::run(args);
    }
    match (args.decode, args.notification) {
        (false, false) => encode_wbxml(args),
        (true, false) => decode_wbxml(args),
        (false, true) => build_notification(args),
        (true, true) => parse_notification(args),
    }
}

pub(super) fn read_input(args: &EncodeArgs) -> anyhow::Result<Vec<u8>> {
    let path = args.input.as_ref().context("an input FILE is required")?;
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Binary input, or hex text (whitespace and an optional 0x ignored) if the file is all hex digits.
fn binary_or_hex(raw: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let text: String = raw
        .iter()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|&b| b as char)
        .collect();
    let text = text.strip_prefix("0x").unwrap_or(&text);
    if !text.is_empty()
        && text.len().is_multiple_of(2)
        && text.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return hex::decode(text).context("hex input");
    }
    Ok(raw)
}

fn encode_wbxml(args: &EncodeArgs) -> anyhow::Result<String> {
    let xml = read_input(args)?;
    let doc = wbxml::xml::parse(&xml)?;
    let version = match args.wbxml_version.as_str() {
        "1.1" => 0x01,
        "1.2" => 0x02,
        "1.3" => 0x03,
        v => bail!("--wbxml-version {v}: expected 1.1, 1.2 or 1.3"),
    };
    let opts = wbxml::EncodeOptions {
        version,
        string_table: !args.no_string_table,
    };
    let bytes = wbxml::encode_with(&doc, &opts)?;
    let mut out = hex::encode_upper(&bytes);
    out.push('\n');
    if let Some(sec) = &args.sec {
        let sec: bootstrap::Sec = sec.parse()?;
        let km = bootstrap::KeyMaterial {
            imsi: args.imsi.clone(),
            user_pin: args.user_pin.clone(),
        };
        let mac = bootstrap::mac(sec, &km, &bytes)?;
        writeln!(out, "SEC={} (0x{:02X})", sec.name(), sec.code())?;
        writeln!(out, "MAC={mac}")?;
    }
    Ok(out)
}

fn decode_wbxml(args: &EncodeArgs) -> anyhow::Result<String> {
    let bytes = binary_or_hex(read_input(args)?)?;
    let mut xml = wbxml::wbxml_to_xml(&bytes)?;
    xml.push('\n');
    Ok(xml)
}

fn nonce(args: &EncodeArgs) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(b) = &args.nonce_b64 {
        return Ok(Some(
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .context("--nonce-b64")?,
        ));
    }
    if let Some(h) = &args.nonce_hex {
        return Ok(Some(hex::decode(h.trim()).context("--nonce-hex")?));
    }
    Ok(None)
}

fn parse_u16(s: &str) -> anyhow::Result<u16> {
    let s = s.trim();
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u16::from_str_radix(h, 16),
        None => s.parse(),
    };
    v.with_context(|| format!("{s:?} is not a 16-bit number"))
}

fn ui_mode(s: &str) -> anyhow::Result<notification::UiMode> {
    use notification::UiMode::*;
    Ok(match s {
        "not-specified" | "0" => NotSpecified,
        "background" | "1" => Background,
        "informative" | "2" => Informative,
        "user-interaction" | "3" => UserInteraction,
        _ => bail!("--ui-mode {s}: not-specified, background, informative or user-interaction"),
    })
}

fn ui_mode_name(m: notification::UiMode) -> &'static str {
    use notification::UiMode::*;
    match m {
        NotSpecified => "not-specified",
        Background => "background",
        Informative => "informative",
        UserInteraction => "user-interaction",
    }
}

fn build_notification(args: &EncodeArgs) -> anyhow::Result<String> {
    let server_id = args.server_id.clone().context("--server-id is required")?;
    let password = args
        .server_password
        .as_deref()
        .context("--server-password or DMPUSHD_SERVER_PASSWORD is required")?;
    let nonce = nonce(args)?.context("--nonce-b64 or --nonce-hex is required")?;
    let trigger = notification::Trigger {
        version: args.version,
        ui_mode: ui_mode(&args.ui_mode)?,
        initiator: match args.initiator.as_str() {
            "server" => notification::Initiator::Server,
            "client" | "user" => notification::Initiator::Client,
            i => bail!("--initiator {i}: server or client"),
        },
        session_id: parse_u16(&args.session_id)?,
        server_id,
        vendor: match &args.vendor_hex {
            Some(h) => hex::decode(h.trim()).context("--vendor-hex")?,
            None => Vec::new(),
        },
    };
    let bytes = notification::build(&trigger, password.as_bytes(), &nonce)?;
    Ok(format!("{}\n", hex::encode_upper(bytes)))
}

fn parse_notification(args: &EncodeArgs) -> anyhow::Result<String> {
    let bytes = binary_or_hex(read_input(args)?)?;
    let p = notification::parse(&bytes)?;
    let t = &p.trigger;
    let mut out = String::new();
    writeln!(out, "digest      {}", hex::encode_upper(p.digest))?;
    writeln!(out, "version     {}", t.version)?;
    writeln!(out, "ui-mode     {}", ui_mode_name(t.ui_mode))?;
    writeln!(
        out,
        "initiator   {}",
        match t.initiator {
            notification::Initiator::Server => "server",
            notification::Initiator::Client => "client",
        }
    )?;
    writeln!(out, "session-id  {} (0x{:04X})", t.session_id, t.session_id)?;
    writeln!(out, "server-id   {}", t.server_id)?;
    writeln!(out, "vendor      {}", hex::encode_upper(&t.vendor))?;
    let server_id = args.server_id.as_deref().unwrap_or(&t.server_id);
    match (args.server_password.as_deref(), nonce(args)?) {
        (Some(pw), Some(n)) => {
            let v = notification::verify(&bytes, server_id, pw.as_bytes(), &n);
            let text = match v {
                notification::Verification::Ok => "ok",
                notification::Verification::OkResyncNonce => {
                    "ok with the resynchronisation nonce (00000000)"
                }
                notification::Verification::Mismatch => "MISMATCH",
            };
            writeln!(out, "digest-check {text}")?;
        }
        _ => writeln!(
            out,
            "digest-check skipped (give --server-password and a nonce)"
        )?,
    }
    Ok(out)
}
