//! [`Document`] → WBXML encoder.

use std::collections::HashMap;

use super::tables::Vocabulary;
use super::token as t;
use super::{Document, Element, Node, WbxmlError, write_mb};

/// Encoder options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// WBXML version octet: 0x03 (1.3, libwbxml's default) unless a device needs 0x02 (the SyncML
    /// RTK writes 1.2).
    pub version: u8,
    /// Put text that repeats into the string table and refer to it with STR_T when that is shorter than
    /// repeating STR_I (WBXML §5.7). Off: every text is STR_I.
    pub string_table: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            version: 0x03,
            string_table: true,
        }
    }
}

/// Encodes with [`EncodeOptions::default`] (the document's own `version` is ignored).
pub fn encode(doc: &Document) -> Result<Vec<u8>, WbxmlError> {
    encode_with(doc, &EncodeOptions::default())
}

/// Encodes a document.
pub fn encode_with(doc: &Document, opts: &EncodeOptions) -> Result<Vec<u8>, WbxmlError> {
    if !(0x01..=0x03).contains(&opts.version) {
        return Err(WbxmlError::Unencodable {
            what: format!("WBXML version 0x{:02X}", opts.version),
        });
    }
    let mut table = StringTable::default();
    if doc.vocabulary.public_id().is_none() {
        table.intern(doc.vocabulary.fpi());
    }
    if opts.string_table {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        count_texts(&doc.root, &mut counts);
        // Deterministic order: by first appearance in the document.
        let mut order = Vec::new();
        first_texts(&doc.root, &mut order, &mut std::collections::HashSet::new());
        for s in order {
            let n = counts.get(s).copied().unwrap_or(0);
            // STR_I costs len+2 per use; STR_T costs 1 + |mb(index)| per use plus len+1 once.
            let idx_len = mb_len(table.bytes.len() as u32);
            if n >= 2 && n * (s.len() + 2) > n * (1 + idx_len) + s.len() + 1 {
                table.intern(s);
            }
        }
    }
    let mut body = Vec::with_capacity(256);
    let mut enc = Encoder {
        vocab: doc.vocabulary,
        page: 0,
        out: &mut body,
        table: &mut table,
        opts,
        use_table_for_text: opts.string_table,
    };
    enc.element(&doc.root)?;

    let mut out = Vec::with_capacity(body.len() + table.bytes.len() + 8);
    out.push(opts.version);
    match doc.vocabulary.public_id() {
        Some(id) => write_mb(&mut out, id),
        None => {
            // String-form public id: 0 then the index of the FPI in the string table (§5.5).
            out.push(0);
            write_mb(&mut out, 0);
        }
    }
    write_mb(&mut out, t::CHARSET_UTF8);
    write_mb(&mut out, table.bytes.len() as u32);
    out.extend_from_slice(&table.bytes);
    out.extend_from_slice(&body);
    Ok(out)
}

fn mb_len(v: u32) -> usize {
    let mut n = 1;
    let mut v = v >> 7;
    while v != 0 {
        n += 1;
        v >>= 7;
    }
    n
}

fn count_texts<'a>(e: &'a Element, counts: &mut HashMap<&'a str, usize>) {
    for c in &e.children {
        match c {
            Node::Element(ch) => count_texts(ch, counts),
            Node::Text(s) => *counts.entry(s.as_str()).or_default() += 1,
            _ => {}
        }
    }
}

fn first_texts<'a>(
    e: &'a Element,
    order: &mut Vec<&'a str>,
    seen: &mut std::collections::HashSet<&'a str>,
) {
    for c in &e.children {
        match c {
            Node::Element(ch) => first_texts(ch, order, seen),
            Node::Text(s) if seen.insert(s) => order.push(s),
            _ => {}
        }
    }
}

#[derive(Default)]
struct StringTable {
    bytes: Vec<u8>,
    index: HashMap<String, u32>,
}

impl StringTable {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.bytes.len() as u32;
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        self.index.insert(s.to_owned(), i);
        i
    }
}

struct Encoder<'a> {
    vocab: Vocabulary,
    page: u8,
    out: &'a mut Vec<u8>,
    table: &'a mut StringTable,
    opts: &'a EncodeOptions,
    use_table_for_text: bool,
}

impl Encoder<'_> {
    fn element(&mut self, e: &Element) -> Result<(), WbxmlError> {
        let has_content = !e.children.is_empty();
        let has_attrs = !e.attrs.is_empty();
        let flags =
            if has_content { t::HAS_CONTENT } else { 0 } | if has_attrs { t::HAS_ATTRS } else { 0 };
        let known = self
            .vocab
            .page_for_ns(&e.namespace)
            .and_then(|p| p.tag_token(&e.name).map(|tok| (p.page, tok)));
        match known {
            Some((page, tok)) => {
                if page != self.page {
                    self.out.push(t::SWITCH_PAGE);
                    self.out.push(page);
                    self.page = page;
                }
                self.out.push(tok | flags);
            }
            None => {
                // Unknown element (or foreign namespace): LITERAL by name. Like libwbxml, the
                // namespace of a literal is not carried (decoders put it in the current page's).
                if e.name.contains('\0') {
                    return Err(WbxmlError::Unencodable {
                        what: "an element name containing NUL".into(),
                    });
                }
                // A decoder puts a literal into the current page's namespace, so switch to the
                // element's page first when its namespace is one of ours.
                if let Some(p) = self.vocab.page_for_ns(&e.namespace)
                    && p.page != self.page
                {
                    self.out.push(t::SWITCH_PAGE);
                    self.out.push(p.page);
                    self.page = p.page;
                }
                let idx = self.table.intern(&e.name);
                self.out.push(t::LITERAL | flags);
                write_mb(self.out, idx);
            }
        }
        if has_attrs {
            for (k, v) in &e.attrs {
                let idx = self.table.intern(k);
                self.out.push(t::LITERAL);
                write_mb(self.out, idx);
                self.str_i(v)?;
            }
            self.out.push(t::END);
        }
        if has_content {
            for c in &e.children {
                match c {
                    Node::Element(ch) => self.element(ch)?,
                    Node::Text(s) => self.text(s)?,
                    Node::Opaque(b) => self.opaque(b),
                    Node::Document(d) => {
                        // Nested documents (TNDS/DDF in <Data>) go as OPAQUE like libwbxml does.
                        let inner = encode_with(d, self.opts)?;
                        self.opaque(&inner);
                    }
                }
            }
            self.out.push(t::END);
        }
        Ok(())
    }

    fn text(&mut self, s: &str) -> Result<(), WbxmlError> {
        if self.use_table_for_text
            && let Some(&i) = self.table.index.get(s)
        {
            self.out.push(t::STR_T);
            write_mb(self.out, i);
            return Ok(());
        }
        self.str_i(s)
    }

    fn str_i(&mut self, s: &str) -> Result<(), WbxmlError> {
        if s.contains('\0') {
            // STR_I is NUL-terminated; a NUL in text must go as OPAQUE.
            self.opaque(s.as_bytes());
            return Ok(());
        }
        self.out.push(t::STR_I);
        self.out.extend_from_slice(s.as_bytes());
        self.out.push(0);
        Ok(())
    }

    fn opaque(&mut self, b: &[u8]) {
        self.out.push(t::OPAQUE);
        write_mb(self.out, b.len() as u32);
        self.out.extend_from_slice(b);
    }
}
