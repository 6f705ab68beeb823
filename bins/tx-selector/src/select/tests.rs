use super::*;
use jdc_shared::messages::TemplateTx;
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};

// === helpers ===

fn wtxid(i: usize) -> String {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    b[31] = 0xab;
    hex::encode(b)
}

/// A transaction of `vbytes` vsize paying `rate` sat/vB, spending from `depends` (1-based).
fn tx(i: usize, vbytes: u64, rate: u64, depends: &[u32]) -> TemplateTx {
    TemplateTx {
        data: vec![i as u8; 4],
        txid: format!("{:064x}", i + 1),
        wtxid: wtxid(i),
        fee: vbytes * rate,
        weight: vbytes * 4,
        sigops: 4,
        depends: depends.to_vec(),
    }
}

fn template(txs: Vec<TemplateTx>) -> Template {
    let fees: u64 = txs.iter().map(|t| t.fee).sum();
    Template {
        id: 1_700_000_000_000_000,
        height: 201,
        prev_hash: "11".repeat(32),
        version: 0x2000_0000,
        bits: 0x207f_ffff,
        target: "7f".repeat(32),
        curtime: 1_700_000_000,
        mintime: 1_699_999_000,
        coinbase_value: 5_000_000_000 + fees,
        subsidy: 5_000_000_000,
        weight_limit: 4_000_000,
        sigop_limit: 80_000,
        txs,
        tip_detected_at_us: 42,
    }
}

fn policy(kind: PolicyKind, min_rate: f64, max_weight: u64) -> Policy {
    Policy {
        kind,
        min_fee_rate_sat_vb: min_rate,
        max_block_weight: max_weight,
        coinbase_reserve_weight: 8_000,
        coinbase_reserve_sigops: 400,
    }
}

/// txids of the selection, in order.
fn chosen(sel: &Selection) -> Vec<String> {
    sel.txids.clone()
}

fn txid(i: usize) -> String {
    format!("{:064x}", i + 1)
}

fn dropped(sel: &Selection, reason: DropReason) -> (u32, u64) {
    sel.dropped
        .iter()
        .find(|d| d.reason == reason.as_str())
        .map(|d| (d.count, d.fee))
        .unwrap_or((0, 0))
}

/// Checks every invariant a selection must hold; panics naming the broken one.
fn check_invariants(t: &Template, p: &Policy, sel: &Selection) {
    let index_of: HashMap<&str, usize> = t
        .txs
        .iter()
        .enumerate()
        .map(|(i, x)| (x.txid.as_str(), i))
        .collect();
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut chosen_txs = Vec::new();
    for (pos, txid) in sel.txids.iter().enumerate() {
        let i = *index_of
            .get(txid.as_str())
            .unwrap_or_else(|| panic!("{txid} is not in the template"));
        assert!(seen.insert(i, pos + 1).is_none(), "tx {i} chosen twice");
        let src = &t.txs[i];
        // Every template parent is chosen, and earlier.
        for &d in &src.depends {
            let parent_pos = seen
                .get(&(d as usize - 1))
                .copied()
                .unwrap_or_else(|| panic!("tx {i} chosen before or without its parent {d}"));
            assert!(parent_pos <= pos);
        }
        chosen_txs.push(src);
    }
    let limits = p.limits(t);
    let fees: u64 = chosen_txs.iter().map(|x| x.fee).sum();
    let weight: u64 = chosen_txs.iter().map(|x| x.weight).sum();
    let sigops: u64 = chosen_txs.iter().map(|x| x.sigops).sum();
    assert!(
        weight <= limits.weight,
        "weight {weight} > {}",
        limits.weight
    );
    let block_limit = match p.kind {
        PolicyKind::PassThrough => t.weight_limit,
        PolicyKind::FeeRate => t.weight_limit.min(p.max_block_weight),
    };
    assert!(weight + p.coinbase_reserve_weight <= block_limit);
    assert!(sigops + p.coinbase_reserve_sigops <= t.sigop_limit);
    assert_eq!(sel.fees, fees);
    assert_eq!(sel.weight, weight);
    assert_eq!(sel.sigops, sigops);
    assert_eq!(sel.coinbase_value, t.subsidy + fees);
    let wtxids: Vec<[u8; 32]> = chosen_txs
        .iter()
        .map(|x| chain::hash_from_rpc_hex(&x.wtxid).unwrap())
        .collect();
    assert_eq!(
        sel.witness_commitment,
        hex::encode(chain::witness_commitment(&wtxids))
    );
    // Everything is either chosen or dropped for a reason.
    let dropped_count: u32 = sel.dropped.iter().map(|d| d.count).sum();
    let dropped_fee: u64 = sel.dropped.iter().map(|d| d.fee).sum();
    assert_eq!(sel.txids.len() + dropped_count as usize, t.txs.len());
    assert_eq!(fees + dropped_fee, t.txs.iter().map(|x| x.fee).sum::<u64>());
    assert!(sel.dropped.iter().all(|d| d.count > 0));
    // Header fields copied.
    assert_eq!(sel.template_id, t.id);
    assert_eq!(
        (&sel.prev_hash, sel.height, sel.version, sel.bits),
        (&t.prev_hash, t.height, t.version, t.bits)
    );
    assert_eq!((sel.curtime, sel.mintime), (t.curtime, t.mintime));
    assert_eq!(sel.tip_detected_at_us, t.tip_detected_at_us);
    assert_eq!(sel.policy, p.kind.as_str());
    if p.kind == PolicyKind::PassThrough {
        // bitcoind's order is kept.
        let order: Vec<usize> = sel.txids.iter().map(|x| index_of[x.as_str()]).collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "pass-through reordered"
        );
    }
}

/// Straightforward O(n²) ancestor-score greedy with the same rules and tie-breaks (rate, then
/// bigger package, then earlier position): the
/// optimised version must choose exactly the same transactions in the same order.
#[allow(clippy::needless_range_loop)]
fn reference(t: &Template, p: &Policy) -> (Vec<usize>, [(u32, u64); 3]) {
    let n = t.txs.len();
    let parents: Vec<BTreeSet<usize>> = t
        .txs
        .iter()
        .map(|x| x.depends.iter().map(|&d| d as usize - 1).collect())
        .collect();
    let limits = p.limits(t);
    #[derive(Clone, Copy, PartialEq)]
    enum S {
        P,
        I,
        D,
    }
    let mut st = vec![S::P; n];
    let mut chosen = Vec::new();
    let mut dropped = [(0u32, 0u64); 3];
    let (mut w, mut s) = (0u64, 0u64);
    let ancestors = |i: usize, st: &[S]| -> BTreeSet<usize> {
        let mut set = BTreeSet::new();
        let mut stack = vec![i];
        while let Some(x) = stack.pop() {
            if st[x] == S::P && set.insert(x) {
                stack.extend(parents[x].iter().copied());
            }
        }
        set
    };
    let is_desc = |d: usize, a: usize| -> bool {
        let mut stack = vec![d];
        let mut seen = BTreeSet::new();
        while let Some(x) = stack.pop() {
            if x == a {
                return true;
            }
            if seen.insert(x) {
                stack.extend(parents[x].iter().copied());
            }
        }
        false
    };
    loop {
        let mut best: Option<(usize, Package, BTreeSet<usize>)> = None;
        for i in 0..n {
            if st[i] != S::P {
                continue;
            }
            let anc = ancestors(i, &st);
            let mut pkg = Package::default();
            for &a in &anc {
                pkg.add(&Package {
                    fee: t.txs[a].fee,
                    weight: t.txs[a].weight,
                    vsize: vsize(t.txs[a].weight),
                    sigops: t.txs[a].sigops,
                });
            }
            let better = match &best {
                None => true,
                Some((_, b, _)) => {
                    pkg.cmp_rate(b).then_with(|| pkg.vsize.cmp(&b.vsize)) == Ordering::Greater
                }
            };
            if better {
                best = Some((i, pkg, anc));
            }
        }
        let Some((i, pkg, anc)) = best else { break };
        if !p.meets_min_fee_rate(pkg.fee, pkg.vsize) {
            for j in 0..n {
                if st[j] == S::P {
                    st[j] = S::D;
                    dropped[0].0 += 1;
                    dropped[0].1 += t.txs[j].fee;
                }
            }
            break;
        }
        if w + pkg.weight > limits.weight || s + pkg.sigops > limits.sigops {
            st[i] = S::D;
            dropped[1].0 += 1;
            dropped[1].1 += t.txs[i].fee;
            for d in i + 1..n {
                if st[d] == S::P && is_desc(d, i) {
                    st[d] = S::D;
                    dropped[2].0 += 1;
                    dropped[2].1 += t.txs[d].fee;
                }
            }
            continue;
        }
        w += pkg.weight;
        s += pkg.sigops;
        for a in anc {
            st[a] = S::I;
            chosen.push(a);
        }
    }
    (chosen, dropped)
}

// === policy config ===

#[test]
fn policy_from_config_names_bad_keys() {
    let mut cfg = SelectorConfig::default();
    assert_eq!(Policy::from_config(&cfg).unwrap().kind, PolicyKind::FeeRate);
    cfg.policy = "pass-through".into();
    assert_eq!(
        Policy::from_config(&cfg).unwrap().kind,
        PolicyKind::PassThrough
    );
    cfg.policy = "greedy".into();
    assert_eq!(
        Policy::from_config(&cfg).unwrap_err().key,
        "tx_selector.policy"
    );
    cfg.policy = "fee-rate".into();
    cfg.min_fee_rate_sat_vb = -1.0;
    assert_eq!(
        Policy::from_config(&cfg).unwrap_err().key,
        "tx_selector.min_fee_rate_sat_vb"
    );
    cfg.min_fee_rate_sat_vb = f64::NAN;
    assert!(Policy::from_config(&cfg).is_err());
    cfg.min_fee_rate_sat_vb = 1.0;
    cfg.coinbase_reserve_weight = cfg.max_block_weight;
    assert_eq!(
        Policy::from_config(&cfg).unwrap_err().key,
        "tx_selector.coinbase_reserve_weight"
    );
}

// === pass-through ===

#[test]
fn pass_through_keeps_bitcoinds_choice() {
    let t = template(vec![
        tx(0, 200, 1, &[]),
        tx(1, 200, 100, &[]),
        tx(2, 150, 0, &[1]),
        tx(3, 300, 5, &[2, 3]),
    ]);
    let p = policy(PolicyKind::PassThrough, 50.0, 10_000);
    let sel = select(&t, &p).unwrap();
    // Neither the minimum fee rate nor max_block_weight apply to pass-through.
    assert_eq!(chosen(&sel), (0..4).map(txid).collect::<Vec<_>>());
    assert!(sel.dropped.is_empty());
    check_invariants(&t, &p, &sel);
}

#[test]
fn pass_through_respects_template_limits() {
    // 4,000 vB = 16,000 WU each; limit leaves room for 2 after the 8,000 WU reserve.
    let mut t = template(vec![
        tx(0, 4_000, 10, &[]),
        tx(1, 4_000, 10, &[]),
        tx(2, 4_000, 10, &[1]),
        tx(3, 4_000, 10, &[3]),
        tx(4, 1_000, 10, &[2]),
    ]);
    t.weight_limit = 16_000 * 2 + 8_000 + 4_000;
    let p = policy(PolicyKind::PassThrough, 0.0, 4_000_000);
    let sel = select(&t, &p).unwrap();
    // 0 and 1 fit; 2 does not (block-full), 3 spends 2 (parent-dropped); 4 (small) fits after
    // its parent 1.
    assert_eq!(chosen(&sel), vec![txid(0), txid(1), txid(4)]);
    assert_eq!(dropped(&sel, DropReason::BlockFull), (1, 40_000));
    assert_eq!(dropped(&sel, DropReason::ParentDropped), (1, 40_000));
    check_invariants(&t, &p, &sel);
}

#[test]
fn pass_through_respects_sigops() {
    let mut t = template(vec![tx(0, 100, 1, &[]), tx(1, 100, 1, &[])]);
    t.sigop_limit = 400 + 4;
    let p = policy(PolicyKind::PassThrough, 0.0, 4_000_000);
    let sel = select(&t, &p).unwrap();
    assert_eq!(chosen(&sel), vec![txid(0)]);
    assert_eq!(dropped(&sel, DropReason::BlockFull).0, 1);
    check_invariants(&t, &p, &sel);
}

// === fee-rate ===

#[test]
fn fee_rate_orders_by_rate_not_template_order() {
    let t = template(vec![
        tx(0, 200, 2, &[]),
        tx(1, 200, 30, &[]),
        tx(2, 200, 10, &[]),
    ]);
    let p = policy(PolicyKind::FeeRate, 1.0, 4_000_000);
    let sel = select(&t, &p).unwrap();
    assert_eq!(chosen(&sel), vec![txid(1), txid(2), txid(0)]);
    check_invariants(&t, &p, &sel);
}

#[test]
fn fee_rate_drops_below_minimum() {
    let t = template(vec![
        tx(0, 200, 2, &[]),
        tx(1, 200, 30, &[]),
        tx(2, 200, 0, &[]),
    ]);
    let p = policy(PolicyKind::FeeRate, 5.0, 4_000_000);
    let sel = select(&t, &p).unwrap();
    assert_eq!(chosen(&sel), vec![txid(1)]);
    assert_eq!(dropped(&sel, DropReason::BelowMinFeeRate), (2, 400));
    check_invariants(&t, &p, &sel);
}

#[test]
fn fee_rate_min_uses_rounded_up_vsize() {
    // weight 401 -> vsize 101; fee 100 is 0.99 sat/vB.
    let mut a = tx(0, 100, 1, &[]);
    a.weight = 401;
    let t = template(vec![a]);
    let sel = select(&t, &policy(PolicyKind::FeeRate, 1.0, 4_000_000)).unwrap();
    assert!(sel.txids.is_empty());
    let sel = select(&t, &policy(PolicyKind::FeeRate, 0.99, 4_000_000)).unwrap();
    assert_eq!(sel.txids.len(), 1);
}

#[test]
fn cpfp_child_pays_for_parent() {
    // Parent at 1 sat/vB, child at 50 sat/vB: package = (200 + 10,000) / 400 = 25.5 sat/vB.
    let t = template(vec![
        tx(0, 200, 10, &[]),
        tx(1, 200, 1, &[]),
        tx(2, 200, 50, &[2]),
    ]);
    let p = policy(PolicyKind::FeeRate, 5.0, 4_000_000);
    let sel = select(&t, &p).unwrap();
    // The CPFP package (25.5) beats the 10 sat/vB loner; the parent comes first.
    assert_eq!(chosen(&sel), vec![txid(1), txid(2), txid(0)]);
    assert!(sel.dropped.is_empty());
    check_invariants(&t, &p, &sel);

    // Without the child, the parent alone is below the minimum.
    let t = template(vec![tx(0, 200, 10, &[]), tx(1, 200, 1, &[])]);
    let sel = select(&t, &p).unwrap();
    assert_eq!(chosen(&sel), vec![txid(0)]);
    assert_eq!(dropped(&sel, DropReason::BelowMinFeeRate), (1, 200));
}

#[test]
fn cpfp_package_below_minimum_is_dropped_whole() {
    // Package (200 + 1,200) / 400 = 3.5 sat/vB < 5.
    let t = template(vec![tx(0, 200, 1, &[]), tx(1, 200, 6, &[1])]);
    let p = policy(PolicyKind::FeeRate, 5.0, 4_000_000);
    let sel = select(&t, &p).unwrap();
    assert!(sel.txids.is_empty());
    assert_eq!(dropped(&sel, DropReason::BelowMinFeeRate), (2, 1_400));
    check_invariants(&t, &p, &sel);
}

#[test]
fn shared_ancestor_counted_once_in_packages() {
    // Diamond: 0 <- 1, 0 <- 2, {1,2} <- 3.
    let t = template(vec![
        tx(0, 100, 1, &[]),
        tx(1, 100, 1, &[1]),
        tx(2, 100, 1, &[1]),
        tx(3, 100, 97, &[2, 3]),
    ]);
    // Package of 3 = 4 txs, 400 vB, 100 sats: exactly 25 sat/vB; double-counting 0 would
    // make it 500 vB / 101 sats and fail the minimum.
    let p = policy(PolicyKind::FeeRate, 25.0, 4_000_000);
    let sel = select(&t, &p).unwrap();
    assert_eq!(chosen(&sel), (0..4).map(txid).collect::<Vec<_>>());
    check_invariants(&t, &p, &sel);
}

#[test]
fn descendants_of_a_dropped_parent_are_dropped() {
    // A big parent that does not fit, with a child and a grandchild; a small loner fits.
    let t = template(vec![
        tx(0, 20_000, 10, &[]),
        tx(1, 100, 5, &[1]),
        tx(2, 100, 2, &[2]),
        tx(3, 100, 5, &[]),
    ]);
    let p = policy(PolicyKind::FeeRate, 1.0, 8_000 + 40_000);
    let sel = select(&t, &p).unwrap();
    assert_eq!(chosen(&sel), vec![txid(3)]);
    assert_eq!(dropped(&sel, DropReason::BlockFull), (1, 200_000));
    assert_eq!(dropped(&sel, DropReason::ParentDropped), (2, 700));
    check_invariants(&t, &p, &sel);

    // The parent fits alone but its big child does not: the grandchild goes with the child.
    let t = template(vec![
        tx(0, 100, 10, &[]),
        tx(1, 20_000, 50, &[1]),
        tx(2, 100, 1, &[2]),
    ]);
    let sel = select(&t, &p).unwrap();
    assert_eq!(chosen(&sel), vec![txid(0)]);
    assert_eq!(dropped(&sel, DropReason::BlockFull), (1, 1_000_000));
    assert_eq!(dropped(&sel, DropReason::ParentDropped), (1, 100));
    check_invariants(&t, &p, &sel);
}

#[test]
fn weight_cap_keeps_the_best_and_room_for_the_coinbase() {
    // Ten 1,000 vB (4,000 WU) transactions at rates 1..=10; room for three after the reserve.
    let txs = (0..10).map(|i| tx(i, 1_000, i as u64 + 1, &[])).collect();
    let t = template(txs);
    let p = policy(PolicyKind::FeeRate, 0.0, 8_000 + 3 * 4_000 + 3_999);
    let sel = select(&t, &p).unwrap();
    assert_eq!(chosen(&sel), vec![txid(9), txid(8), txid(7)]);
    assert_eq!(sel.weight, 12_000);
    assert_eq!(sel.fees, 27_000);
    assert_eq!(sel.coinbase_value, 5_000_000_000 + 27_000);
    assert_eq!(dropped(&sel, DropReason::BlockFull).0, 7);
    check_invariants(&t, &p, &sel);

    // The template's own limit wins when it is smaller.
    let mut t2 = t.clone();
    t2.weight_limit = 8_000 + 4_000;
    let sel = select(&t2, &p).unwrap();
    assert_eq!(chosen(&sel), vec![txid(9)]);
}

#[test]
fn empty_template_gives_empty_selection() {
    let t = template(vec![]);
    for kind in [PolicyKind::PassThrough, PolicyKind::FeeRate] {
        let p = policy(kind, 1.0, 4_000_000);
        let sel = select(&t, &p).unwrap();
        assert!(sel.txids.is_empty());
        assert_eq!(sel.coinbase_value, t.subsidy);
        check_invariants(&t, &p, &sel);
    }
}

#[test]
fn bad_templates_are_refused_with_a_reason() {
    let p = policy(PolicyKind::FeeRate, 1.0, 4_000_000);
    let t = template(vec![tx(0, 100, 1, &[2]), tx(1, 100, 1, &[])]);
    let e = select(&t, &p).unwrap_err();
    assert!(matches!(
        e,
        SelectError::BadDepends {
            position: 1,
            depends: 2,
            ..
        }
    ));
    assert!(e.to_string().contains("depends on 2"));
    let t = template(vec![tx(0, 100, 1, &[0])]);
    assert!(matches!(
        select(&t, &p),
        Err(SelectError::BadDepends { depends: 0, .. })
    ));
    let mut bad = tx(0, 100, 1, &[]);
    bad.wtxid = "zz".into();
    let e = select(&template(vec![bad]), &p).unwrap_err();
    assert!(matches!(e, SelectError::BadWtxid { position: 1, .. }));
}

#[test]
fn witness_commitment_matches_a_known_block() {
    // Regtest block with one non-coinbase transaction: commitment of [0; 32] and the wtxid.
    let t = template(vec![tx(0, 100, 5, &[])]);
    let p = policy(PolicyKind::FeeRate, 1.0, 4_000_000);
    let sel = select(&t, &p).unwrap();
    let w = chain::hash_from_rpc_hex(&wtxid(0)).unwrap();
    let root = chain::hash_pair(&[0u8; 32], &w);
    assert_eq!(
        sel.witness_commitment,
        hex::encode(chain::hash_pair(&root, &[0u8; 32]))
    );
}

#[test]
fn template_round_trips_through_the_bus_encoding() {
    use jdc_shared::bus::{decode_envelope, encode_body, Envelope, Topic, BUS_PROTOCOL_VERSION};
    let t = template(vec![tx(0, 100, 5, &[]), tx(1, 150, 7, &[1])]);
    let body = encode_body(Topic::Template, &t).unwrap();
    let decoded: Template = rmp_serde::from_slice(&body).unwrap();
    assert_eq!(decoded, t);
    let env = Envelope {
        version: BUS_PROTOCOL_VERSION,
        source: "watcher".into(),
        instance: 1,
        seq: 1,
        sent_at_us: 2,
        body: t.clone(),
    };
    let bytes = rmp_serde::to_vec_named(&env).unwrap();
    let back: Envelope<Template> = decode_envelope(&bytes).unwrap();
    assert_eq!(back.body, t);
    // Raw transaction bytes travel as MessagePack bin, not as an array of integers.
    assert!(bytes.windows(6).any(|w| w == [0xc4, 4, 0, 0, 0, 0]));
    // And the selection made from it survives the trip too.
    let sel = select(&back.body, &policy(PolicyKind::FeeRate, 1.0, 4_000_000)).unwrap();
    let body = encode_body(Topic::Selection, &sel).unwrap();
    assert_eq!(rmp_serde::from_slice::<Selection>(&body).unwrap(), sel);
}

// === property tests ===

/// Random templates: transactions spend from up to three random earlier ones (so chains,
/// diamonds and fans appear), with varied sizes, rates and sigops; limits sometimes binding.
fn arb_template() -> impl Strategy<Value = Template> {
    (1usize..60)
        .prop_flat_map(|n| {
            (
                prop::collection::vec(
                    (
                        100u64..5_000,
                        0u64..200_000,
                        0u64..200,
                        prop::collection::vec(any::<prop::sample::Index>(), 0..=3),
                        0u8..4,
                    ),
                    n,
                ),
                20_000u64..1_200_000,
                500u64..20_000,
            )
        })
        .prop_map(|(specs, weight_limit, sigop_limit)| {
            let txs = specs
                .into_iter()
                .enumerate()
                .map(|(i, (weight, fee, sigops, parents, link))| {
                    // Most transactions link to the one just before, to make deep chains.
                    let mut depends: Vec<u32> = if i > 0 && link > 0 {
                        vec![i as u32]
                    } else {
                        Vec::new()
                    };
                    if i > 0 && link > 1 {
                        depends.extend(parents.iter().map(|ix| ix.index(i) as u32 + 1));
                    }
                    TemplateTx {
                        data: vec![(i % 256) as u8; 3],
                        txid: txid(i),
                        wtxid: wtxid(i),
                        fee,
                        weight,
                        sigops,
                        depends,
                    }
                })
                .collect();
            let mut t = template(txs);
            t.weight_limit = weight_limit;
            t.sigop_limit = sigop_limit;
            t
        })
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![Just(PolicyKind::PassThrough), Just(PolicyKind::FeeRate)],
        0.0f64..60.0,
        10_000u64..4_000_000,
        0u64..9_000,
        0u64..500,
    )
        .prop_map(
            |(kind, min_rate, max_weight, reserve_w, reserve_s)| Policy {
                kind,
                min_fee_rate_sat_vb: min_rate,
                max_block_weight: max_weight,
                coinbase_reserve_weight: reserve_w,
                coinbase_reserve_sigops: reserve_s,
            },
        )
}

proptest! {
    // 400 cases by default; PROPTEST_CASES=N for a longer run.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400)
    ))]

    #[test]
    fn selections_hold_every_invariant(t in arb_template(), p in arb_policy()) {
        let sel = select(&t, &p).unwrap();
        check_invariants(&t, &p, &sel);
    }

    #[test]
    fn fee_rate_matches_the_reference_greedy(t in arb_template(), p in arb_policy()) {
        let p = Policy { kind: PolicyKind::FeeRate, ..p };
        let sel = select(&t, &p).unwrap();
        let (expected, expected_dropped) = reference(&t, &p);
        prop_assert_eq!(chosen(&sel), expected.iter().map(|&i| txid(i)).collect::<Vec<_>>());
        for reason in DropReason::ALL {
            prop_assert_eq!(dropped(&sel, reason), expected_dropped[reason.slot()]);
        }
    }

    #[test]
    fn nothing_is_dropped_when_nothing_binds(t in arb_template(), kind in prop_oneof![Just(PolicyKind::PassThrough), Just(PolicyKind::FeeRate)]) {
        let mut t = t;
        t.weight_limit = u32::MAX as u64;
        t.sigop_limit = u32::MAX as u64;
        let p = Policy {
            kind,
            min_fee_rate_sat_vb: 0.0,
            max_block_weight: u32::MAX as u64,
            coinbase_reserve_weight: 8_000,
            coinbase_reserve_sigops: 400,
        };
        let sel = select(&t, &p).unwrap();
        prop_assert_eq!(sel.txids.len(), t.txs.len());
        check_invariants(&t, &p, &sel);
    }
}

// === speed ===

/// A 5,000-transaction template: `chains` chains of `depth` with varied rates (plus loners).
fn big_template(chains: usize, depth: usize, rate: impl Fn(usize, usize) -> u64) -> Template {
    let mut txs = Vec::with_capacity(5_000);
    for c in 0..chains {
        for d in 0..depth {
            let i = txs.len();
            let depends = if d == 0 { vec![] } else { vec![i as u32] };
            let mut x = tx(i, 200, rate(c, d), &depends);
            x.data = vec![0u8; 200];
            txs.push(x);
        }
    }
    while txs.len() < 5_000 {
        let i = txs.len();
        txs.push(tx(i, 200, (i % 37) as u64 + 1, &[]));
    }
    template(txs)
}

/// Not a timing assertion: prints how long `select` takes on 5,000-transaction templates.
/// Run with `cargo test -p jdc-tx-selector --release -- --ignored --nocapture speed`.
#[test]
#[ignore]
fn speed_of_select_on_5000_transactions() {
    let cases: Vec<(&str, Template)> = vec![
        ("5,000 loners", big_template(0, 0, |_, _| 1)),
        (
            "200 chains of 25, child pays",
            big_template(200, 25, |c, d| (d as u64 * 7 + c as u64) % 60 + 1),
        ),
        (
            "50 chains of 100, mixed rates",
            big_template(50, 100, |c, d| ((c * 31 + d * 17) % 90) as u64 + 1),
        ),
        (
            "5 chains of 1,000, equal rates",
            big_template(5, 1_000, |_, _| 20),
        ),
        (
            "1 chain of 5,000, equal rates",
            big_template(1, 5_000, |_, _| 20),
        ),
        (
            "5 chains of 1,000, rates falling",
            big_template(5, 1_000, |_, d| 1_000 - d as u64),
        ),
        (
            "1 chain of 5,000, rates falling",
            big_template(1, 5_000, |_, d| 5_000 - d as u64),
        ),
        (
            "1 chain of 5,000, rates rising",
            big_template(1, 5_000, |_, d| d as u64 + 1),
        ),
        (
            "1 chain of 5,000, zig-zag",
            big_template(1, 5_000, |_, d| if d % 2 == 0 { 1 } else { 100 }),
        ),
    ];
    for (name, t) in &cases {
        for kind in [PolicyKind::PassThrough, PolicyKind::FeeRate] {
            let p = policy(kind, 1.0, 4_000_000);
            let _ = select(t, &p).unwrap();
            let runs = 20;
            let start = std::time::Instant::now();
            for _ in 0..runs {
                std::hint::black_box(select(std::hint::black_box(t), &p).unwrap());
            }
            let per = start.elapsed() / runs;
            let start = std::time::Instant::now();
            for _ in 0..runs {
                std::hint::black_box(
                    plan(std::hint::black_box(t), &p)
                        .unwrap()
                        .outcome
                        .chosen
                        .len(),
                );
            }
            let per_plan = start.elapsed() / runs;
            println!(
                "{name:34} {:13} select {per:>10.2?}  (choosing only {per_plan:>10.2?})",
                kind.as_str()
            );
        }
    }
}
