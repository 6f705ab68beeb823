use super::*;

#[test]
fn gap_warnings_are_rate_limited() {
    let t0 = std::time::Instant::now();
    let mut g = GapLog::default();
    assert_eq!(g.add(3, t0), Some(3));
    assert_eq!(g.add(2, t0 + GapLog::EVERY / 2), None);
    assert_eq!(g.add(1, t0 + GapLog::EVERY / 2), None);
    assert_eq!(g.add(4, t0 + GapLog::EVERY), Some(7));
}

#[test]
fn block_stream_proves_parents_only_without_disconnections_or_losses() {
    let mut s = BlockStream::default();
    assert_eq!(s.connected("a"), None, "first block event: parent unproven");
    assert_eq!(s.connected("b"), Some("a".into()));
    assert_eq!(s.connected("c"), Some("b".into()));
    s.disconnected();
    assert_eq!(s.connected("c2"), None, "after a disconnection");
    assert_eq!(s.connected("d2"), Some("c2".into()));
    s.lost();
    assert_eq!(s.connected("e2"), None, "after a loss");
    assert_eq!(s.connected("f2"), Some("e2".into()));
}

#[test]
fn sequence_gaps_and_restarts() {
    let mut t = SeqTracker::default();
    assert_eq!(t.observe("hashblock", 0), SeqCheck::InOrder);
    assert_eq!(t.observe("hashblock", 1), SeqCheck::InOrder);
    assert_eq!(
        t.observe("sequence", 7),
        SeqCheck::InOrder,
        "topics are separate"
    );
    assert_eq!(t.observe("hashblock", 4), SeqCheck::Gap { missed: 2 });
    assert_eq!(t.observe("hashblock", 0), SeqCheck::Restarted);
    assert_eq!(t.observe("hashblock", 1), SeqCheck::InOrder);
    assert_eq!(
        t.observe("sequence", u32::MAX),
        SeqCheck::Gap {
            missed: u32::MAX - 8
        }
    );
    assert_eq!(t.observe("sequence", 0), SeqCheck::InOrder, "wraps");
}
