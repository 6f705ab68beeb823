use super::*;
use std::sync::Arc;

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);
impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn events_are_one_json_object_per_line_with_kebab_case_names() {
    let buf = Shared::default();
    let events = Events::writer(Box::new(buf.clone()));
    events.emit(Event::Connected {
        server: "127.0.0.1:1".into(),
        authenticated: true,
    });
    events.emit(Event::SetNewPrevHash {
        channel_id: 1,
        job_id: 2,
        prev_hash: "00ff".into(),
        min_ntime: 3,
        nbits: 0x207fffff,
        known_job: true,
        t_us: 4,
    });
    events.emit(Event::NewJob {
        channel_id: 1,
        job_id: 2,
        future: true,
        version: 0x2000_0000,
        version_rolling_allowed: true,
        merkle_path_len: Some(0),
        coinbase_outputs: None,
        t_us: 5,
    });
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["event"], "connected");
    assert_eq!(lines[1]["event"], "set-new-prev-hash");
    assert_eq!(lines[1]["nbits"], 0x207fffff);
    assert_eq!(lines[2]["event"], "new-job");
    assert_eq!(lines[2]["merkle_path_len"], 0);
    assert!(lines[2].get("coinbase_outputs").is_none());
    // And they parse back into the typed events.
    let back: Event = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert!(matches!(back, Event::SetNewPrevHash { job_id: 2, .. }));
}
