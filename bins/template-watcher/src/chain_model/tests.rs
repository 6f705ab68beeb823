use super::*;

const BITS: u32 = 0x1703_1234;

fn hash(n: u32) -> String {
    format!("{n:064x}")
}

/// Facts of a chain of blocks at heights `from..from + times.len()`, the block at height
/// `h` hashed `hash(h + 1_000_000 * branch)`.
fn chain(from: u32, times: &[u32], branch: u32) -> Vec<BlockFacts> {
    times
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let height = from + i as u32;
            BlockFacts {
                hash: hash(height + 1_000_000 * branch),
                height,
                bits: BITS,
                time: t,
                prev: (height > 0).then(|| hash(height - 1 + 1_000_000 * branch)),
            }
        })
        .collect()
}

fn model_of(blocks: &[BlockFacts]) -> ChainModel {
    let mut m = ChainModel::default();
    for b in blocks {
        m.learn(b.clone());
    }
    m
}

#[test]
fn header_facts_are_checked() {
    let h: HeaderInfo =
        serde_json::from_str(include_str!("../../tests/fixtures/header-regtest.json")).unwrap();
    let f = BlockFacts::from_header(&h).unwrap();
    assert_eq!(
        (f.height, f.bits, f.time),
        (101, 0x207f_ffff, 1_795_565_596)
    );
    assert_eq!(f.prev, h.previousblockhash);
    let mut bad = h.clone();
    bad.previousblockhash = None;
    let e = BlockFacts::from_header(&bad).unwrap_err().to_string();
    assert!(e.contains("previousblockhash"), "{e}");
    bad.height = 0;
    assert!(
        BlockFacts::from_header(&bad).is_ok(),
        "genesis has no parent"
    );
    let mut bad = h;
    bad.bits = "zz".into();
    assert!(BlockFacts::from_header(&bad).is_err());
}

#[test]
fn heights_follow_a_sequence_of_connected_blocks() {
    // 12 known blocks at heights 500..512, then blocks connected one by one; each is
    // learnt (as the tip task does after publishing) before the next arrives.
    let times: Vec<u32> = (0..40).map(|i| 1_700_000_000 + 600 * i).collect();
    let all = chain(500, &times, 0);
    let mut m = model_of(&all[..12]);
    for i in 12..all.len() {
        let (block, parent) = (&all[i], &all[i - 1]);
        let p = m
            .predict(&block.hash, &parent.hash, Network::Bitcoin)
            .unwrap();
        assert_eq!(p.block_height, block.height);
        assert_eq!(
            p.next_height,
            block.height + 1,
            "height of the block to mine"
        );
        assert_eq!(p.nbits, BITS);
        // increasing times: the exact MTP of the window ending at `block` is its 6th
        // element, 5 blocks back, and a new block later than all others makes the bound
        // exact.
        let exact = median_time_past(&times[i - 10..=i]);
        assert_eq!(exact, times[i - 5]);
        assert_eq!(p.min_time, exact + 1);
        p.check(block, exact).unwrap();
        let tip = p.tip(Network::Bitcoin, 5, 0x2000_0000, 77);
        assert_eq!(tip.height, block.height + 1);
        assert_eq!(tip.prev_hash, block.hash);
        assert_eq!((tip.nbits, tip.min_time), (BITS, p.min_time));
        assert_eq!(tip.time, p.min_time, "clock behind: min_time wins");
        assert_eq!(
            tip.subsidy,
            chain::subsidy(block.height + 1, Network::Bitcoin)
        );
        assert_eq!((tip.detected_at_us, tip.detected_by.as_str()), (77, "zmq"));
        assert_eq!(p.tip(Network::Bitcoin, u32::MAX, 1, 0).time, u32::MAX);
        m.learn(block.clone());
    }
}

#[test]
fn learning_only_the_missing_blocks() {
    let times: Vec<u32> = (0..30).map(|i| 1000 + i).collect();
    let all = chain(100, &times, 0);
    let mut m = ChainModel::default();
    let tip = &all[29].hash;
    // Backfill order: the tip, then its ancestors from the newest, 10 blocks in all.
    let mut fetched = Vec::new();
    while let Some(h) = m.next_missing(tip) {
        let b = all.iter().find(|b| b.hash == h).unwrap();
        fetched.push(b.height);
        m.learn(b.clone());
    }
    assert_eq!(fetched, (120..=129).rev().collect::<Vec<_>>());
    // One more block: only it is missing.
    assert_eq!(m.next_missing(&hash(130)), Some(hash(130)));
    // Near genesis the window stops at the genesis block.
    let g = chain(0, &[1, 2, 3], 0);
    let mut m = ChainModel::default();
    while let Some(h) = m.next_missing(&g[2].hash) {
        m.learn(g.iter().find(|b| b.hash == h).unwrap().clone());
    }
    assert_eq!(m.len(), 3);
}

#[test]
fn falls_back_when_the_model_cannot_prove_the_values() {
    let times: Vec<u32> = (0..12).map(|i| 1000 + i).collect();
    let all = chain(1000, &times, 0);
    let m = model_of(&all);
    let (last, next) = (&all[11].hash, hash(1012));
    assert!(m.predict(&next, last, Network::Bitcoin).is_ok());
    // unknown parent
    assert_eq!(
        m.predict(&next, &hash(7), Network::Bitcoin),
        Err(Fallback::UnknownParent(hash(7)))
    );
    // incomplete window: 9 blocks known ending at the parent
    let m9 = model_of(&all[3..]);
    assert_eq!(
        m9.predict(&next, last, Network::Bitcoin),
        Err(Fallback::IncompleteWindow(hash(1002)))
    );
    // testnets: always
    for n in [Network::Testnet, Network::Testnet4] {
        assert_eq!(
            m.predict(&next, last, n),
            Err(Fallback::TimeDependentTarget)
        );
    }
    // retarget boundaries: the connected block at 2016·k, or the next one
    for (from, boundary) in [(2004, 2016), (2003, 2016)] {
        let c = chain(from, &times, 0);
        let m = model_of(&c);
        let p = &c[11];
        for n in [Network::Bitcoin, Network::Signet] {
            assert_eq!(
                m.predict(&hash(p.height + 1), &p.hash, n),
                Err(Fallback::Retarget(boundary))
            );
        }
        // regtest never retargets
        assert!(m
            .predict(&hash(p.height + 1), &p.hash, Network::Regtest)
            .is_ok());
    }
    // just after a boundary: fine again
    let c = chain(2005, &times, 0);
    assert!(model_of(&c)
        .predict(&hash(2017), &c[11].hash, Network::Bitcoin)
        .is_ok());
}

#[test]
fn near_genesis_the_window_is_shorter() {
    // Block 1 on genesis: window of 2 (genesis and block 1), the unknown decides.
    let g = chain(0, &[100, 200, 300, 400], 0);
    let m = model_of(&g);
    assert_eq!(
        m.predict(&hash(1), &g[0].hash, Network::Regtest),
        Err(Fallback::NearGenesis)
    );
    // Block 3 on block 2: window of 4 blocks (0..=3), median index 2, known 100,200,300.
    let p = m.predict(&hash(3), &g[2].hash, Network::Regtest).unwrap();
    assert_eq!(p.min_time, 301);
    for t3 in [0, 150, 250, 1000] {
        let exact = median_time_past(&[100, 200, 300, t3]);
        assert!(p.min_time > exact, "t3={t3}");
    }
    assert_eq!(p.next_height, 4);
}

#[test]
fn a_disproved_prediction_names_the_field() {
    let times: Vec<u32> = (0..12).map(|i| 1000 + 10 * i).collect();
    let all = chain(50, &times, 0);
    let m = model_of(&all[..11]);
    let p = m
        .predict(&all[11].hash, &all[10].hash, Network::Regtest)
        .unwrap();
    let exact = median_time_past(&times[1..]);
    assert!(p.check(&all[11], exact).is_ok());
    assert!(
        p.check(&all[11], exact - 50).is_ok(),
        "higher min_time is valid"
    );
    assert_eq!(p.check(&all[11], p.min_time).unwrap_err().field, "min_time");
    let mut b = all[11].clone();
    b.height += 1;
    assert_eq!(p.check(&b, exact).unwrap_err().field, "height");
    let mut b = all[11].clone();
    b.bits = 1;
    let e = p.check(&b, exact).unwrap_err();
    assert_eq!(e.field, "nbits");
    assert!(e.to_string().contains("00000001"), "{e}");
    let mut b = all[11].clone();
    b.prev = Some(hash(9));
    assert_eq!(p.check(&b, exact).unwrap_err().field, "previousblockhash");
    let mut b = all[11].clone();
    b.hash = hash(9);
    assert_eq!(p.check(&b, exact).unwrap_err().field, "hash");
}

#[test]
fn both_branches_of_a_reorg_fit_and_old_blocks_are_evicted() {
    let times: Vec<u32> = (0..20).map(|i| 1000 + i).collect();
    let main = chain(100, &times, 0);
    let mut side = chain(110, &times[10..], 1);
    side[0].prev = Some(main[9].hash.clone());
    let mut m = model_of(&main);
    for b in &side {
        m.learn(b.clone());
    }
    assert!(m
        .predict(&hash(120), &main[19].hash, Network::Regtest)
        .is_ok());
    assert!(m
        .predict(&hash(1_000_120), &side[9].hash, Network::Regtest)
        .is_ok());
    let mut small = ChainModel::with_capacity(MTP_SPAN as usize);
    for b in &main {
        small.learn(b.clone());
    }
    assert_eq!(small.len(), MTP_SPAN as usize);
    assert!(small.get(&main[8].hash).is_none());
    assert!(small.get(&main[9].hash).is_some());
    small.learn(main[19].clone());
    assert_eq!(small.len(), MTP_SPAN as usize, "re-learning is a no-op");
}

/// A small deterministic pseudo-random generator (xorshift64*), for property tests
/// without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32 % n
    }
}

/// The property, on the bound alone: for 10 known times and any time of the new block,
/// the bound + 1 is above the exact MTP, and the bound is reached when the new block is
/// the newest of the window (so no smaller `min_time` is valid whatever its time).
fn check_bound(known: &[u32], block_time: u32) -> u32 {
    let bound = mtp_upper_bound(known, 11).unwrap();
    let mut times = known.to_vec();
    times.push(block_time);
    let exact = median_time_past(&times);
    assert!(
        bound >= exact,
        "known {known:?}, block {block_time}: bound {bound} below the MTP {exact}"
    );
    times.pop();
    times.push(u32::MAX);
    assert_eq!(bound, median_time_past(&times), "tight for {known:?}");
    exact
}

#[test]
fn min_time_bound_holds_for_every_small_window() {
    // Every window of 10 times in {0, 1, 2} (59,049), with the new block's time below,
    // among and above them.
    let base = 1_600_000_000;
    let mut known = [0u32; 10];
    for code in 0..3u32.pow(10) {
        let mut c = code;
        for k in known.iter_mut() {
            *k = base + c % 3;
            c /= 3;
        }
        for block_time in [base - 1, base, base + 1, base + 2, base + 3] {
            check_bound(&known, block_time);
        }
    }
}

#[test]
fn min_time_bound_holds_for_random_windows() {
    // Through the model: predict, publish, check against the real MTP.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3_000 {
        // realistic spreads (seconds to a day) and out-of-order times
        let spread = [10, 600, 7_200, 100_000][rng.below(4) as usize];
        let base = 1_600_000_000 + rng.below(100_000_000);
        let mut times: Vec<u32> = (0..10).map(|_| base + rng.below(spread)).collect();
        let block_time = base - spread / 2 + rng.below(2 * spread);
        let exact = check_bound(&times, block_time);
        times.push(block_time);
        let all = chain(800_000, &times, 0);
        let p = model_of(&all[..10])
            .predict(&all[10].hash, &all[9].hash, Network::Bitcoin)
            .unwrap();
        assert!(p.min_time > exact, "{times:?}");
        assert_eq!(p.min_time, mtp_upper_bound(&times[..10], 11).unwrap() + 1);
        p.check(&all[10], exact).unwrap();
        let mut sorted = times[..10].to_vec();
        sorted.sort_unstable();
        assert_eq!(
            p.min_time,
            sorted[5] + 1,
            "the 6th smallest of the 10 known + 1"
        );
        assert!(exact >= sorted[4] && exact <= sorted[5]);
    }
}

#[test]
fn short_windows_near_genesis_are_bounded() {
    let mut rng = Rng(7);
    for _ in 0..20_000 {
        let n = 2 + rng.below(8) as usize; // 2..=9 known, windows of 3..=10
        let known: Vec<u32> = (0..n).map(|_| rng.below(50)).collect();
        let block_time = rng.below(50);
        let bound = mtp_upper_bound(&known, n + 1).unwrap();
        let mut all = known.clone();
        all.push(block_time);
        assert!(bound >= median_time_past(&all), "{known:?} + {block_time}");
    }
}

#[test]
fn bound_needs_a_consistent_window() {
    assert_eq!(mtp_upper_bound(&[1], 2), None);
    assert_eq!(mtp_upper_bound(&[1, 2], 2), None);
    assert_eq!(mtp_upper_bound(&[], 0), None);
    assert_eq!(median_time_past(&[]), 0);
    assert_eq!(median_time_past(&[3, 1, 2]), 2);
    assert_eq!(median_time_past(&[4, 1, 3, 2]), 3);
}
