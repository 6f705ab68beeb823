//! `jdc-tests`: support for end-to-end tests that run the jdc binaries as real processes.
//!
//! - [`bitcoind`]: a real regtest `bitcoind` on free ports with ZMQ notifications, killed on drop.

pub mod bitcoind;

/// Running the jdc binaries as processes.
pub mod stack;
