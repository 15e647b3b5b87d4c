//! WDP over GSM SMS (3GPP TS 23.040 §9.2.3.24; WAP-259-WDP annex for GSM SMS): the user data
//! header (UDH) with 16-bit application port addressing and concatenation, and segmentation of a
//! WDP datagram (a WSP PDU) into 8-bit SMS user data. Sans-IO.
//!
//! Facts: protocol-facts §B.1 (IEIs, Kannel's `06 05 04 0B 84 23 F0`), §B.2 (140 octets of TP-UD,
//! port IE repeated in every segment, segmentation of the whole datagram).

use thiserror::Error;

/// Maximum TP-UD length for 8-bit data (TS 23.040 §9.2.3.16; Kannel `SMS_8BIT_MAX_LEN`).
pub const MAX_UD: usize = 140;
/// WAP push client port, connectionless (IANA `wap-wsp-push`; protocol-facts §A.9).
pub const PORT_WAP_PUSH: u16 = 2948;
/// WAP push client port, secure (WTLS) connectionless (`wap-wsp-s-push`).
pub const PORT_WAP_PUSH_SECURE: u16 = 2949;
/// Connectionless WSP server port used as the source (Kannel `CONNECTIONLESS_SERVPORT`).
pub const PORT_WSP: u16 = 9200;

/// Information element identifiers (TS 23.040 §9.2.3.24; protocol-facts §B.1).
pub mod iei {
    pub const CONCAT_8: u8 = 0x00;
    pub const PORT_8: u8 = 0x04;
    pub const PORT_16: u8 = 0x05;
    pub const CONCAT_16: u8 = 0x08;
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SmsError {
    #[error("the datagram needs {needed} SMS segments, more than the maximum of {max}")]
    TooManySegments { needed: usize, max: usize },
    #[error("empty user data")]
    Empty,
    #[error("UDH length {udhl} at offset 0 exceeds the user data ({len} octets)")]
    UdhOverrun { udhl: usize, len: usize },
    #[error("information element 0x{iei:02X} at offset {offset} overruns the UDH")]
    IeOverrun { offset: usize, iei: u8 },
    #[error(
        "information element 0x{iei:02X} at offset {offset} has length {len}, expected {expected}"
    )]
    IeLength {
        offset: usize,
        iei: u8,
        len: usize,
        expected: usize,
    },
    #[error("concatenation IE at offset {offset}: part {seq} of {total} is invalid")]
    BadConcat { offset: usize, seq: u8, total: u8 },
}

/// Concatenation reference width (TS 23.040 §9.2.3.24.1 / .8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefWidth {
    #[default]
    #[serde(rename = "8")]
    Eight,
    #[serde(rename = "16")]
    Sixteen,
}

/// What a segment plan needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentOptions {
    pub dest_port: u16,
    pub src_port: u16,
    pub ref_width: RefWidth,
    /// Reference shared by the parts of one datagram (only the low 8 bits with [`RefWidth::Eight`]).
    pub reference: u16,
    pub max_segments: usize,
}

/// One SMS of a datagram: the UDH (with UDHL) and the payload slice it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub udh: Vec<u8>,
    pub payload: Vec<u8>,
    /// 1-based part number and total (1/1 for a single SMS).
    pub seq: u8,
    pub total: u8,
}

impl Segment {
    /// TP-UD / SMPP short_message: UDHL + IEs + payload.
    pub fn user_data(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.udh.len() + self.payload.len());
        v.extend_from_slice(&self.udh);
        v.extend_from_slice(&self.payload);
        v
    }
}

fn port_ie(dest: u16, src: u16) -> [u8; 6] {
    let d = dest.to_be_bytes();
    let s = src.to_be_bytes();
    [iei::PORT_16, 4, d[0], d[1], s[0], s[1]]
}

/// Payload capacity per SMS: single (port IE only) and per part (port + concat IE).
pub fn capacity(ref_width: RefWidth) -> (usize, usize) {
    let concat = match ref_width {
        RefWidth::Eight => 5,
        RefWidth::Sixteen => 6,
    };
    // UDHL octet + port IE (6) [+ concat IE]: 133 single, 128 / 127 per part (protocol-facts §B.2).
    (MAX_UD - 7, MAX_UD - 7 - concat)
}

/// Number of SMS a datagram of `len` octets needs.
pub fn segment_count(len: usize, ref_width: RefWidth) -> usize {
    let (single, part) = capacity(ref_width);
    if len <= single { 1 } else { len.div_ceil(part) }
}

/// Splits a WDP datagram into SMS segments, each with the port IE and — when more than one is
/// needed — the concatenation IE (protocol-facts §B.1/§B.2).
pub fn segment(datagram: &[u8], opts: &SegmentOptions) -> Result<Vec<Segment>, SmsError> {
    let needed = segment_count(datagram.len(), opts.ref_width);
    let max = opts.max_segments.min(255);
    if needed > max {
        return Err(SmsError::TooManySegments { needed, max });
    }
    let port = port_ie(opts.dest_port, opts.src_port);
    if needed == 1 {
        let mut udh = vec![port.len() as u8];
        udh.extend_from_slice(&port);
        return Ok(vec![Segment {
            udh,
            payload: datagram.to_vec(),
            seq: 1,
            total: 1,
        }]);
    }
    let (_, part) = capacity(opts.ref_width);
    let total = needed as u8;
    Ok(datagram
        .chunks(part)
        .enumerate()
        .map(|(i, chunk)| {
            let seq = (i + 1) as u8;
            // Kannel order: port IE, then concat IE (protocol-facts §B.1).
            let mut ies = port.to_vec();
            match opts.ref_width {
                RefWidth::Eight => {
                    ies.extend_from_slice(&[iei::CONCAT_8, 3, opts.reference as u8, total, seq])
                }
                RefWidth::Sixteen => {
                    let r = opts.reference.to_be_bytes();
                    ies.extend_from_slice(&[iei::CONCAT_16, 4, r[0], r[1], total, seq]);
                }
            }
            let mut udh = vec![ies.len() as u8];
            udh.extend_from_slice(&ies);
            Segment {
                udh,
                payload: chunk.to_vec(),
                seq,
                total,
            }
        })
        .collect())
}

/// Decoded user data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserData {
    pub dest_port: Option<u16>,
    pub src_port: Option<u16>,
    /// (reference, total, seq)
    pub concat: Option<(u16, u8, u8)>,
    pub payload: Vec<u8>,
}

/// Parses UDHI user data (UDHL + IEs + payload). Unknown IEs are skipped.
pub fn parse_user_data(ud: &[u8]) -> Result<UserData, SmsError> {
    let udhl = *ud.first().ok_or(SmsError::Empty)? as usize;
    if udhl + 1 > ud.len() {
        return Err(SmsError::UdhOverrun {
            udhl,
            len: ud.len(),
        });
    }
    let mut out = UserData {
        payload: ud[udhl + 1..].to_vec(),
        ..Default::default()
    };
    let mut i = 1;
    while i < udhl + 1 {
        let id = ud[i];
        let len = *ud
            .get(i + 1)
            .filter(|_| i + 1 < udhl + 1)
            .ok_or(SmsError::IeOverrun { offset: i, iei: id })? as usize;
        let data = ud
            .get(i + 2..i + 2 + len)
            .filter(|_| i + 2 + len <= udhl + 1)
            .ok_or(SmsError::IeOverrun { offset: i, iei: id })?;
        let want = |expected: usize| {
            if len == expected {
                Ok(())
            } else {
                Err(SmsError::IeLength {
                    offset: i,
                    iei: id,
                    len,
                    expected,
                })
            }
        };
        match id {
            iei::PORT_16 => {
                want(4)?;
                out.dest_port = Some(u16::from_be_bytes([data[0], data[1]]));
                out.src_port = Some(u16::from_be_bytes([data[2], data[3]]));
            }
            iei::PORT_8 => {
                want(2)?;
                out.dest_port = Some(u16::from(data[0]));
                out.src_port = Some(u16::from(data[1]));
            }
            iei::CONCAT_8 | iei::CONCAT_16 => {
                let (r, t, s) = if id == iei::CONCAT_8 {
                    want(3)?;
                    (u16::from(data[0]), data[1], data[2])
                } else {
                    want(4)?;
                    (u16::from_be_bytes([data[0], data[1]]), data[2], data[3])
                };
                if t == 0 || s == 0 || s > t {
                    return Err(SmsError::BadConcat {
                        offset: i,
                        seq: s,
                        total: t,
                    });
                }
                out.concat = Some((r, t, s));
            }
            _ => {}
        }
        i += 2 + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(max: usize, w: RefWidth) -> SegmentOptions {
        SegmentOptions {
            dest_port: PORT_WAP_PUSH,
            src_port: PORT_WSP,
            ref_width: w,
            reference: 0x142,
            max_segments: max,
        }
    }

    #[test]
    fn single_sms_udh_is_kannels() {
        let segs = segment(&[1, 6, 3, 0xC4, 0xAF, 0x87], &opts(5, RefWidth::Eight)).unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(hex::encode(&segs[0].udh), "0605040b8423f0");
        assert_eq!(segs[0].user_data().len(), 13);
    }

    #[test]
    fn boundaries_133_and_128() {
        assert_eq!(segment_count(133, RefWidth::Eight), 1);
        assert_eq!(segment_count(134, RefWidth::Eight), 2);
        assert_eq!(segment_count(256, RefWidth::Eight), 2);
        assert_eq!(segment_count(257, RefWidth::Eight), 3);
        assert_eq!(segment_count(254, RefWidth::Sixteen), 2);
        assert_eq!(segment_count(255, RefWidth::Sixteen), 3);
    }

    #[test]
    fn concat_8_and_16_layouts() {
        let data: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let s8 = segment(&data, &opts(5, RefWidth::Eight)).unwrap();
        assert_eq!(s8.len(), 3);
        assert_eq!(hex::encode(&s8[1].udh), "0b05040b8423f00003420302");
        assert!(s8.iter().all(|s| s.user_data().len() <= MAX_UD));
        let s16 = segment(&data, &opts(5, RefWidth::Sixteen)).unwrap();
        assert_eq!(hex::encode(&s16[0].udh), "0c05040b8423f0080401420301");
        let joined: Vec<u8> = s16.iter().flat_map(|s| s.payload.clone()).collect();
        assert_eq!(joined, data);
        for s in &s16 {
            let ud = parse_user_data(&s.user_data()).unwrap();
            assert_eq!(ud.dest_port, Some(2948));
            assert_eq!(ud.src_port, Some(9200));
            assert_eq!(ud.concat, Some((0x142, 3, s.seq)));
        }
    }

    #[test]
    fn too_many_segments_names_the_count() {
        let err = segment(&[0u8; 600], &opts(3, RefWidth::Eight)).unwrap_err();
        assert_eq!(err, SmsError::TooManySegments { needed: 5, max: 3 });
        assert!(err.to_string().contains("5 SMS segments"));
    }

    #[test]
    fn parse_errors_name_offsets() {
        assert_eq!(
            parse_user_data(&[9, 5, 4]).unwrap_err(),
            SmsError::UdhOverrun { udhl: 9, len: 3 }
        );
        assert_eq!(
            parse_user_data(&[4, 5, 4, 0x0B, 0x84]).unwrap_err(),
            SmsError::IeOverrun { offset: 1, iei: 5 }
        );
        assert_eq!(
            parse_user_data(&[5, 0, 3, 1, 2, 3]).unwrap_err(),
            SmsError::BadConcat {
                offset: 1,
                seq: 3,
                total: 2
            }
        );
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..160)) {
            let _ = parse_user_data(&data);
        }

        #[test]
        fn segments_reassemble(len in 0usize..2000, wide in proptest::prelude::any::<bool>()) {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let w = if wide { RefWidth::Sixteen } else { RefWidth::Eight };
            let segs = segment(&data, &opts(255, w)).unwrap();
            proptest::prop_assert_eq!(segs.len(), segment_count(len, w));
            let mut joined = Vec::new();
            for s in &segs {
                proptest::prop_assert!(s.user_data().len() <= MAX_UD);
                let ud = parse_user_data(&s.user_data()).unwrap();
                joined.extend(ud.payload);
            }
            proptest::prop_assert_eq!(joined, data);
        }
    }
}
