//! XML text ⇄ [`Document`]: quick-xml on the way in, a small writer on the way out.
//!
//! Namespaces map to code pages: the root's `xmlns` (or the DOCTYPE public id) picks the vocabulary,
//! an `xmlns` on a descendant switches page (e.g. `syncml:metinf` → page 1). An element inside `<Data>`
//! whose namespace is another vocabulary (DDF/TNDS `syncml:dmddf1.2`, DevInf `syncml:devinf`) becomes a
//! nested document, encoded as OPAQUE the way libwbxml does.
//!
//! Whitespace: like libwbxml (without `-k`), text is trimmed and whitespace-only text is dropped.

use base64::Engine;
use quick_xml::events::Event;
use quick_xml::reader::Reader;

use super::tables::{Vocabulary, nested_vocabulary};
use super::{Document, Element, Node, WbxmlError};

/// Parses XML into a document, trimming text like libwbxml.
pub fn parse(xml: &[u8]) -> Result<Document, WbxmlError> {
    parse_with(xml, false)
}

struct Open {
    el: Element,
    pending: String,
    /// Prefix bindings declared on this element (`xmlns:p`).
    prefixes: Vec<(String, String)>,
}

/// Parses XML; `preserve_whitespace` keeps text exactly (libwbxml `-k`).
pub fn parse_with(xml: &[u8], preserve_whitespace: bool) -> Result<Document, WbxmlError> {
    let mut reader = Reader::from_reader(xml);
    let err = |pos: u64, m: String| WbxmlError::Xml {
        offset: pos as usize,
        message: m,
    };
    let mut doctype_vocab: Option<Vocabulary> = None;
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Element> = None;
    // Hostile XML cannot blow the stack: the tree is built iteratively, and depth is capped like the
    // WBXML decoder's.
    const MAX_DEPTH: usize = 256;
    loop {
        let pos = reader.buffer_position();
        let ev = reader
            .read_event()
            .map_err(|e| err(reader.error_position(), e.to_string()))?;
        match ev {
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::DocType(d) => {
                let text = d.xml10_content();
                doctype_vocab = doctype_fpi(&text).and_then(Vocabulary::from_fpi);
            }
            Event::Start(s) | Event::Empty(s) if root.is_some() => {
                let _ = s;
                return Err(err(pos, "content after the root element".into()));
            }
            Event::Start(ref s) | Event::Empty(ref s) => {
                let is_empty = matches!(ev, Event::Empty(_));
                if stack.len() >= MAX_DEPTH {
                    return Err(err(pos, format!("nesting deeper than {MAX_DEPTH}")));
                }
                let qname: String = s.name().as_ref().to_owned();
                let (prefix, local) = match qname.split_once(':') {
                    Some((p, l)) => (Some(p.to_owned()), l.to_owned()),
                    None => (None, qname.clone()),
                };
                let mut default_ns: Option<String> = None;
                let mut prefixes = Vec::new();
                let mut attrs = Vec::new();
                for a in s.attributes() {
                    let a = a.map_err(|e| err(pos, e.to_string()))?;
                    let key: String = a.key.as_ref().to_owned();
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| err(pos, e.to_string()))?
                        .into_owned();
                    if key == "xmlns" {
                        default_ns = Some(value);
                    } else if let Some(p) = key.strip_prefix("xmlns:") {
                        prefixes.push((p.to_owned(), value));
                    } else {
                        attrs.push((key, value));
                    }
                }
                let namespace = match &prefix {
                    Some(p) => prefixes
                        .iter()
                        .rev()
                        .chain(stack.iter().rev().flat_map(|o| o.prefixes.iter().rev()))
                        .find(|(k, _)| k == p)
                        .map(|(_, v)| v.clone())
                        .ok_or_else(|| err(pos, format!("undeclared prefix {p:?}")))?,
                    None => match default_ns {
                        Some(ns) => ns,
                        None => match stack.last() {
                            Some(parent) => parent.el.namespace.clone(),
                            None => doctype_vocab
                                .map(|v| v.root_page().namespace.to_owned())
                                .unwrap_or_default(),
                        },
                    },
                };
                if let Some(parent) = stack.last_mut() {
                    flush_text(parent, preserve_whitespace);
                }
                let open = Open {
                    el: Element {
                        name: local,
                        namespace,
                        attrs,
                        children: Vec::new(),
                    },
                    pending: String::new(),
                    prefixes,
                };
                if is_empty {
                    close(open, &mut stack, &mut root, preserve_whitespace);
                } else {
                    stack.push(open);
                }
            }
            Event::End(_) => {
                let open = stack
                    .pop()
                    .ok_or_else(|| err(pos, "end tag without start tag".into()))?;
                close(open, &mut stack, &mut root, preserve_whitespace);
            }
            Event::Text(t) => match stack.last_mut() {
                Some(o) => o.pending.push_str(&t.xml10_content()),
                None if t.xml10_content().trim().is_empty() => {}
                None => return Err(err(pos, "text outside the root element".into())),
            },
            Event::CData(c) => {
                let o = stack
                    .last_mut()
                    .ok_or_else(|| err(pos, "CDATA outside the root element".into()))?;
                o.pending.push_str(&c.xml10_content());
            }
            Event::GeneralRef(r) => {
                let o = stack
                    .last_mut()
                    .ok_or_else(|| err(pos, "reference outside the root element".into()))?;
                match r.resolve_char_ref().map_err(|e| err(pos, e.to_string()))? {
                    Some(c) => o.pending.push(c),
                    None => {
                        let name = r.into_inner();
                        let v = quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| err(pos, format!("unknown entity &{name};")))?;
                        o.pending.push_str(v);
                    }
                }
            }
        }
    }
    if !stack.is_empty() {
        return Err(err(
            xml.len() as u64,
            "unclosed element at end of input".into(),
        ));
    }
    let root = root.ok_or_else(|| err(xml.len() as u64, "no root element".into()))?;
    let vocabulary = doctype_vocab
        // The DOCTYPE wins when the root's namespace is one of its pages (a decoded document may have
        // its root on another page, e.g. MetInf; found by fuzzing).
        .filter(|v| v.page_for_ns(&root.namespace).is_some())
        .or_else(|| Vocabulary::from_root_ns(&root.namespace))
        .ok_or(WbxmlError::UnknownVocabulary { offset: 0 })?;
    Ok(Document {
        version: 0x03,
        vocabulary,
        root: nest(root, vocabulary),
    })
}

fn flush_text(o: &mut Open, preserve: bool) {
    if o.pending.is_empty() {
        return;
    }
    let s = std::mem::take(&mut o.pending);
    let s = if preserve { s } else { s.trim().to_owned() };
    if !s.is_empty() {
        o.el.children.push(Node::Text(s));
    }
}

fn close(mut open: Open, stack: &mut [Open], root: &mut Option<Element>, preserve: bool) {
    flush_text(&mut open, preserve);
    match stack.last_mut() {
        Some(parent) => parent.el.children.push(Node::Element(open.el)),
        None => *root = Some(open.el),
    }
}

/// Turns elements of another vocabulary that sit directly inside `<Data>` into nested documents.
fn nest(mut el: Element, vocab: Vocabulary) -> Element {
    let is_data = el.name == "Data";
    el.children = std::mem::take(&mut el.children)
        .into_iter()
        .map(|c| match c {
            Node::Element(ch) => {
                let inner = if is_data {
                    nested_vocabulary(&ch.namespace).filter(|v| *v != vocab)
                } else {
                    None
                };
                match inner {
                    Some(v) => Node::Document(Box::new(Document {
                        version: 0x03,
                        vocabulary: v,
                        root: nest(ch, v),
                    })),
                    None => Node::Element(nest(ch, vocab)),
                }
            }
            other => other,
        })
        .collect();
    el
}

/// The public id from a DOCTYPE body such as `SyncML PUBLIC "-//SYNCML//DTD SyncML 1.2//EN" "…"`.
fn doctype_fpi(doctype: &str) -> Option<&str> {
    let rest = &doctype[doctype.find("PUBLIC")? + 6..];
    let rest = rest.trim_start();
    let q = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = &rest[1..];
    Some(&rest[..rest.find(q)?])
}

/// System identifiers written in the DOCTYPE (the ones libwbxml writes).
fn system_id(v: Vocabulary) -> &'static str {
    match v {
        Vocabulary::SyncMl11 => "http://www.syncml.org/docs/syncml_represent_v11_20020213.dtd",
        Vocabulary::SyncMl12 => {
            "http://www.openmobilealliance.org/tech/DTD/OMA-TS-SyncML_RepPro_DTD-V1_2.dtd"
        }
        Vocabulary::DevInf11 => "http://www.syncml.org/docs/devinf_v11_20020215.dtd",
        Vocabulary::DevInf12 => {
            "http://www.openmobilealliance.org/tech/DTD/OMA-SyncML-Device_Information-DTD-1.2.dtd"
        }
        Vocabulary::DmDdf12 => "http://www.openmobilealliance.org/tech/DTD/dm_ddf-v1_2.dtd",
    }
}

/// Serialises a document as compact XML with declaration and DOCTYPE. Nested documents are written
/// inline (their root carries its `xmlns`); raw opaque octets are written as base64 text.
pub fn to_string(doc: &Document) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    out.push_str("<!DOCTYPE ");
    out.push_str(&doc.root.name);
    out.push_str(" PUBLIC \"");
    out.push_str(doc.vocabulary.fpi());
    out.push_str("\" \"");
    out.push_str(system_id(doc.vocabulary));
    out.push_str("\">");
    write_element(&mut out, &doc.root, None);
    out
}

fn write_element(out: &mut String, e: &Element, parent_ns: Option<&str>) {
    out.push('<');
    out.push_str(&e.name);
    if parent_ns != Some(e.namespace.as_str()) {
        out.push_str(" xmlns=\"");
        escape_into(out, &e.namespace, true);
        out.push('"');
    }
    for (k, v) in &e.attrs {
        out.push(' ');
        out.push_str(k);
        out.push_str("=\"");
        escape_into(out, v, true);
        out.push('"');
    }
    if e.children.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for c in &e.children {
        match c {
            Node::Element(ch) => write_element(out, ch, Some(&e.namespace)),
            Node::Text(s) => escape_into(out, s, false),
            Node::Opaque(b) => out.push_str(&base64::engine::general_purpose::STANDARD.encode(b)),
            Node::Document(d) => write_element(out, &d.root, None),
        }
    }
    out.push_str("</");
    out.push_str(&e.name);
    out.push('>');
}

fn escape_into(out: &mut String, s: &str, attr: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attr => out.push_str("&quot;"),
            // Keep CR and attribute whitespace from being normalised away by the reader.
            '\r' => out.push_str("&#13;"),
            '\t' if attr => out.push_str("&#9;"),
            '\n' if attr => out.push_str("&#10;"),
            c => out.push(c),
        }
    }
}
