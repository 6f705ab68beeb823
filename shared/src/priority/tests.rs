use super::*;

/// The nice value of a thread, from /proc (field 19 of `stat`).
#[cfg(target_os = "linux")]
fn nice_of(tid: rustix::process::Pid) -> i32 {
    let tid = tid.as_raw_nonzero().get();
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // The command name (field 2) may hold spaces; count fields after its closing parenthesis.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(16).unwrap().parse().unwrap()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn bulk_threads_run_at_lower_priority_and_return_their_result() {
    let me = rustix::thread::gettid();
    let before = nice_of(me);
    let rx = spawn_bulk("bulk-test", || (nice_of(rustix::thread::gettid()), 6 * 7)).unwrap();
    let (nice, answer) = rx.await.unwrap();
    assert_eq!(answer, 42);
    assert!(nice >= BULK_NICE, "bulk thread at nice {nice}");
    // The caller keeps its priority.
    assert_eq!(nice_of(me), before);
}
