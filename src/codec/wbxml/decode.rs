//! WBXML → [`Document`] decoder. Bounded by [`DecodeLimits`]; never panics on arbitrary input.

use super::tables::Vocabulary;
use super::token as t;
use super::{Document, Element, Node, WbxmlError, read_mb};

/// Limits that keep hostile input from exhausting memory or stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted input, octets.
    pub max_input: usize,
    /// Deepest element nesting, counted across nested OPAQUE documents.
    pub max_depth: usize,
    /// Largest string table, octets.
    pub max_string_table: usize,
    /// Most text octets produced in total (STR_T references can repeat a table string).
    pub max_text: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        // A DM message over SMS/WAP push is at most a few KiB; HTTP-carried bootstraps stay well
        // under 1 MiB. Depth 64 is far beyond any SyncML DM tree (about 12).
        DecodeLimits {
            max_input: 1 << 20,
            max_depth: 64,
            max_string_table: 64 << 10,
            max_text: 4 << 20,
        }
    }
}

/// Decodes with [`DecodeLimits::default`].
pub fn decode(input: &[u8]) -> Result<Document, WbxmlError> {
    decode_with(input, &DecodeLimits::default())
}

/// Decodes a whole WBXML document; trailing octets after the root are an error.
pub fn decode_with(input: &[u8], limits: &DecodeLimits) -> Result<Document, WbxmlError> {
    if input.len() > limits.max_input {
        return Err(WbxmlError::LimitExceeded {
            offset: limits.max_input,
            what: "input size",
            limit: limits.max_input,
        });
    }
    let mut text_budget = limits.max_text;
    let mut d = Decoder {
        input,
        pos: 0,
        base: 0,
        limits,
        text_budget: &mut text_budget,
        depth0: 0,
        strtbl: &[],
        vocab: Vocabulary::SyncMl12,
        page: 0,
    };
    d.document()
}

struct Decoder<'a, 'b> {
    input: &'a [u8],
    pos: usize,
    /// Offset of `input` inside the outermost input (for errors in nested documents).
    base: usize,
    limits: &'b DecodeLimits,
    text_budget: &'b mut usize,
    depth0: usize,
    strtbl: &'a [u8],
    vocab: Vocabulary,
    page: u8,
}

impl<'a> Decoder<'a, '_> {
    fn off(&self) -> usize {
        self.base + self.pos
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, WbxmlError> {
        let b = *self.input.get(self.pos).ok_or(WbxmlError::Truncated {
            offset: self.off(),
            what,
        })?;
        self.pos += 1;
        Ok(b)
    }

    fn mb(&mut self, what: &'static str) -> Result<u32, WbxmlError> {
        read_mb(self.input, &mut self.pos, what).map_err(|e| self.rebase(e))
    }

    fn rebase(&self, e: WbxmlError) -> WbxmlError {
        match e {
            WbxmlError::Truncated { offset, what } => WbxmlError::Truncated {
                offset: offset + self.base,
                what,
            },
            WbxmlError::MbOverflow { offset } => WbxmlError::MbOverflow {
                offset: offset + self.base,
            },
            other => other,
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WbxmlError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.input.len())
            .ok_or(WbxmlError::Truncated {
                offset: self.off(),
                what,
            })?;
        let s = &self.input[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn document(&mut self) -> Result<Document, WbxmlError> {
        let off = self.off();
        let version = self.byte("version")?;
        if !(0x01..=0x03).contains(&version) {
            return Err(WbxmlError::UnsupportedVersion {
                offset: off,
                version,
            });
        }
        let pid_off = self.off();
        let pid = self.mb("public id")?;
        let pid_index = if pid == 0 {
            Some(self.mb("public id string index")?)
        } else {
            None
        };
        let cs_off = self.off();
        let charset = self.mb("charset")?;
        // 0 = "unknown" (§5.6): treat as UTF-8, as libwbxml does; US-ASCII (3) is a UTF-8 subset.
        if !matches!(charset, 0 | 3 | t::CHARSET_UTF8) {
            return Err(WbxmlError::UnsupportedCharset {
                offset: cs_off,
                charset,
            });
        }
        let st_off = self.off();
        let st_len = self.mb("string table length")? as usize;
        if st_len > self.limits.max_string_table {
            return Err(WbxmlError::LimitExceeded {
                offset: st_off,
                what: "string table",
                limit: self.limits.max_string_table,
            });
        }
        self.strtbl = self.take(st_len, "string table")?;
        self.vocab = match pid_index {
            Some(index) => {
                let fpi = self.table_str(index, pid_off)?;
                Vocabulary::from_fpi(fpi).ok_or_else(|| WbxmlError::UnknownPublicId {
                    offset: pid_off,
                    id: format!("{fpi:?}"),
                })?
            }
            None => Vocabulary::from_public_id(pid).ok_or_else(|| WbxmlError::UnknownPublicId {
                offset: pid_off,
                id: format!("0x{pid:04X}"),
            })?,
        };
        self.page = 0;
        // Body: optional SWITCH_PAGE(s) then the root element (PIs are not used by SyncML).
        let root = loop {
            let off = self.off();
            let tok = self.byte("root element")?;
            if tok == t::SWITCH_PAGE {
                self.page = self.byte("code page")?;
                continue;
            }
            match self.element(tok, off, 1)? {
                Some(e) => break e,
                None => {
                    return Err(WbxmlError::UnexpectedToken {
                        offset: off,
                        token: tok,
                        context: "expected the root element",
                    });
                }
            }
        };
        if self.pos != self.input.len() {
            return Err(WbxmlError::TrailingBytes {
                offset: self.off(),
                count: self.input.len() - self.pos,
            });
        }
        Ok(Document {
            version,
            vocabulary: self.vocab,
            root,
        })
    }

    /// NUL-terminated string at `index` in the string table.
    fn table_str(&self, index: u32, off: usize) -> Result<&'a str, WbxmlError> {
        let bad = WbxmlError::BadStringIndex { offset: off, index };
        let i = index as usize;
        let rest = self.strtbl.get(i..).ok_or(bad.clone())?;
        // RTK writes the FPI without a NUL terminator (facts §E.1): a string may end at the table end.
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).map_err(|_| WbxmlError::InvalidUtf8 {
            offset: off,
            what: "string table entry",
        })
    }

    fn charge_text(&mut self, n: usize, off: usize) -> Result<(), WbxmlError> {
        if n > *self.text_budget {
            return Err(WbxmlError::LimitExceeded {
                offset: off,
                what: "decoded text",
                limit: self.limits.max_text,
            });
        }
        *self.text_budget -= n;
        Ok(())
    }

    /// Decodes the element whose tag token `tok` was just read at `off`. Returns `None` if `tok` is a
    /// global token that cannot start an element.
    fn element(
        &mut self,
        tok: u8,
        off: usize,
        depth: usize,
    ) -> Result<Option<Element>, WbxmlError> {
        if self.depth0 + depth > self.limits.max_depth {
            return Err(WbxmlError::LimitExceeded {
                offset: off,
                what: "element depth",
                limit: self.limits.max_depth,
            });
        }
        let (name, namespace) = match tok {
            t::LITERAL | t::LITERAL_A | t::LITERAL_C | t::LITERAL_AC => {
                let idx_off = self.off();
                let idx = self.mb("literal tag index")?;
                // A literal tag has no code page of its own: it stays in the current namespace.
                let ns = self.page_ns();
                let name = self.table_str(idx, idx_off)?;
                if !is_xml_name(name) {
                    return Err(WbxmlError::NotXml {
                        offset: idx_off,
                        what: "literal tag name",
                    });
                }
                (name.to_owned(), ns)
            }
            t::SWITCH_PAGE | t::END | t::ENTITY | t::STR_I | t::PI | t::STR_T | t::OPAQUE => {
                return Ok(None);
            }
            t::EXT_I_0..=t::EXT_I_2 | t::EXT_T_0..=t::EXT_T_2 | t::EXT_0..=t::EXT_2 => {
                return Ok(None);
            }
            _ => {
                let id = tok & 0x3F;
                let page = self.vocab.page(self.page);
                let name = page
                    .and_then(|p| p.tag_name(id))
                    .ok_or(WbxmlError::UnknownTag {
                        offset: off,
                        page: self.page,
                        token: id,
                    })?;
                (name.to_owned(), self.page_ns())
            }
        };
        let mut el = Element {
            name,
            namespace,
            attrs: Vec::new(),
            children: Vec::new(),
        };
        if tok & t::HAS_ATTRS != 0 {
            self.attributes(&mut el)?;
        }
        if tok & t::HAS_CONTENT != 0 {
            self.content(&mut el, depth)?;
        }
        Ok(Some(el))
    }

    fn page_ns(&self) -> String {
        self.vocab
            .page(self.page)
            .map_or(self.vocab.root_page().namespace, |p| p.namespace)
            .to_owned()
    }

    /// Attribute list up to END. Our vocabularies define no attribute tokens, so only LITERAL names and
    /// string values are possible.
    fn attributes(&mut self, el: &mut Element) -> Result<(), WbxmlError> {
        let start = self.off();
        let mut current: Option<(String, String)> = None;
        loop {
            let off = self.off();
            let tok = self.byte("attribute list")?;
            match tok {
                t::END => break,
                t::SWITCH_PAGE => {
                    self.byte("code page")?;
                }
                t::LITERAL => {
                    if let Some(a) = current.take() {
                        el.attrs.push(a);
                    }
                    let idx_off = self.off();
                    let idx = self.mb("literal attribute index")?;
                    let name = self.table_str(idx, idx_off)?;
                    if !is_xml_name(name) || name == "xmlns" || name.starts_with("xmlns:") {
                        return Err(WbxmlError::NotXml {
                            offset: idx_off,
                            what: "literal attribute name",
                        });
                    }
                    current = Some((name.to_owned(), String::new()));
                }
                t::STR_I | t::STR_T | t::ENTITY => {
                    let s = self.string_token(tok, off)?;
                    match current.as_mut() {
                        Some((_, v)) => v.push_str(&s),
                        None => {
                            return Err(WbxmlError::UnexpectedToken {
                                offset: off,
                                token: tok,
                                context: "attribute value before attribute name",
                            });
                        }
                    }
                }
                _ => {
                    return Err(WbxmlError::UnexpectedToken {
                        offset: off,
                        token: tok,
                        context: "attribute token not defined by the vocabulary",
                    });
                }
            }
        }
        if let Some(a) = current {
            el.attrs.push(a);
        }
        // XML forbids repeating an attribute (found by fuzzing); WBXML does not stop a peer doing it.
        for (i, (k, _)) in el.attrs.iter().enumerate() {
            if el.attrs[..i].iter().any(|(p, _)| p == k) {
                return Err(WbxmlError::NotXml {
                    offset: start,
                    what: "a repeated attribute",
                });
            }
        }
        Ok(())
    }

    fn string_token(&mut self, tok: u8, off: usize) -> Result<String, WbxmlError> {
        let s = self.string_token_raw(tok, off)?;
        if !s.chars().all(is_xml_char) {
            return Err(WbxmlError::NotXml {
                offset: off,
                what: "a control character in a string",
            });
        }
        Ok(s)
    }

    fn string_token_raw(&mut self, tok: u8, off: usize) -> Result<String, WbxmlError> {
        match tok {
            t::STR_I => {
                let rest = &self.input[self.pos..];
                let end = rest
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(WbxmlError::Truncated {
                        offset: self.off(),
                        what: "inline string (no NUL terminator)",
                    })?;
                let s = std::str::from_utf8(&rest[..end]).map_err(|e| WbxmlError::InvalidUtf8 {
                    offset: self.off() + e.valid_up_to(),
                    what: "inline string",
                })?;
                self.charge_text(end, off)?;
                self.pos += end + 1;
                Ok(s.to_owned())
            }
            t::STR_T => {
                let idx_off = self.off();
                let idx = self.mb("string table reference")?;
                let s = self.table_str(idx, idx_off)?;
                self.charge_text(s.len(), off)?;
                Ok(s.to_owned())
            }
            _ => {
                let code = self.mb("entity")?;
                let c = char::from_u32(code).ok_or(WbxmlError::BadEntity { offset: off, code })?;
                self.charge_text(4, off)?;
                Ok(c.to_string())
            }
        }
    }

    fn content(&mut self, el: &mut Element, depth: usize) -> Result<(), WbxmlError> {
        loop {
            let off = self.off();
            let tok = self.byte("element content (missing END)")?;
            match tok {
                t::END => return Ok(()),
                t::SWITCH_PAGE => {
                    self.page = self.byte("code page")?;
                }
                t::STR_I | t::STR_T | t::ENTITY => {
                    let s = self.string_token(tok, off)?;
                    match el.children.last_mut() {
                        Some(Node::Text(prev)) => prev.push_str(&s),
                        _ => el.children.push(Node::Text(s)),
                    }
                }
                t::OPAQUE => {
                    let len = self.mb("opaque length")? as usize;
                    let data_off = self.off();
                    let data = self.take(len, "opaque data")?;
                    match (self.opaque(data, data_off, depth)?, el.children.last_mut()) {
                        (Node::Text(s), Some(Node::Text(prev))) => prev.push_str(&s),
                        (node, _) => el.children.push(node),
                    }
                }
                t::PI | t::EXT_I_0..=t::EXT_I_2 | t::EXT_T_0..=t::EXT_T_2 | t::EXT_0..=t::EXT_2 => {
                    return Err(WbxmlError::UnexpectedToken {
                        offset: off,
                        token: tok,
                        context: "PI/extension tokens are not used by SyncML",
                    });
                }
                _ => match self.element(tok, off, depth + 1)? {
                    Some(child) => el.children.push(Node::Element(child)),
                    None => {
                        return Err(WbxmlError::UnexpectedToken {
                            offset: off,
                            token: tok,
                            context: "element content",
                        });
                    }
                },
            }
        }
    }

    /// OPAQUE payload: a nested WBXML document (TNDS/DDF, DevInf) if it parses as one, else UTF-8 text
    /// (libwbxml writes SyncML 1.2 `<Data>` text as OPAQUE), else raw octets.
    fn opaque(
        &mut self,
        data: &'a [u8],
        data_off: usize,
        depth: usize,
    ) -> Result<Node, WbxmlError> {
        if matches!(data.first(), Some(0x01..=0x03)) && data.len() >= 5 {
            let mut budget = *self.text_budget;
            let mut nested = Decoder {
                input: data,
                pos: 0,
                base: self.base + data_off,
                limits: self.limits,
                text_budget: &mut budget,
                depth0: self.depth0 + depth,
                strtbl: &[],
                vocab: self.vocab,
                page: 0,
            };
            match nested.document() {
                Ok(doc) => {
                    *self.text_budget = budget;
                    return Ok(Node::Document(Box::new(doc)));
                }
                // A limit hit inside a nested document is a limit hit, not "binary data".
                Err(e @ WbxmlError::LimitExceeded { .. }) => return Err(e),
                Err(_) => {}
            }
        }
        self.charge_text(data.len(), data_off)?;
        match std::str::from_utf8(data) {
            Ok(s) if s.chars().all(is_xml_char) => Ok(Node::Text(s.to_owned())),
            _ => Ok(Node::Opaque(data.to_vec())),
        }
    }
}

/// Characters XML 1.0 can carry (§2.2 Char), so opaque text can be written back as XML text.
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A conservative XML NCName check (letters, digits, `_ - .`), enough to keep decoded literal names from
/// breaking the XML we write. No `:`: a prefix would need a namespace declaration WBXML cannot carry
/// (found by fuzzing).
pub(crate) fn is_xml_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}
