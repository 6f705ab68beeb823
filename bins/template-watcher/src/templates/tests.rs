use super::*;

#[test]
fn ids_increase_even_within_one_microsecond() {
    let c = IdClock::default();
    let ids: Vec<u64> = (0..1000).map(|_| c.next()).collect();
    assert!(ids.windows(2).all(|w| w[1] > w[0]));
    assert!(ids[0] > 1_600_000_000_000_000, "unix microseconds");
}
