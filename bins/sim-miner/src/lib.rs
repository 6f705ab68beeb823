//! `jdc-sim-miner`: an SV2 (or Stratum V1) CPU miner for tests, the demo and load tests.
//!
//! - [`cli`]: command line and its validation.
//! - [`session`]: the SV2 I/O shell (connect, set up, open a channel, submit shares).
//! - [`sv1`]: the Stratum V1 mode (messages, jobs, its I/O shell).
//! - `runner`: what both share: hashing threads, reconnecting with backoff, the rate log.
//! - [`job`]: the channel's jobs, tip and target (pure).
//! - [`work`]: header and merkle math (pure).
//! - [`hasher`]: hashing threads, work switching and submission pacing.
//! - [`events`]: the JSON-line events tests and the demo read.
#![forbid(unsafe_code)]

pub mod cli;
pub mod events;
pub mod hasher;
pub mod job;
mod runner;
pub mod session;
pub mod sv1;
pub mod work;

pub use cli::{Args, Config, Protocol};
pub use events::{Event, Events};
pub use job::ChannelKind;
pub use runner::MinerError;
pub use session::{run, MinerConfig};
pub use sv1::Sv1Config;
