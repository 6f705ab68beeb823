//! `jdc-declarator`: the SV2 side of jdc. In this version it mines solo: it builds the
//! coinbase paying the operator, serves the SV2 Mining protocol to the operator's devices, and
//! submits found blocks to bitcoind.
//!
//! - [`work`]: tips and selections → templates for the channel logic (pure).
//! - [`templates`]: the watcher's templates that selections refer to (pure).
//! - [`payout`]: coinbase payout outputs (pure).
//! - [`block`]: block assembly from a solving share (pure).
//! - [`downstream`]: the SV2 mining server for devices.
//! - [`node`]: `submitblock` over RPC.
//! - [`sv1`]: the Stratum V1 server for devices that speak only V1.
//! - [`service`]: wiring of the tasks.
//! - [`upstream`]: pool-side connections (Job Declarator Server client; not wired in yet).
#![forbid(unsafe_code)]

pub mod block;
pub mod downstream;
pub mod node;
pub mod payout;
pub mod service;
pub mod sv1;
pub mod templates;
pub mod upstream;
pub mod work;

pub use service::{run, RunError};
