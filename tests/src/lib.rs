//! `jdc-tests`: support for end-to-end tests that run the jdc binaries as real processes.
//!
//! - [`bitcoind`]: a real regtest `bitcoind` on free ports with ZMQ notifications, killed on drop.
//! - [`jds`]: a strict test Job Declarator Server on SRI's crates.
//! - [`pool`]: a strict test pool (Mining protocol, SRI's server channel).

pub mod bitcoind;
pub mod jds;
pub mod pool;

/// Running the jdc binaries as processes.
pub mod stack;
