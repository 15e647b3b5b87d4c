//! Operator tools behind `dmpushd <subcommand>`.

pub mod encode;
pub mod encode_wire;
