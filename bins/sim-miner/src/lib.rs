//! `jdc-sim-miner`: an SV2 CPU miner for tests, the demo and load tests.
//!
//! - [`cli`]: command line and its validation.
//! - [`session`]: the I/O shell (connect, set up, open a channel, submit shares, reconnect).
//! - [`job`]: the channel's jobs, tip and target (pure).
//! - [`work`]: header and merkle math (pure).
//! - [`hasher`]: hashing threads, work switching and submission pacing.
//! - [`events`]: the JSON-line events tests and the demo read.
#![forbid(unsafe_code)]

pub mod cli;
pub mod events;
pub mod hasher;
pub mod job;
pub mod session;
pub mod work;

pub use cli::Args;
pub use events::{Event, Events};
pub use job::ChannelKind;
pub use session::{run, MinerConfig, MinerError};
