//! Operator tools behind `dmpushd <subcommand>`.

pub mod encode;
