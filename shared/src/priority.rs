//! Scheduling priority of bulk work.
//!
//! On a small machine the tip path (a new block → jobs at the devices, a millisecond budget)
//! shares the CPU with bulk work that follows every tip: parsing a 4 MB `getblocktemplate`,
//! choosing transactions, hashing a selection, serving metrics. Bulk work runs at a lower
//! priority (nice [`BULK_NICE`]), so the kernel runs the tip path first whenever both are
//! ready. Lowering a priority needs no privilege, raising it back does; so bulk work gets its
//! own threads ([`spawn_bulk`]) or a whole process is lowered ([`lower_process`]).

/// Nice value of bulk work (the tip path runs at the default, 0).
pub const BULK_NICE: i32 = 10;

/// Lowest priority, for simulators whose work must never delay the stack (the sim-miner's
/// hashing threads).
pub const IDLE_NICE: i32 = 19;

/// Sets the calling thread's nice value (Linux; elsewhere nothing happens). Only lowering is
/// expected to succeed without privileges; a failure is logged once per call at debug level.
pub fn lower_current_thread(nice: i32) {
    #[cfg(target_os = "linux")]
    set_nice(rustix::thread::gettid(), nice);
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// Sets the nice value of every thread of this process; threads started later inherit it from
/// the thread that starts them.
pub fn lower_process(nice: i32) {
    #[cfg(target_os = "linux")]
    match std::fs::read_dir("/proc/self/task") {
        Ok(tasks) => {
            for task in tasks.flatten() {
                let tid = task.file_name().to_str().and_then(|t| t.parse().ok());
                if let Some(pid) = tid.and_then(rustix::process::Pid::from_raw) {
                    set_nice(pid, nice);
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "cannot list threads to lower their priority"),
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// `setpriority(PRIO_PROCESS, tid)`: on Linux a thread id names one thread.
#[cfg(target_os = "linux")]
fn set_nice(tid: rustix::process::Pid, nice: i32) {
    if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
        tracing::debug!(tid = tid.as_raw_nonzero().get(), nice, error = %e, "cannot change thread priority");
    }
}

/// Runs `f` on a new thread at bulk priority; its result arrives on the returned receiver
/// (an error there means the thread died without a result).
pub fn spawn_bulk<R, F>(name: &str, f: F) -> std::io::Result<tokio::sync::oneshot::Receiver<R>>
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_current_thread(BULK_NICE);
            let _ = tx.send(f());
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests;
