//! `jdc-shared`: what every jdc process has in common.
//!
//! - [`bus`]: the ZeroMQ message bus (envelope, topics, publisher, subscriber).
//! - [`messages`]: the payloads carried on the bus (tips, templates, selections, events).
//! - [`config`]: the one TOML configuration of the stack, with env and CLI overrides.
//! - [`chain`]: bitcoin helpers (merkle paths, witness commitments, subsidy, hex hashes).
//! - [`net`]: the accept loop every jdc server shares.
//! - [`telemetry`]: tracing set-up.
//! - [`shutdown`]: SIGINT/SIGTERM handling.
//! - [`sv2`]: SV2 Noise transport and authority keys (declarator, sim-miner).
//! - [`tdp`]: SV2 Template Distribution messages built from a block's parts.
#![forbid(unsafe_code)]

pub mod bus;
pub mod chain;
pub mod config;
pub mod messages;
pub mod metric_names;
pub mod monitor;
pub mod net;
pub mod priority;
pub mod shutdown;
pub mod sv2;
pub mod tdp;
pub mod telemetry;
pub mod time;

pub use stratum_core::bitcoin;
