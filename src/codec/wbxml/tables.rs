//! Token tables (code pages) for the vocabularies dmpushd speaks.
//!
//! Sources: SyncML Representation Protocol 1.1 / OMA-TS-SyncML_RepPro-V1_2 (WBXML tag tokens), SyncML
//! Meta-Information 1.1/1.2, SyncML DevInf 1.1/1.2, OMA-TS-DM_TND-V1_2 (DDF) — as tabulated in
//! protocol-facts §E.3–§E.6 and cross-checked against libwbxml's `wbxml_tables.c` (the peer the interop
//! tests run). Tokens 0x00–0x04 of a page are global tokens, so tag tokens start at 0x05.

/// One code page: its namespace (as written in `xmlns`) and the tag names indexed by `token - 5`.
#[derive(Debug)]
pub struct CodePage {
    pub page: u8,
    pub namespace: &'static str,
    pub tags: &'static [&'static str],
}

impl CodePage {
    /// Name of a tag token (low 6 bits), if the page defines it.
    pub fn tag_name(&self, token: u8) -> Option<&'static str> {
        let i = usize::from(token.checked_sub(5)?);
        self.tags.get(i).copied().filter(|n| !n.is_empty())
    }

    /// Token of a tag name, if the page defines it.
    pub fn tag_token(&self, name: &str) -> Option<u8> {
        self.tags
            .iter()
            .position(|n| !n.is_empty() && *n == name)
            .and_then(|i| u8::try_from(i + 5).ok())
    }
}

/// SyncML 1.1 code page 0 (SyncML RepPro 1.1 §8.2): 0x05 Add … 0x34 MoreData. 0x30 is reserved.
const SYNCML11_TAGS: &[&str] = &[
    "Add",
    "Alert",
    "Archive",
    "Atomic",
    "Chal",
    "Cmd",
    "CmdID",
    "CmdRef",
    "Copy",
    "Cred",
    "Data",
    "Delete",
    "Exec",
    "Final",
    "Get",
    "Item",
    "Lang",
    "LocName",
    "LocURI",
    "Map",
    "MapItem",
    "Meta",
    "MsgID",
    "MsgRef",
    "NoResp",
    "NoResults",
    "Put",
    "Replace",
    "RespURI",
    "Results",
    "Search",
    "Sequence",
    "SessionID",
    "SftDel",
    "Source",
    "SourceRef",
    "Status",
    "Sync",
    "SyncBody",
    "SyncHdr",
    "SyncML",
    "Target",
    "TargetRef",
    "",
    "VerDTD",
    "VerProto",
    "NumberOfChanges",
    "MoreData",
];

/// SyncML 1.2 code page 0 (OMA-TS-SyncML_RepPro-V1_2 §8.2): the 1.1 page plus 0x35–0x3C.
const SYNCML12_TAGS: &[&str] = &[
    "Add",
    "Alert",
    "Archive",
    "Atomic",
    "Chal",
    "Cmd",
    "CmdID",
    "CmdRef",
    "Copy",
    "Cred",
    "Data",
    "Delete",
    "Exec",
    "Final",
    "Get",
    "Item",
    "Lang",
    "LocName",
    "LocURI",
    "Map",
    "MapItem",
    "Meta",
    "MsgID",
    "MsgRef",
    "NoResp",
    "NoResults",
    "Put",
    "Replace",
    "RespURI",
    "Results",
    "Search",
    "Sequence",
    "SessionID",
    "SftDel",
    "Source",
    "SourceRef",
    "Status",
    "Sync",
    "SyncBody",
    "SyncHdr",
    "SyncML",
    "Target",
    "TargetRef",
    "",
    "VerDTD",
    "VerProto",
    "NumberOfChanges",
    "MoreData",
    "Field",
    "Filter",
    "Record",
    "FilterType",
    "SourceParent",
    "TargetParent",
    "Move",
    "Correlator",
];

/// MetInf code page 1 (SyncML Meta-Information 1.1 §7 / 1.2 §7); 1.2 adds 0x16 FieldLevel.
const METINF11_TAGS: &[&str] = &[
    "Anchor",
    "EMI",
    "Format",
    "FreeID",
    "FreeMem",
    "Last",
    "Mark",
    "MaxMsgSize",
    "Mem",
    "MetInf",
    "Next",
    "NextNonce",
    "SharedMem",
    "Size",
    "Type",
    "Version",
    "MaxObjSize",
];
const METINF12_TAGS: &[&str] = &[
    "Anchor",
    "EMI",
    "Format",
    "FreeID",
    "FreeMem",
    "Last",
    "Mark",
    "MaxMsgSize",
    "Mem",
    "MetInf",
    "Next",
    "NextNonce",
    "SharedMem",
    "Size",
    "Type",
    "Version",
    "MaxObjSize",
    "FieldLevel",
];

/// DevInf 1.1 code page 0 (SyncML DevInf 1.1 §6).
const DEVINF11_TAGS: &[&str] = &[
    "CTCap",
    "CTType",
    "DataStore",
    "DataType",
    "DevID",
    "DevInf",
    "DevTyp",
    "DisplayName",
    "DSMem",
    "Ext",
    "FwV",
    "HwV",
    "Man",
    "MaxGUIDSize",
    "MaxID",
    "MaxMem",
    "Mod",
    "OEM",
    "ParamName",
    "PropName",
    "Rx",
    "Rx-Pref",
    "SharedMem",
    "Size",
    "SourceRef",
    "SwV",
    "SyncCap",
    "SyncType",
    "Tx",
    "Tx-Pref",
    "ValEnum",
    "VerCT",
    "VerDTD",
    "XNam",
    "XVal",
    "UTC",
    "SupportNumberOfChanges",
    "SupportLargeObjs",
];

/// DevInf 1.2 code page 0 (OMA-TS-DS_DevInf-V1_2 §6): 0x1C becomes MaxSize, 0x2B–0x34 added, 0x2F unused.
const DEVINF12_TAGS: &[&str] = &[
    "CTCap",
    "CTType",
    "DataStore",
    "DataType",
    "DevID",
    "DevInf",
    "DevTyp",
    "DisplayName",
    "DSMem",
    "Ext",
    "FwV",
    "HwV",
    "Man",
    "MaxGUIDSize",
    "MaxID",
    "MaxMem",
    "Mod",
    "OEM",
    "ParamName",
    "PropName",
    "Rx",
    "Rx-Pref",
    "SharedMem",
    "MaxSize",
    "SourceRef",
    "SwV",
    "SyncCap",
    "SyncType",
    "Tx",
    "Tx-Pref",
    "ValEnum",
    "VerCT",
    "VerDTD",
    "XNam",
    "XVal",
    "UTC",
    "SupportNumberOfChanges",
    "SupportLargeObjs",
    "Property",
    "PropParam",
    "MaxOccur",
    "NoTruncate",
    "",
    "Filter-Rx",
    "FilterCap",
    "FilterKeyword",
    "FieldLevel",
    "SupportHierarchicalSync",
];

/// DM DDF 1.2 code page 2 (OMA-TS-DM_TND-V1_2 §7.x WBXML tokens).
const DMDDF12_TAGS: &[&str] = &[
    "AccessType",
    "ACL",
    "Add",
    "b64",
    "bin",
    "bool",
    "chr",
    "CaseSense",
    "CIS",
    "Copy",
    "CS",
    "date",
    "DDFName",
    "DefaultValue",
    "Delete",
    "Description",
    "DFFormat",
    "DFProperties",
    "DFTitle",
    "DFType",
    "Dynamic",
    "Exec",
    "float",
    "Format",
    "Get",
    "int",
    "Man",
    "MgmtTree",
    "MIME",
    "Mod",
    "Name",
    "Node",
    "node",
    "NodeName",
    "null",
    "Occurrence",
    "One",
    "OneOrMore",
    "OneOrN",
    "Path",
    "Permanent",
    "Replace",
    "RTProperties",
    "Scope",
    "Size",
    "time",
    "Title",
    "TStamp",
    "Type",
    "Value",
    "VerDTD",
    "VerNo",
    "xml",
    "ZeroOrMore",
    "ZeroOrN",
    "ZeroOrOne",
];

pub static SYNCML11_PAGE: CodePage = CodePage {
    page: 0,
    namespace: "SYNCML:SYNCML1.1",
    tags: SYNCML11_TAGS,
};
pub static SYNCML12_PAGE: CodePage = CodePage {
    page: 0,
    namespace: "SYNCML:SYNCML1.2",
    tags: SYNCML12_TAGS,
};
pub static METINF11_PAGE: CodePage = CodePage {
    page: 1,
    namespace: "syncml:metinf",
    tags: METINF11_TAGS,
};
pub static METINF12_PAGE: CodePage = CodePage {
    page: 1,
    namespace: "syncml:metinf",
    tags: METINF12_TAGS,
};
pub static DEVINF11_PAGE: CodePage = CodePage {
    page: 0,
    namespace: "syncml:devinf",
    tags: DEVINF11_TAGS,
};
pub static DEVINF12_PAGE: CodePage = CodePage {
    page: 0,
    namespace: "syncml:devinf",
    tags: DEVINF12_TAGS,
};
pub static DMDDF12_PAGE: CodePage = CodePage {
    page: 2,
    namespace: "syncml:dmddf1.2",
    tags: DMDDF12_TAGS,
};

static SYNCML11_PAGES: [&CodePage; 2] = [&SYNCML11_PAGE, &METINF11_PAGE];
static SYNCML12_PAGES: [&CodePage; 2] = [&SYNCML12_PAGE, &METINF12_PAGE];
static DEVINF11_PAGES: [&CodePage; 1] = [&DEVINF11_PAGE];
static DEVINF12_PAGES: [&CodePage; 1] = [&DEVINF12_PAGE];
static DMDDF12_PAGES: [&CodePage; 1] = [&DMDDF12_PAGE];

/// A WBXML vocabulary (one document type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vocabulary {
    SyncMl11,
    SyncMl12,
    DevInf11,
    DevInf12,
    DmDdf12,
}

impl Vocabulary {
    pub const ALL: [Vocabulary; 5] = [
        Vocabulary::SyncMl11,
        Vocabulary::SyncMl12,
        Vocabulary::DevInf11,
        Vocabulary::DevInf12,
        Vocabulary::DmDdf12,
    ];

    /// Formal public identifier (DOCTYPE) of the vocabulary.
    pub fn fpi(self) -> &'static str {
        match self {
            Vocabulary::SyncMl11 => "-//SYNCML//DTD SyncML 1.1//EN",
            Vocabulary::SyncMl12 => "-//SYNCML//DTD SyncML 1.2//EN",
            Vocabulary::DevInf11 => "-//SYNCML//DTD DevInf 1.1//EN",
            Vocabulary::DevInf12 => "-//SYNCML//DTD DevInf 1.2//EN",
            Vocabulary::DmDdf12 => "-//OMA//DTD-DM-DDF 1.2//EN",
        }
    }

    /// Numeric WBXML public id registered with OMNA (facts §E.1); DDF 1.2 has none and uses the
    /// string-table form.
    pub fn public_id(self) -> Option<u32> {
        match self {
            Vocabulary::SyncMl11 => Some(0x0FD3),
            Vocabulary::SyncMl12 => Some(0x1201),
            Vocabulary::DevInf11 => Some(0x0FD4),
            Vocabulary::DevInf12 => Some(0x1203),
            Vocabulary::DmDdf12 => None,
        }
    }

    /// Code pages in use, the default (root) page first.
    pub fn pages(self) -> &'static [&'static CodePage] {
        match self {
            Vocabulary::SyncMl11 => &SYNCML11_PAGES,
            Vocabulary::SyncMl12 => &SYNCML12_PAGES,
            Vocabulary::DevInf11 => &DEVINF11_PAGES,
            Vocabulary::DevInf12 => &DEVINF12_PAGES,
            Vocabulary::DmDdf12 => &DMDDF12_PAGES,
        }
    }

    /// The page the root element lives on.
    pub fn root_page(self) -> &'static CodePage {
        self.pages()[0]
    }

    pub fn page(self, page: u8) -> Option<&'static CodePage> {
        self.pages().iter().copied().find(|p| p.page == page)
    }

    pub fn page_for_ns(self, ns: &str) -> Option<&'static CodePage> {
        self.pages()
            .iter()
            .copied()
            .find(|p| p.namespace.eq_ignore_ascii_case(ns))
    }

    pub fn from_public_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.public_id() == Some(id))
    }

    pub fn from_fpi(fpi: &str) -> Option<Self> {
        let fpi = fpi.trim();
        Self::ALL.into_iter().find(|v| v.fpi() == fpi)
    }

    /// From the root element's namespace. DevInf's namespace is shared by 1.1 and 1.2; without a
    /// DOCTYPE we pick 1.2 (what libwbxml does, and a superset for decoding).
    pub fn from_root_ns(ns: &str) -> Option<Self> {
        if ns.eq_ignore_ascii_case("SYNCML:SYNCML1.1") {
            Some(Vocabulary::SyncMl11)
        } else if ns.eq_ignore_ascii_case("SYNCML:SYNCML1.2") {
            Some(Vocabulary::SyncMl12)
        } else if ns.eq_ignore_ascii_case("syncml:devinf") {
            Some(Vocabulary::DevInf12)
        } else if ns.eq_ignore_ascii_case("syncml:dmddf1.2") {
            Some(Vocabulary::DmDdf12)
        } else {
            None
        }
    }
}

/// Vocabularies a `<Data>` element may carry as a nested WBXML document (e.g. a TNDS/DDF tree in an
/// `Add`, DevInf in `Results`), keyed by the nested root's namespace.
pub fn nested_vocabulary(ns: &str) -> Option<Vocabulary> {
    match Vocabulary::from_root_ns(ns)? {
        v @ (Vocabulary::DmDdf12 | Vocabulary::DevInf12) => Some(v),
        _ => None,
    }
}
