//! `jdc-top`: a live terminal dashboard of the jdc stack, fed only by the bus.
//!
//! Subscribes to the `watcher`, `selector` and `declarator` streams (every topic but the full
//! `template`, whose `summary` says enough) and draws what they say: chain tip and template,
//! the selection and what it dropped, pool or solo mining and every upstream, declared jobs,
//! devices and their hashrate, blocks, process liveness and recent events.
//!
//! - [`state`]: the model, folded from decoded bus messages (pure, clock passed in).
//! - [`view`]: draws the model into a ratatui frame (pure).
//! - [`keys`]: what each key does (pure).
//! - [`format`]: numbers, ages and hashes as text (pure).
//! - [`app`]: the I/O shell (bus, terminal, keys, redraw ticks).
#![forbid(unsafe_code)]

pub mod app;
pub mod format;
pub mod keys;
pub mod state;
pub mod view;

use std::path::Path;
use std::sync::Mutex;

use jdc_shared::telemetry::LogFormat;
use tracing_subscriber::EnvFilter;

pub use app::{run, Options, RunError};

/// Topics read: every one but the full `template` (megabytes; its `summary` says enough).
pub use jdc_shared::monitor::TOPICS;

/// Sends this process's logs to `path` (appended), since the terminal belongs to the
/// dashboard. `RUST_LOG` filters them (default `info`).
pub fn log_to_file(path: &Path, format: LogFormat) -> Result<(), std::io::Error> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Mutex::new(file))
        .with_ansi(false);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| std::io::Error::other(e.to_string()))
}
