//! SIP URIs, the MESSAGE request builder and the response parser.
//!
//! Only what a MESSAGE UAC needs: we build requests and parse responses. The parser is strict
//! about framing (`Content-Length`, RFC 3261 §18.3 / §20.14) and lenient about what it does not
//! use; it never panics and every error names the byte offset.

use std::fmt::Write as _;

/// Largest message we accept from a peer (responses to a MESSAGE carry no body, RFC 3428 §7;
/// anything this big is an attack or a bug).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// RFC 3261 §18.1.1: a request larger than this (when the path MTU is unknown) MUST go over a
/// congestion-controlled transport.
pub const UDP_MAX_REQUEST: usize = 1300;

/// The magic cookie every RFC 3261 branch starts with (§8.1.1.7).
pub const BRANCH_COOKIE: &str = "z9hG4bK";

/// Transport protocol of one hop (RFC 3261 §18).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The token in the Via sent-protocol (§20.42).
    pub fn via_token(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
        }
    }

    /// Lower-case label (metrics, `transport=` URI parameter).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Some(Self::Udp),
            "tcp" => Some(Self::Tcp),
            "tls" => Some(Self::Tls),
            _ => None,
        }
    }

    /// Reliable transports have no Timer E retransmissions (§17.1.2.2).
    pub fn reliable(self) -> bool {
        !matches!(self, Self::Udp)
    }

    /// Default port (§19.1.2): 5060 for sip:, 5061 for TLS.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Tls => 5061,
            _ => 5060,
        }
    }
}

/// A parsed `sip:` / `sips:` URI (RFC 3261 §19.1). Header components (`?…`) are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipUri {
    pub secure: bool,
    pub user: Option<String>,
    /// Host as written (IPv6 references keep their brackets).
    pub host: String,
    pub port: Option<u16>,
    /// URI parameters, names lower-cased.
    pub params: Vec<(String, Option<String>)>,
    /// The URI text exactly as given (used verbatim as Request-URI).
    pub raw: String,
}

/// Errors of URI handling and response parsing. `offset` is the byte offset in the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid SIP URI at byte {offset}: {what}")]
    Uri { offset: usize, what: &'static str },
    #[error("invalid status line at byte {offset}: {what}")]
    StatusLine { offset: usize, what: &'static str },
    #[error("invalid header at byte {offset}: {what}")]
    Header { offset: usize, what: &'static str },
    #[error("invalid Content-Length at byte {offset}")]
    ContentLength { offset: usize },
    #[error("body shorter than Content-Length {declared} (have {have}) at byte {offset}")]
    Truncated {
        offset: usize,
        declared: usize,
        have: usize,
    },
    #[error("message exceeds {MAX_MESSAGE} bytes at byte {offset}")]
    TooLarge { offset: usize },
    #[error(
        "missing mandatory header {name} (message starts at byte 0, headers end at byte {offset})"
    )]
    Missing { offset: usize, name: &'static str },
    #[error("not a response (a request?) at byte {offset}")]
    NotResponse { offset: usize },
}

impl SipUri {
    /// Parses `sip:` or `sips:` URIs. `tel:` is handled by [`tel_to_sip`].
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        let (secure, rest, base) = if let Some(r) = strip_prefix_ci(s, "sips:") {
            (true, r, 5)
        } else if let Some(r) = strip_prefix_ci(s, "sip:") {
            (false, r, 4)
        } else {
            return Err(ParseError::Uri {
                offset: 0,
                what: "scheme is not sip: or sips:",
            });
        };
        if rest
            .bytes()
            .any(|b| b <= b' ' || b == b'<' || b == b'>' || b == b'"')
        {
            let off = rest
                .bytes()
                .position(|b| b <= b' ' || b == b'<' || b == b'>' || b == b'"')
                .unwrap_or(0);
            return Err(ParseError::Uri {
                offset: base + off,
                what: "forbidden character",
            });
        }
        // Headers (`?…`) are not used for MESSAGE targets.
        let rest = rest.split('?').next().unwrap_or("");
        let (userinfo, hostpart, host_off) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..], base + at + 1),
            None => (None, rest, base),
        };
        let user = match userinfo {
            Some(u) => {
                let u = u.split(':').next().unwrap_or("");
                if u.is_empty() {
                    return Err(ParseError::Uri {
                        offset: base,
                        what: "empty user part",
                    });
                }
                Some(u.to_string())
            }
            None => None,
        };
        let mut parts = hostpart.split(';');
        let hostport = parts.next().unwrap_or("");
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let end = v6.find(']').ok_or(ParseError::Uri {
                offset: host_off,
                what: "unterminated IPv6 reference",
            })?;
            let host = &hostport[..end + 2];
            let after = &v6[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(parse_port(p, host_off + end + 3)?),
                None if after.is_empty() => None,
                None => {
                    return Err(ParseError::Uri {
                        offset: host_off + end + 2,
                        what: "junk after IPv6 reference",
                    });
                }
            };
            (host.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(parse_port(p, host_off + h.len() + 1)?)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
        {
            return Err(ParseError::Uri {
                offset: host_off,
                what: "invalid host",
            });
        }
        let params = parts
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
                None => (p.to_ascii_lowercase(), None),
            })
            .collect();
        Ok(Self {
            secure,
            user,
            host,
            port,
            params,
            raw: s.to_string(),
        })
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_deref())
    }

    /// Transport this URI asks for: sips: → TLS (§19.1.2); else its `transport=` parameter.
    pub fn transport(&self) -> Option<Transport> {
        if self.secure {
            return Some(Transport::Tls);
        }
        self.param("transport").flatten().and_then(Transport::parse)
    }

    /// Host without IPv6 brackets, for resolution and TLS server names.
    pub fn host_unbracketed(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }
}

fn parse_port(p: &str, offset: usize) -> Result<u16, ParseError> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ParseError::Uri {
            offset,
            what: "invalid port",
        }),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len()
        && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Maps a `tel:` URI to `sip:<number>@<domain>;user=phone` (RFC 3261 §19.1.6). Visual separators
/// (`-`, `.`, `(`, `)`) are removed as RFC 3966 §5.1.1 allows; tel parameters are dropped.
pub fn tel_to_sip(tel: &str, domain: &str) -> Result<String, ParseError> {
    let rest = strip_prefix_ci(tel.trim(), "tel:").ok_or(ParseError::Uri {
        offset: 0,
        what: "scheme is not tel:",
    })?;
    let number = rest.split(';').next().unwrap_or("");
    let digits: String = number
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
        .collect();
    let body = digits.strip_prefix('+').unwrap_or(&digits);
    if body.is_empty()
        || !body
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'*' || b == b'#')
    {
        return Err(ParseError::Uri {
            offset: 4,
            what: "tel: number must be digits",
        });
    }
    if domain.is_empty() {
        return Err(ParseError::Uri {
            offset: 0,
            what: "tel: URI needs a configured SIP domain",
        });
    }
    Ok(format!("sip:{digits}@{domain};user=phone"))
}

/// Everything that goes into one MESSAGE request (RFC 3261 §8.1.1, RFC 3428 §4).
#[derive(Clone, Debug)]
pub struct MessageRequest<'a> {
    pub request_uri: &'a str,
    pub transport: Transport,
    /// Via sent-by: `host:port` where responses can come back (§18.2.2 plus `rport`, RFC 3581).
    pub sent_by: &'a str,
    pub branch: &'a str,
    /// From name-addr, e.g. `"DM server" <sip:dm@example.net>`.
    pub from: &'a str,
    pub from_tag: &'a str,
    /// To name-addr (the AoR, never the GRUU: §8.1.1.2 says To is the logical recipient).
    pub to: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    pub max_forwards: u8,
    /// `Route` values (e.g. the outbound proxy with `;lr`), in order.
    pub route: &'a [String],
    /// The caller-preferences value, e.g. `*;+g.oma.eventappid="syncml.dm"` (RFC 3841 §9.2).
    pub accept_contact: Option<&'a str>,
    /// `(header name, value)`: `Authorization` or `Proxy-Authorization` (§22.2, §22.3).
    pub authorization: Option<(&'a str, &'a str)>,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

impl MessageRequest<'_> {
    /// The request on the wire. The body goes raw (SIP is 8-bit clean, §7.4) and
    /// `Content-Length` is its exact octet count (mandatory on streams, §20.14).
    pub fn encode(&self) -> Vec<u8> {
        let mut h = String::with_capacity(512);
        // write! to a String cannot fail.
        let _ = write!(h, "MESSAGE {} SIP/2.0\r\n", self.request_uri);
        let _ = write!(
            h,
            "Via: SIP/2.0/{} {};branch={};rport\r\n",
            self.transport.via_token(),
            self.sent_by,
            self.branch
        );
        let _ = write!(h, "Max-Forwards: {}\r\n", self.max_forwards);
        for r in self.route {
            let _ = write!(h, "Route: {r}\r\n");
        }
        let _ = write!(h, "From: {};tag={}\r\n", self.from, self.from_tag);
        let _ = write!(h, "To: {}\r\n", self.to);
        let _ = write!(h, "Call-ID: {}\r\n", self.call_id);
        let _ = write!(h, "CSeq: {} MESSAGE\r\n", self.cseq);
        if let Some(ac) = self.accept_contact {
            let _ = write!(h, "Accept-Contact: {ac}\r\n");
        }
        if let Some((name, value)) = self.authorization {
            let _ = write!(h, "{name}: {value}\r\n");
        }
        let _ = write!(h, "Content-Type: {}\r\n", self.content_type);
        let _ = write!(h, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut out = h.into_bytes();
        out.extend_from_slice(self.body);
        out
    }
}

/// Builds the Accept-Contact value: `*;<tag>="<value>"[;require][;explicit]` (RFC 3841 §9.2).
pub fn accept_contact(tag: &str, value: &str, require: bool, explicit: bool) -> String {
    let tag = if tag.starts_with('+') {
        tag.to_string()
    } else {
        format!("+{tag}")
    };
    let mut s = format!("*;{tag}=\"{value}\"");
    if require {
        s.push_str(";require");
    }
    if explicit {
        s.push_str(";explicit");
    }
    s
}

/// A parsed SIP response. Header names are stored in their long form, lower-cased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Long form of a compact header name (RFC 3261 §7.3.3 and §20; RFC 3841 §9; RFC 3265 §7.2).
pub fn expand_compact(name: &str) -> &str {
    match name {
        "i" => "call-id",
        "m" => "contact",
        "e" => "content-encoding",
        "l" => "content-length",
        "c" => "content-type",
        "f" => "from",
        "s" => "subject",
        "k" => "supported",
        "t" => "to",
        "v" => "via",
        "a" => "accept-contact",
        "j" => "reject-contact",
        "d" => "request-disposition",
        "o" => "event",
        "u" => "allow-events",
        "r" => "refer-to",
        "b" => "referred-by",
        "x" => "session-expires",
        _ => name,
    }
}

impl Response {
    /// First value of a header (long-form, lower-case name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `branch` parameter of the topmost Via (§17.1.3 matching).
    pub fn top_via_branch(&self) -> Option<&str> {
        let via = self.header("via")?;
        let top = split_commas(via).next()?;
        param_value(top, "branch")
    }

    /// `(sequence number, method)` from CSeq.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let v = self.header("cseq")?;
        let mut it = v.split_whitespace();
        let n = it.next()?.parse().ok()?;
        let m = it.next()?;
        Some((n, m))
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header("call-id").map(str::trim)
    }

    /// Retry-After delta-seconds (§20.33); comments and parameters are ignored.
    pub fn retry_after(&self) -> Option<u32> {
        let v = self.header("retry-after")?;
        let digits: String = v
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    }

    /// Contact URIs in order of appearance (q-values are not honoured: we follow the first).
    pub fn contact_uris(&self) -> Vec<String> {
        let mut out = Vec::new();
        for v in self.headers_named("contact") {
            for c in split_commas(v) {
                let c = c.trim();
                let uri = if let Some(start) = c.find('<') {
                    c[start + 1..].split('>').next().unwrap_or("")
                } else {
                    c.split(';').next().unwrap_or("")
                };
                let uri = uri.trim();
                if !uri.is_empty() && uri != "*" {
                    out.push(uri.to_string());
                }
            }
        }
        out
    }
}

/// Splits a header value at commas that are not inside quotes or angle brackets.
pub fn split_commas(v: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut quoted, mut angle, mut esc, mut start) = (false, false, false, 0);
    for (i, c) in v.char_indices() {
        if esc {
            esc = false;
            continue;
        }
        match c {
            '\\' if quoted => esc = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                parts.push(&v[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&v[start..]);
    parts.into_iter()
}

/// Value of a `;name=value` parameter in a header element (case-insensitive name).
pub fn param_value<'a>(element: &'a str, name: &str) -> Option<&'a str> {
    element.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

fn find_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Number of leading CRLFs (RFC 5626 §3.5.1 keep-alives, §7.5 tolerance) to skip on a stream.
pub fn leading_crlf(buf: &[u8]) -> usize {
    let mut i = 0;
    while i + 1 < buf.len() && buf[i] == b'\r' && buf[i + 1] == b'\n' {
        i += 2;
    }
    i
}

/// Stream framing (§18.3): after skipping leading CRLFs, is there one complete message in `buf`?
/// `Ok(Some(n))` — the first `n` bytes (including skipped CRLFs) form a message; `Ok(None)` —
/// need more bytes; `Err` — the stream is unusable (no valid Content-Length, or too large).
pub fn frame_stream(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let skip = leading_crlf(buf);
    let msg = &buf[skip..];
    let Some(end) = find_header_end(msg) else {
        if msg.len() > MAX_MESSAGE {
            return Err(ParseError::TooLarge { offset: skip });
        }
        return Ok(None);
    };
    let head = &msg[..end];
    let mut cl = None;
    let mut pos = 0;
    for line in head.split(|&b| b == b'\n') {
        let line_off = skip + pos;
        pos += line.len() + 1;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon])
            .trim()
            .to_ascii_lowercase();
        if expand_compact(&name) == "content-length" {
            let v = String::from_utf8_lossy(&line[colon + 1..]);
            let n: usize = v
                .trim()
                .parse()
                .map_err(|_| ParseError::ContentLength { offset: line_off })?;
            cl = Some(n);
        }
    }
    // On a stream Content-Length is mandatory (§18.3): without it the boundary is unknown.
    let cl = cl.ok_or(ParseError::Missing {
        offset: skip + end,
        name: "Content-Length",
    })?;
    // Checked: the peer chooses Content-Length, up to usize::MAX (found by the fuzzer).
    let total = cl
        .checked_add(end + 4)
        .filter(|t| *t <= MAX_MESSAGE)
        .ok_or(ParseError::TooLarge { offset: skip })?;
    if msg.len() >= total {
        Ok(Some(skip + total))
    } else {
        Ok(None)
    }
}

/// Parses one response. For a datagram (`stream = false`) a missing Content-Length means the body
/// is the rest of the datagram (§18.3); a Content-Length larger than what arrived is an error.
pub fn parse_response(buf: &[u8]) -> Result<Response, ParseError> {
    if buf.len() > MAX_MESSAGE {
        return Err(ParseError::TooLarge { offset: 0 });
    }
    let skip = leading_crlf(buf);
    let msg = &buf[skip..];
    let end = find_header_end(msg).ok_or(ParseError::Header {
        offset: buf.len(),
        what: "no empty line ending the header section",
    })?;
    let head = &msg[..end];
    let body_start = end + 4;
    let mut lines = head.split(|&b| b == b'\n');
    let status_line = lines.next().unwrap_or(&[]);
    let status_line = status_line.strip_suffix(b"\r").unwrap_or(status_line);
    let sl = std::str::from_utf8(status_line).map_err(|e| ParseError::StatusLine {
        offset: skip + e.valid_up_to(),
        what: "not UTF-8",
    })?;
    if !sl.starts_with("SIP/") {
        return Err(ParseError::NotResponse { offset: skip });
    }
    let rest = sl.strip_prefix("SIP/2.0 ").ok_or(ParseError::StatusLine {
        offset: skip,
        what: "version is not SIP/2.0",
    })?;
    let code = rest.get(..3).ok_or(ParseError::StatusLine {
        offset: skip + 8,
        what: "status code shorter than 3 digits",
    })?;
    let status: u16 = code
        .parse()
        .ok()
        .filter(|c| (100..700).contains(c) && code.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(ParseError::StatusLine {
            offset: skip + 8,
            what: "status code is not 100..699",
        })?;
    let after = &rest[3..];
    if !after.is_empty() && !after.starts_with(' ') {
        return Err(ParseError::StatusLine {
            offset: skip + 11,
            what: "no space after the status code",
        });
    }
    let reason = after.trim().to_string();

    let mut headers: Vec<(String, String)> = Vec::new();
    let mut pos = status_line.len() + 2;
    for raw in lines {
        let off = skip + pos;
        pos += raw.len() + 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(line).map_err(|e| ParseError::Header {
            offset: off + e.valid_up_to(),
            what: "not UTF-8",
        })?;
        if text.starts_with([' ', '\t']) {
            // Line folding (§7.3.1): continuation of the previous header value.
            let last = headers.last_mut().ok_or(ParseError::Header {
                offset: off,
                what: "continuation line before any header",
            })?;
            last.1.push(' ');
            last.1.push_str(text.trim());
            continue;
        }
        let colon = text.find(':').ok_or(ParseError::Header {
            offset: off,
            what: "no colon",
        })?;
        let name = text[..colon].trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
        {
            return Err(ParseError::Header {
                offset: off,
                what: "invalid header name",
            });
        }
        let lname = name.to_ascii_lowercase();
        headers.push((
            expand_compact(&lname).to_string(),
            text[colon + 1..].trim().to_string(),
        ));
        if headers.len() > 256 {
            return Err(ParseError::Header {
                offset: off,
                what: "more than 256 headers",
            });
        }
    }
    let available = msg.len() - body_start.min(msg.len());
    let body_len = match headers.iter().find(|(k, _)| k == "content-length") {
        Some((_, v)) => {
            let n: usize = v
                .parse()
                .map_err(|_| ParseError::ContentLength { offset: skip + end })?;
            if n > available {
                return Err(ParseError::Truncated {
                    offset: skip + body_start,
                    declared: n,
                    have: available,
                });
            }
            n
        }
        None => available,
    };
    let body = msg[body_start..body_start + body_len].to_vec();
    let r = Response {
        status,
        reason,
        headers,
        body,
    };
    // §8.1.3.3 / §17.1.3: without these a response cannot be matched to a transaction.
    for name in ["via", "cseq", "call-id"] {
        if r.header(name).is_none() {
            return Err(ParseError::Missing {
                offset: skip + end,
                name: match name {
                    "via" => "Via",
                    "cseq" => "CSeq",
                    _ => "Call-ID",
                },
            });
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: &[u8]) -> Vec<u8> {
        MessageRequest {
            request_uri: "sip:device@127.0.0.1",
            transport: Transport::Udp,
            sent_by: "127.0.0.1:5099",
            branch: "z9hG4bKabc",
            from: "<sip:dm@example.net>",
            from_tag: "t1",
            to: "<sip:device@127.0.0.1>",
            call_id: "cid@x",
            cseq: 1,
            max_forwards: 70,
            route: &[],
            accept_contact: Some("*;+g.oma.eventappid=\"syncml.dm\""),
            authorization: None,
            content_type: "application/vnd.syncml.notification",
            body,
        }
        .encode()
    }

    #[test]
    fn request_layout_and_binary_body() {
        let body = [0u8, 1, 0xff, b'\r', b'\n', 0x80];
        let r = req(&body);
        let text = String::from_utf8_lossy(&r);
        assert!(text.starts_with("MESSAGE sip:device@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKabc;rport\r\n"));
        assert!(text.contains("\r\nCSeq: 1 MESSAGE\r\n"));
        assert!(text.contains("\r\nFrom: <sip:dm@example.net>;tag=t1\r\n"));
        assert!(text.contains("\r\nAccept-Contact: *;+g.oma.eventappid=\"syncml.dm\"\r\n"));
        assert!(text.contains("\r\nContent-Length: 6\r\n\r\n"));
        assert!(r.ends_with(&body));
        // Stream framing finds exactly this request.
        let mut two = r.clone();
        two.extend_from_slice(&r);
        assert_eq!(frame_stream(&two), Ok(Some(r.len())));
    }

    #[test]
    fn uri_parsing() {
        let u = SipUri::parse("sip:+4477@ims.example.net:5070;transport=TCP;lr").unwrap();
        assert_eq!(u.user.as_deref(), Some("+4477"));
        assert_eq!(u.host, "ims.example.net");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport(), Some(Transport::Tcp));
        assert_eq!(u.param("lr"), Some(None));
        let v6 = SipUri::parse("sips:dev@[::1]:5061").unwrap();
        assert_eq!(v6.host_unbracketed(), "::1");
        assert_eq!(v6.transport(), Some(Transport::Tls));
        assert!(matches!(
            SipUri::parse("http://x"),
            Err(ParseError::Uri { offset: 0, .. })
        ));
        assert!(matches!(
            SipUri::parse("sip:a@host:99999"),
            Err(ParseError::Uri { offset: 11, .. })
        ));
        assert_eq!(
            tel_to_sip("tel:+44-7700-900123;phone-context=x", "ims.example.net").unwrap(),
            "sip:+447700900123@ims.example.net;user=phone"
        );
        assert!(tel_to_sip("tel:+44", "").is_err());
    }

    #[test]
    fn response_compact_forms_and_folding() {
        let raw = b"SIP/2.0 503 Service Unavailable\r\nv: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKabc;rport=5099, SIP/2.0/UDP other;branch=z9hG4bKzzz\r\nf: <sip:dm@example.net>;tag=t1\r\nt: <sip:device@x>;tag=u\r\ni: cid@x\r\nCSeq: 1 MESSAGE\r\nRetry-After: 18 (maintenance)\r\nm: <sip:a@b;transport=tcp>;q=0.5, sip:c@d\r\nX-Long: a\r\n  b\r\nl: 3\r\n\r\nabcEXTRA";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.reason, "Service Unavailable");
        assert_eq!(r.top_via_branch(), Some("z9hG4bKabc"));
        assert_eq!(r.cseq(), Some((1, "MESSAGE")));
        assert_eq!(r.call_id(), Some("cid@x"));
        assert_eq!(r.retry_after(), Some(18));
        assert_eq!(r.contact_uris(), vec!["sip:a@b;transport=tcp", "sip:c@d"]);
        assert_eq!(r.header("x-long"), Some("a b"));
        assert_eq!(r.body, b"abc");
    }

    #[test]
    fn response_errors_name_offsets() {
        assert_eq!(
            parse_response(b"MESSAGE sip:x SIP/2.0\r\n\r\n"),
            Err(ParseError::NotResponse { offset: 0 })
        );
        assert!(matches!(
            parse_response(b"SIP/2.0 2x0 OK\r\n\r\n"),
            Err(ParseError::StatusLine { offset: 8, .. })
        ));
        assert!(matches!(
            parse_response(b"SIP/2.0 200 OK\r\nVia: x\r\nbroken\r\n\r\n"),
            Err(ParseError::Header { offset: 24, .. })
        ));
        assert!(matches!(
            parse_response(
                b"SIP/2.0 200 OK\r\nVia: x\r\nCSeq: 1 MESSAGE\r\ni: c\r\nl: 9\r\n\r\nab"
            ),
            Err(ParseError::Truncated {
                declared: 9,
                have: 2,
                ..
            })
        ));
        assert!(matches!(
            parse_response(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n"),
            Err(ParseError::Missing { name: "CSeq", .. })
        ));
        assert!(matches!(
            frame_stream(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n"),
            Err(ParseError::Missing {
                name: "Content-Length",
                ..
            })
        ));
        assert_eq!(
            frame_stream(b"\r\n\r\nSIP/2.0 200 OK\r\nl: 0\r\n"),
            Ok(None)
        );
    }

    #[test]
    fn accept_contact_forms() {
        assert_eq!(
            accept_contact("g.oma.eventappid", "syncml.dm", false, false),
            "*;+g.oma.eventappid=\"syncml.dm\""
        );
        assert_eq!(
            accept_contact("+g.oma.pusheventapp", "syncml.dm", true, true),
            "*;+g.oma.pusheventapp=\"syncml.dm\";require;explicit"
        );
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse_response(&data);
            let _ = frame_stream(&data);
        }

        #[test]
        fn parser_never_panics_on_mutated_response(pos in 0usize..120, byte in proptest::prelude::any::<u8>()) {
            let mut raw = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nCSeq: 1 MESSAGE\r\ni: c\r\nl: 2\r\n\r\nok".to_vec();
            let p = pos % raw.len();
            raw[p] = byte;
            let _ = parse_response(&raw);
            let _ = frame_stream(&raw);
        }
    }

    #[test]
    fn a_content_length_near_usize_max_is_too_large_not_an_overflow() {
        // Fuzzer input (sip_response): compact `l` header with 18446744073709551615.
        let input: &[u8] = b"L\r*L\nL:0000000000000000018446744073709551615\nL\n\r\n\r\n0";
        assert!(matches!(
            frame_stream(input),
            Err(ParseError::TooLarge { .. })
        ));
        let _ = parse_response(input);
        let max = format!("SIP/2.0 200 OK\r\nContent-Length: {}\r\n\r\n", usize::MAX);
        assert!(matches!(
            frame_stream(max.as_bytes()),
            Err(ParseError::TooLarge { .. })
        ));
    }
}
