use super::*;
use jdc_shared::bitcoin::consensus::serialize;
use jdc_shared::bitcoin::hashes::Hash;
use jdc_shared::bitcoin::script::{Builder, PushBytesBuf};
use jdc_shared::bitcoin::Network;
use jdc_shared::bitcoin::{
    absolute, opcodes, transaction, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxOut, Txid, Witness,
};
use jdc_shared::config::SelectorConfig;
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
        max_block_sigops: 80_000,
        rules: Rules::default(),
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
    let sigop_limit = match p.kind {
        PolicyKind::PassThrough => t.sigop_limit,
        PolicyKind::FeeRate => t.sigop_limit.min(p.max_block_sigops),
    };
    assert!(sigops + p.coinbase_reserve_sigops <= sigop_limit);
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
fn reference(t: &Template, p: &Policy) -> (Vec<usize>, [(u32, u64); DropReason::ALL.len()]) {
    reference_with_priorities(t, p, &vec![false; t.txs.len()])
}

/// [`reference`] where the transactions `prioritized` (by template index) outrank every
/// other package (then rate, then size), and ignore the minimum fee rate.
#[allow(clippy::needless_range_loop)]
fn reference_with_priorities(
    t: &Template,
    p: &Policy,
    prioritized: &[bool],
) -> (Vec<usize>, [(u32, u64); DropReason::ALL.len()]) {
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
    let mut dropped = [(0u32, 0u64); DropReason::ALL.len()];
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
                Some((b_i, b, _)) => {
                    prioritized[i]
                        .cmp(&prioritized[*b_i])
                        .then_with(|| pkg.cmp_rate(b))
                        .then_with(|| pkg.vsize.cmp(&b.vsize))
                        == Ordering::Greater
                }
            };
            if better {
                best = Some((i, pkg, anc));
            }
        }
        let Some((i, pkg, anc)) = best else { break };
        if !prioritized[i] && !p.meets_min_fee_rate(pkg.fee, pkg.vsize) {
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
    assert_eq!(
        Policy::from_config(&cfg, Network::Regtest).unwrap().kind,
        PolicyKind::FeeRate
    );
    cfg.policy = "pass-through".into();
    assert_eq!(
        Policy::from_config(&cfg, Network::Regtest).unwrap().kind,
        PolicyKind::PassThrough
    );
    cfg.policy = "greedy".into();
    assert_eq!(
        Policy::from_config(&cfg, Network::Regtest).unwrap_err().key,
        "tx_selector.policy"
    );
    cfg.policy = "fee-rate".into();
    cfg.min_fee_rate_sat_vb = -1.0;
    assert_eq!(
        Policy::from_config(&cfg, Network::Regtest).unwrap_err().key,
        "tx_selector.min_fee_rate_sat_vb"
    );
    cfg.min_fee_rate_sat_vb = f64::NAN;
    assert!(Policy::from_config(&cfg, Network::Regtest).is_err());
    cfg.min_fee_rate_sat_vb = 1.0;
    cfg.coinbase_reserve_weight = cfg.max_block_weight;
    assert_eq!(
        Policy::from_config(&cfg, Network::Regtest).unwrap_err().key,
        "tx_selector.coinbase_reserve_weight"
    );
}

#[test]
fn pass_through_names_the_keys_it_ignores() {
    let mut cfg = SelectorConfig::default();
    assert!(ignored_by_pass_through(&cfg).is_empty());
    cfg.min_fee_rate_sat_vb = 5.0;
    cfg.prioritize_txids = vec![txid(0)];
    // fee-rate uses them.
    assert!(ignored_by_pass_through(&cfg).is_empty());
    cfg.policy = PASS_THROUGH.into();
    assert_eq!(
        ignored_by_pass_through(&cfg),
        vec![
            "tx_selector.min_fee_rate_sat_vb",
            "tx_selector.prioritize_txids"
        ]
    );
    cfg.max_block_weight = 2_000_000;
    cfg.max_block_sigops = 40_000;
    cfg.prioritize_scripts = vec!["6a".into()];
    assert_eq!(ignored_by_pass_through(&cfg).len(), 5);
    // Exclusions, data-carrier caps and the coinbase reserves apply to pass-through.
    let cfg = SelectorConfig {
        policy: PASS_THROUGH.into(),
        exclude_txids: vec![txid(0)],
        max_op_return_outputs: Some(1),
        drop_inscriptions: true,
        coinbase_reserve_weight: 10_000,
        ..SelectorConfig::default()
    };
    assert!(ignored_by_pass_through(&cfg).is_empty());
}

#[test]
fn bad_rules_name_their_key_and_value() {
    let bad = |edit: fn(&mut SelectorConfig)| {
        let mut cfg = SelectorConfig::default();
        edit(&mut cfg);
        let e = Policy::from_config(&cfg, Network::Regtest).unwrap_err();
        (e.key.to_string(), e.to_string())
    };
    let (key, msg) = bad(|c| c.exclude_outpoints = vec!["abcd".into()]);
    assert_eq!(key, "tx_selector.exclude_outpoints");
    assert!(msg.contains("`abcd` is not txid:vout"), "{msg}");
    let (key, msg) = bad(|c| c.exclude_txids = vec!["xyz".into()]);
    assert_eq!(key, "tx_selector.exclude_txids");
    assert!(msg.contains("`xyz` is not a txid"), "{msg}");
    // A mainnet address on regtest.
    let (key, _) =
        bad(|c| c.prioritize_scripts = vec!["bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4".into()]);
    assert_eq!(key, "tx_selector.prioritize_scripts");
    let (key, _) = bad(|c| c.coinbase_reserve_sigops = c.max_block_sigops);
    assert_eq!(key, "tx_selector.coinbase_reserve_sigops");
    // Addresses of the network and hex scripts are taken.
    let cfg = SelectorConfig {
        exclude_scripts: vec![
            "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".into(),
            "6a0401020304".into(),
        ],
        ..SelectorConfig::default()
    };
    assert!(!Policy::from_config(&cfg, Network::Regtest)
        .unwrap()
        .rules
        .is_empty());
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
        1_000u64..100_000,
    )
        .prop_map(
            |(kind, min_rate, max_weight, reserve_w, reserve_s, max_sigops)| Policy {
                kind,
                min_fee_rate_sat_vb: min_rate,
                max_block_weight: max_weight,
                coinbase_reserve_weight: reserve_w,
                coinbase_reserve_sigops: reserve_s,
                max_block_sigops: max_sigops,
                rules: Rules::default(),
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

    /// Simple chains only (their packages come from prefix sums), with whole vbytes and a few
    /// rates so that equal-rate packages (ties) are common: the same choices as the
    /// reference, limits binding or not.
    #[test]
    fn chains_match_the_reference_greedy(
        chains in prop::collection::vec(prop::collection::vec((25u64..750, 0u64..5, 0u64..40), 1..40), 1..6),
        weight_limit in 20_000u64..600_000,
        min_rate in 0.0f64..3.0,
    ) {
        let mut txs = Vec::new();
        for chain in chains {
            for (d, (vbytes, rate, sigops)) in chain.into_iter().enumerate() {
                let i = txs.len();
                txs.push(TemplateTx {
                    data: vec![],
                    txid: txid(i),
                    wtxid: wtxid(i),
                    fee: vbytes * rate,
                    weight: vbytes * 4,
                    sigops,
                    depends: if d == 0 { vec![] } else { vec![i as u32] },
                });
            }
        }
        let mut t = template(txs);
        t.weight_limit = weight_limit;
        let p = policy(PolicyKind::FeeRate, min_rate, 4_000_000);
        let sel = select(&t, &p).unwrap();
        check_invariants(&t, &p, &sel);
        let (expected, expected_dropped) = reference(&t, &p);
        prop_assert_eq!(chosen(&sel), expected.iter().map(|&i| txid(i)).collect::<Vec<_>>());
        for reason in DropReason::ALL {
            prop_assert_eq!(dropped(&sel, reason), expected_dropped[reason.slot()]);
        }
    }

    /// Prioritized transactions (by txid) in chains and DAGs: the same choices and drops as
    /// the reference, where a prioritized package outranks any rate and ignores the minimum.
    /// Chains keep their single heap entry with priorities (a hull of the prioritized
    /// members' points), so this checks that shortcut against the reference too.
    #[test]
    fn priorities_match_the_reference_greedy(
        chains in prop::collection::vec(prop::collection::vec((25u64..750, 0u64..5, 0u64..40, prop::bool::weighted(0.15)), 1..40), 1..6),
        dag in prop::collection::vec((100u64..3_000, 0u64..100_000, 0u64..100, any::<prop::sample::Index>(), 0u8..3, prop::bool::weighted(0.15)), 0..30),
        weight_limit in 20_000u64..600_000,
        min_rate in 0.0f64..30.0,
    ) {
        let mut txs = Vec::new();
        let mut prioritize = Vec::new();
        for chain in chains {
            for (d, (vbytes, rate, sigops, first)) in chain.into_iter().enumerate() {
                let i = txs.len();
                txs.push(TemplateTx {
                    data: vec![],
                    txid: txid(i),
                    wtxid: wtxid(i),
                    fee: vbytes * rate,
                    weight: vbytes * 4,
                    sigops,
                    depends: if d == 0 { vec![] } else { vec![i as u32] },
                });
                if first {
                    prioritize.push(i);
                }
            }
        }
        // A DAG after the chains: each spends the one before and maybe another earlier one.
        let start = txs.len();
        for (k, (weight, fee, sigops, other, link, first)) in dag.into_iter().enumerate() {
            let i = txs.len();
            let mut depends = Vec::new();
            if k > 0 && link > 0 {
                depends.push(i as u32);
            }
            if k > 1 && link > 1 {
                let p = start + other.index(k) + 1;
                if !depends.contains(&(p as u32)) {
                    depends.push(p as u32);
                }
            }
            txs.push(TemplateTx {
                data: vec![],
                txid: txid(i),
                wtxid: wtxid(i),
                fee,
                weight,
                sigops,
                depends,
            });
            if first {
                prioritize.push(i);
            }
        }
        let mut t = template(txs);
        t.weight_limit = weight_limit;
        let cfg = SelectorConfig {
            prioritize_txids: prioritize.iter().map(|&i| txid(i)).collect(),
            ..SelectorConfig::default()
        };
        let p = Policy {
            rules: Rules::from_config(&cfg, Network::Regtest).unwrap(),
            ..policy(PolicyKind::FeeRate, min_rate, 4_000_000)
        };
        let sel = select(&t, &p).unwrap();
        check_invariants(&t, &p, &sel);
        let mut flags = vec![false; t.txs.len()];
        for &i in &prioritize {
            flags[i] = true;
        }
        let (expected, expected_dropped) = reference_with_priorities(&t, &p, &flags);
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
            max_block_sigops: u32::MAX as u64,
            rules: Rules::default(),
        };
        let sel = select(&t, &p).unwrap();
        prop_assert_eq!(sel.txids.len(), t.txs.len());
        check_invariants(&t, &p, &sel);
    }
}

// === real transactions ===

/// A few payout scripts transactions pay to (so script rules match some of them).
fn payee(k: u8) -> ScriptBuf {
    let mut bytes = vec![0x00, 0x14];
    bytes.extend_from_slice(&[k; 20]);
    ScriptBuf::from_bytes(bytes)
}

/// What a generated transaction carries besides payments.
#[derive(Debug, Clone)]
struct Carrier {
    op_returns: Vec<usize>,
    envelope: bool,
    tapscript_push: usize,
}

fn tapscript_spend(envelope: bool, push: usize) -> Vec<Vec<u8>> {
    let mut b = Builder::new()
        .push_slice([2u8; 32])
        .push_opcode(opcodes::all::OP_CHECKSIG);
    if envelope {
        b = b
            .push_opcode(opcodes::OP_FALSE)
            .push_opcode(opcodes::all::OP_IF)
            .push_slice(b"ord")
            .push_opcode(opcodes::all::OP_ENDIF);
    }
    if push > 0 {
        let data = PushBytesBuf::try_from(vec![7u8; push]).unwrap();
        b = b.push_slice(data).push_opcode(opcodes::all::OP_DROP);
    }
    let mut control = vec![0xc0];
    control.extend_from_slice(&[3u8; 32]);
    vec![vec![9u8; 64], b.into_script().into_bytes(), control]
}

/// A real transaction spending output 0 of each parent (or a made-up coin), paying
/// `payees`, with the data `carrier` asks for.
fn real_tx(i: usize, parents: &[Txid], payees: &[u8], carrier: &Carrier) -> Transaction {
    let mut inputs: Vec<OutPoint> = parents
        .iter()
        .map(|&txid| OutPoint { txid, vout: 0 })
        .collect();
    if inputs.is_empty() {
        inputs.push(OutPoint {
            txid: Txid::from_byte_array([(i % 251) as u8 + 1; 32]),
            vout: i as u32,
        });
    }
    let input = inputs
        .into_iter()
        .enumerate()
        .map(|(k, previous_output)| TxIn {
            previous_output,
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: if k == 0 && (carrier.envelope || carrier.tapscript_push > 0) {
                Witness::from_slice(&tapscript_spend(carrier.envelope, carrier.tapscript_push))
            } else {
                Witness::from_slice(&[vec![1u8; 71], vec![2u8; 33]])
            },
        })
        .collect();
    let mut output: Vec<TxOut> = payees
        .iter()
        .map(|&k| TxOut {
            value: Amount::from_sat(10_000),
            script_pubkey: payee(k),
        })
        .collect();
    for &len in &carrier.op_returns {
        let data = PushBytesBuf::try_from(vec![5u8; len]).unwrap();
        output.push(TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::new_op_return(data),
        });
    }
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input,
        output,
    }
}

// === speed ===

/// A 5,000-transaction template of real transactions: `chains` chains of `depth` with varied
/// rates (plus loners). Every 10th transaction has an 80-byte `OP_RETURN`, every 25th an
/// inscription-style envelope pushing 300 bytes; payees rotate over four scripts.
fn big_template(chains: usize, depth: usize, rate: impl Fn(usize, usize) -> u64) -> Template {
    build_big_template(|i| {
        let (c, d) = (i / depth.max(1), i % depth.max(1));
        if c < chains {
            (rate(c, d), if d > 0 { vec![i - 1] } else { vec![] })
        } else {
            ((i % 37) as u64 + 1, vec![])
        }
    })
}

/// A 5,000-transaction template of deep DAGs with a spine: `clusters` clusters of `size`,
/// where each member after the first spends the one before it and, from the third on, also one
/// 2 to 9 places back (not simple chains, but chain-like: each member's ancestors are the
/// members before it); rates vary from 1 to 90 sat/vB.
fn big_dag(clusters: usize, size: usize) -> Template {
    build_big_template(|i| {
        let (c, d) = (i / size, i % size);
        let rate = ((c * 31 + d * 17) % 90) as u64 + 1;
        if c >= clusters {
            return ((i % 37) as u64 + 1, vec![]);
        }
        let mut parents = Vec::new();
        if d > 0 {
            parents.push(i - 1);
        }
        if d > 1 {
            parents.push(i - 2 - (d * 7) % (d - 1).min(8));
        }
        (rate, parents)
    })
}

/// A 5,000-transaction template of braided DAGs, which are not chain-like: in each of
/// `clusters` clusters of `size`, member `d` spends member `d - 2` (two strands) and, every
/// fifth member, `d - 1` too (the strands cross); rates vary from 1 to 90 sat/vB.
fn big_braid(clusters: usize, size: usize) -> Template {
    build_big_template(|i| {
        let (c, d) = (i / size, i % size);
        let rate = ((c * 31 + d * 17) % 90) as u64 + 1;
        if c >= clusters {
            return ((i % 37) as u64 + 1, vec![]);
        }
        let parents = match d {
            0 => vec![],
            1 => vec![i - 1],
            _ if d % 5 == 0 => vec![i - 2, i - 1],
            _ => vec![i - 2],
        };
        (rate, parents)
    })
}

/// 5,000 real transactions; `spec(i)` gives transaction `i`'s fee rate and its parents
/// (earlier indexes). Data carriers as in [`big_template`].
fn build_big_template(spec: impl Fn(usize) -> (u64, Vec<usize>)) -> Template {
    let mut txs: Vec<TemplateTx> = Vec::with_capacity(5_000);
    let mut ids: Vec<Txid> = Vec::with_capacity(5_000);
    for i in 0..5_000 {
        let (rate, mut parent_ixs) = spec(i);
        parent_ixs.sort_unstable();
        parent_ixs.dedup();
        let carrier = Carrier {
            op_returns: if i.is_multiple_of(10) {
                vec![80]
            } else {
                vec![]
            },
            envelope: i.is_multiple_of(25),
            tapscript_push: if i.is_multiple_of(25) { 300 } else { 0 },
        };
        let parents: Vec<Txid> = parent_ixs.iter().map(|&p| ids[p]).collect();
        let t = real_tx(i, &parents, &[(i % 4) as u8], &carrier);
        let weight = t.weight().to_wu();
        ids.push(t.compute_txid());
        txs.push(TemplateTx {
            data: serialize(&t),
            txid: t.compute_txid().to_string(),
            wtxid: t.compute_wtxid().to_string(),
            fee: vsize(weight) * rate,
            weight,
            sigops: 4,
            depends: parent_ixs.iter().map(|&p| p as u32 + 1).collect(),
        });
    }
    template(txs)
}

/// Every rule at once, drawn from `t`: 50 excluded txids, 20 excluded outpoints, one excluded
/// payee, 50 prioritized txids and one prioritized payee, OP_RETURN caps, no inscriptions,
/// a tapscript push cap.
fn every_rule(t: &Template) -> Rules {
    let pick = |step: usize, n: usize| -> Vec<String> {
        t.txs
            .iter()
            .step_by(step)
            .take(n)
            .map(|x| x.txid.clone())
            .collect()
    };
    let cfg = jdc_shared::config::SelectorConfig {
        exclude_txids: pick(97, 50),
        exclude_outpoints: pick(251, 20)
            .into_iter()
            .map(|x| format!("{x}:0"))
            .collect(),
        exclude_scripts: vec![hex::encode(payee(3).as_bytes())],
        prioritize_txids: pick(89, 50),
        prioritize_scripts: vec![hex::encode(payee(1).as_bytes())],
        max_op_return_bytes: Some(83),
        max_op_return_outputs: Some(1),
        drop_inscriptions: true,
        max_witness_script_push_bytes: Some(1_000),
        ..Default::default()
    };
    Rules::from_config(&cfg, Network::Regtest).unwrap()
}

/// Not a timing assertion: prints how long `select` takes on 5,000-transaction templates
/// (median and max of 21 runs). Run with
/// `cargo test -p jdc-tx-selector --release --lib -- --ignored --nocapture speed_of_select`.
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
    // JDCTEST_SPEED_CASE=<part of a name> runs only the matching cases (for profiling).
    let only = std::env::var("JDCTEST_SPEED_CASE").ok();
    for (name, t) in &cases {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let rules = every_rule(t);
        for (kind, rules, label) in [
            (PolicyKind::PassThrough, Rules::default(), "pass-through"),
            (PolicyKind::FeeRate, Rules::default(), "fee-rate"),
            (
                PolicyKind::PassThrough,
                rules.clone(),
                "pass-through + rules",
            ),
            (PolicyKind::FeeRate, rules, "fee-rate + rules"),
        ] {
            let p = Policy {
                rules,
                ..policy(kind, 1.0, 4_000_000)
            };
            let (median, max) = time_select(t, &p, 21);
            println!("{name:34} {label:21} select median {median:>9.2?} max {max:>9.2?}");
        }
    }
}

/// Median and max of `runs` single `select` calls (after one warm-up call).
fn time_select(
    t: &Template,
    p: &Policy,
    runs: usize,
) -> (std::time::Duration, std::time::Duration) {
    let _ = select(t, p).unwrap();
    let mut times: Vec<std::time::Duration> = (0..runs)
        .map(|_| {
            let start = std::time::Instant::now();
            std::hint::black_box(select(std::hint::black_box(t), p).unwrap());
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    (times[times.len() / 2], times[times.len() - 1])
}

/// The median of the template's own fee rates, in sat/vB.
fn median_rate(t: &Template) -> f64 {
    let mut rates: Vec<u64> = t.txs.iter().map(|x| x.fee / vsize(x.weight)).collect();
    rates.sort_unstable();
    rates[rates.len() / 2] as f64
}

/// Not a timing assertion: prints how long `select` takes with each rule *binding* on deep
/// chains and DAGs without wiping the chains out at their heads (unlike "+ rules" of
/// [`speed_of_select_on_5000_transactions`], whose envelopes sit on every chain head):
/// prioritized transactions deep in chains, exclusions in mid-chain, a minimum fee rate at the
/// template's median rate. Prints median and max of 21 runs, and what was chosen and dropped.
/// `cargo test -p jdc-tx-selector --release --lib -- --ignored --nocapture speed_of_rules`;
/// `JDCTEST_SPEED_CASE=<part of a name>` runs only the matching shapes.
#[test]
#[ignore]
fn speed_of_rules_on_deep_chains() {
    // (name, template, chains, depth): the chain geometry places the rules mid-chain.
    let shapes: Vec<(&str, Template, usize, usize)> = vec![
        (
            "1 chain of 5,000, equal rates",
            big_template(1, 5_000, |_, _| 20),
            1,
            5_000,
        ),
        (
            "1 chain of 5,000, rates falling",
            big_template(1, 5_000, |_, d| 5_000 - d as u64),
            1,
            5_000,
        ),
        (
            "5 chains of 1,000, rates falling",
            big_template(5, 1_000, |_, d| 1_000 - d as u64),
            5,
            1_000,
        ),
        (
            "200 chains of 25, child pays",
            big_template(200, 25, |c, d| (d as u64 * 7 + c as u64) % 60 + 1),
            200,
            25,
        ),
        ("DAG with a spine: 200 of 25", big_dag(200, 25), 200, 25),
        ("DAG with a spine: 5 of 1,000", big_dag(5, 1_000), 5, 1_000),
        ("DAG with a spine: 1 of 5,000", big_dag(1, 5_000), 1, 5_000),
        ("braided DAG: 200 of 25", big_braid(200, 25), 200, 25),
        ("braided DAG: 5 of 1,000", big_braid(5, 1_000), 5, 1_000),
        ("braided DAG: 1 of 5,000", big_braid(1, 5_000), 1, 5_000),
    ];
    let only = std::env::var("JDCTEST_SPEED_CASE").ok();
    for (name, t, chains, depth) in &shapes {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let (chains, depth) = (*chains, *depth);
        let txid_at = |i: usize| t.txs[i].txid.clone();
        // 50 prioritized transactions spread over the chains' deep halves.
        let deep: Vec<String> = (0..50)
            .map(|k| {
                let c = k % chains;
                let d = depth / 2 + (k / chains * 7) % (depth / 2);
                txid_at(c * depth + d)
            })
            .collect();
        // Each chain (at most 50) cut in its middle: by txid, or by the outpoint its middle
        // spends, alternately; plus a confirmed coin no template transaction spends.
        let (mut cut_txids, mut cut_outpoints) = (Vec::new(), Vec::new());
        for c in (0..chains).step_by(chains.div_ceil(50)) {
            let mid = c * depth + depth / 2;
            if c % 2 == 0 {
                cut_txids.push(txid_at(mid));
            } else {
                cut_outpoints.push(format!("{}:0", txid_at(mid - 1)));
            }
        }
        cut_outpoints.push(format!("{}:7", "ab".repeat(32)));
        let rules = |cfg: SelectorConfig| Rules::from_config(&cfg, Network::Regtest).unwrap();
        let base = policy(PolicyKind::FeeRate, 1.0, 4_000_000);
        let median = median_rate(t);
        let cases: Vec<(String, Policy)> = vec![
            (
                "pass-through".into(),
                policy(PolicyKind::PassThrough, 1.0, 4_000_000),
            ),
            ("fee-rate".into(), base.clone()),
            (
                "priority: 50 txids deep in chains".into(),
                Policy {
                    rules: rules(SelectorConfig {
                        prioritize_txids: deep.clone(),
                        ..SelectorConfig::default()
                    }),
                    ..base.clone()
                },
            ),
            (
                "priority: a payee (every 4th tx)".into(),
                Policy {
                    rules: rules(SelectorConfig {
                        prioritize_scripts: vec![hex::encode(payee(1).as_bytes())],
                        ..SelectorConfig::default()
                    }),
                    ..base.clone()
                },
            ),
            (
                "exclusions mid-chain".into(),
                Policy {
                    rules: rules(SelectorConfig {
                        exclude_txids: cut_txids.clone(),
                        exclude_outpoints: cut_outpoints.clone(),
                        ..SelectorConfig::default()
                    }),
                    ..base.clone()
                },
            ),
            (
                "exclusions mid-chain, pass-through".into(),
                Policy {
                    rules: rules(SelectorConfig {
                        exclude_txids: cut_txids.clone(),
                        exclude_outpoints: cut_outpoints.clone(),
                        ..SelectorConfig::default()
                    }),
                    ..policy(PolicyKind::PassThrough, 1.0, 4_000_000)
                },
            ),
            (
                format!("min fee rate {median} (the median)"),
                policy(PolicyKind::FeeRate, median, 4_000_000),
            ),
            (
                "priority + exclusions + min rate + OP_RETURN caps".into(),
                Policy {
                    rules: rules(SelectorConfig {
                        prioritize_txids: deep.clone(),
                        exclude_txids: cut_txids.clone(),
                        exclude_outpoints: cut_outpoints.clone(),
                        max_op_return_bytes: Some(83),
                        max_op_return_outputs: Some(1),
                        ..SelectorConfig::default()
                    }),
                    ..policy(PolicyKind::FeeRate, median, 4_000_000)
                },
            ),
        ];
        for (label, p) in &cases {
            let (median, max) = time_select(t, p, 21);
            let sel = select(t, p).unwrap();
            let dropped: Vec<String> = sel
                .dropped
                .iter()
                .map(|d| format!("{}={}", d.reason, d.count))
                .collect();
            println!(
                "{name:32} {label:50} median {median:>9.2?} max {max:>9.2?}  chosen {:>4}  dropped {}",
                sel.txids.len(),
                dropped.join(" ")
            );
        }
    }
}

// === rules (exclusions, priorities, data-carrier filters) ===

mod rules {
    use super::*;
    use crate::rules::Rules;
    use jdc_shared::bitcoin::script::Instruction as BInstruction;
    use jdc_shared::config::SelectorConfig;

    /// Random templates of real transactions: chains and fans as in `arb_template`, payees
    /// drawn from four scripts, some OP_RETURNs, envelopes and tapscript pushes.
    fn arb_real_template() -> impl Strategy<Value = Template> {
        (1usize..40)
            .prop_flat_map(|n| {
                (
                    prop::collection::vec(
                        (
                            0u64..100_000,
                            0u64..40,
                            prop::collection::vec(any::<prop::sample::Index>(), 0..=2),
                            0u8..4,
                            prop::collection::vec(0u8..4, 1..3),
                            prop::collection::vec(0usize..120, 0..3),
                            prop::bool::weighted(0.15),
                            prop_oneof![4 => Just(0usize), 1 => 1usize..400],
                        ),
                        n,
                    ),
                    20_000u64..400_000,
                    600u64..3_000,
                )
            })
            .prop_map(|(specs, weight_limit, sigop_limit)| {
                let mut txs: Vec<TemplateTx> = Vec::new();
                let mut ids: Vec<Txid> = Vec::new();
                for (i, (fee, sigops, more, link, payees, op_returns, envelope, push)) in
                    specs.into_iter().enumerate()
                {
                    let mut depends: Vec<u32> = if i > 0 && link > 0 {
                        vec![i as u32]
                    } else {
                        Vec::new()
                    };
                    if i > 0 && link > 1 {
                        depends.extend(more.iter().map(|ix| ix.index(i) as u32 + 1));
                    }
                    depends.sort_unstable();
                    depends.dedup();
                    let parents: Vec<Txid> = depends.iter().map(|&d| ids[d as usize - 1]).collect();
                    let carrier = Carrier {
                        op_returns,
                        envelope,
                        tapscript_push: push,
                    };
                    let t = real_tx(i, &parents, &payees, &carrier);
                    ids.push(t.compute_txid());
                    txs.push(TemplateTx {
                        data: serialize(&t),
                        txid: t.compute_txid().to_string(),
                        wtxid: t.compute_wtxid().to_string(),
                        fee,
                        weight: t.weight().to_wu(),
                        sigops,
                        depends,
                    });
                }
                let mut t = template(txs);
                t.weight_limit = weight_limit;
                t.sigop_limit = sigop_limit;
                t
            })
    }

    /// Random rules drawn from the template's own txids, outpoints and payees.
    fn arb_rules_config(t: &Template) -> impl Strategy<Value = SelectorConfig> {
        let txids: Vec<String> = t.txs.iter().map(|x| x.txid.clone()).collect();
        let outpoints: Vec<String> = t.txs.iter().map(|x| format!("{}:0", x.txid)).collect();
        let scripts: Vec<String> = (0u8..4).map(|k| hex::encode(payee(k).as_bytes())).collect();
        (
            prop::sample::subsequence(txids.clone(), 0..=txids.len().min(3)),
            prop::sample::subsequence(scripts.clone(), 0..=1),
            prop::sample::subsequence(outpoints.clone(), 0..=outpoints.len().min(2)),
            prop::sample::subsequence(txids.clone(), 0..=txids.len().min(3)),
            prop::sample::subsequence(scripts, 0..=1),
            prop::option::of(3u64..100),
            prop::option::of(0u64..3),
            any::<bool>(),
            prop::option::of(0u64..500),
        )
            .prop_map(
                |(
                    exclude_txids,
                    exclude_scripts,
                    exclude_outpoints,
                    prioritize_txids,
                    prioritize_scripts,
                    max_op_return_bytes,
                    max_op_return_outputs,
                    drop_inscriptions,
                    max_witness_script_push_bytes,
                )| SelectorConfig {
                    exclude_txids,
                    exclude_scripts,
                    exclude_outpoints,
                    prioritize_txids,
                    prioritize_scripts,
                    max_op_return_bytes,
                    max_op_return_outputs,
                    drop_inscriptions,
                    max_witness_script_push_bytes,
                    ..SelectorConfig::default()
                },
            )
    }

    fn arb_case() -> impl Strategy<Value = (Template, Policy, SelectorConfig)> {
        arb_real_template().prop_flat_map(|t| {
            let rules = arb_rules_config(&t);
            (Just(t), arb_policy(), rules).prop_map(|(t, p, cfg)| {
                let rules = Rules::from_config(&cfg, Network::Regtest).unwrap();
                (t, Policy { rules, ..p }, cfg)
            })
        })
    }

    /// The rule a transaction breaks by its own content, judged with rust-bitcoin (not with
    /// the selector's reader), in the selector's order of precedence.
    fn own_violation(x: &TemplateTx, cfg: &SelectorConfig) -> Option<DropReason> {
        let t: Transaction =
            jdc_shared::bitcoin::consensus::deserialize(&x.data).expect("generated tx");
        if cfg.exclude_txids.contains(&x.txid) {
            return Some(DropReason::ExcludedTxid);
        }
        if t.input.iter().any(|i| {
            cfg.exclude_outpoints.contains(&format!(
                "{}:{}",
                i.previous_output.txid, i.previous_output.vout
            ))
        }) {
            return Some(DropReason::ExcludedOutpoint);
        }
        let mut op_returns = 0u64;
        for o in &t.output {
            if cfg
                .exclude_scripts
                .contains(&hex::encode(o.script_pubkey.as_bytes()))
            {
                return Some(DropReason::ExcludedScript);
            }
            if o.script_pubkey.is_op_return() {
                op_returns += 1;
                if cfg
                    .max_op_return_bytes
                    .is_some_and(|m| o.script_pubkey.len() as u64 > m)
                {
                    return Some(DropReason::OpReturnSize);
                }
            }
        }
        if cfg.max_op_return_outputs.is_some_and(|m| op_returns > m) {
            return Some(DropReason::OpReturnCount);
        }
        let mut pushed = 0u64;
        for input in &t.input {
            // A script-path spend: the last item (an annex aside) is a control block of the
            // tapscript leaf version.
            let Some(leaf) = input.witness.taproot_leaf_script() else {
                continue;
            };
            let items: Vec<&[u8]> = input.witness.iter().collect();
            let control = if items.len() >= 2 && items.last().unwrap()[0] == 0x50 {
                items[items.len() - 2]
            } else {
                items[items.len() - 1]
            };
            if control.len() < 33 || (control.len() - 33) % 32 != 0 || control[0] & 0xfe != 0xc0 {
                continue;
            }
            let ins: Vec<_> = leaf.script.instructions().map(|i| i.unwrap()).collect();
            let envelope = ins.windows(2).any(|w| {
                matches!(w[0], BInstruction::PushBytes(p) if p.is_empty())
                    && w[1] == BInstruction::Op(opcodes::all::OP_IF)
            });
            if cfg.drop_inscriptions && envelope {
                return Some(DropReason::Inscription);
            }
            pushed += ins
                .iter()
                .map(|i| match i {
                    BInstruction::PushBytes(p) => p.len() as u64,
                    BInstruction::Op(_) => 0,
                })
                .sum::<u64>();
        }
        if cfg
            .max_witness_script_push_bytes
            .is_some_and(|m| pushed > m)
        {
            return Some(DropReason::WitnessData);
        }
        None
    }

    /// The exclusions, judged independently: a transaction's own violation, else its first
    /// excluded parent's.
    fn independent_exclusions(t: &Template, cfg: &SelectorConfig) -> Vec<Option<DropReason>> {
        let mut excluded: Vec<Option<DropReason>> = vec![None; t.txs.len()];
        for i in 0..t.txs.len() {
            excluded[i] = t.txs[i]
                .depends
                .iter()
                .find_map(|&d| excluded[d as usize - 1])
                .or_else(|| own_violation(&t.txs[i], cfg));
        }
        excluded
    }

    /// Whether `x` has an output paying one of `scripts` (hex), read with rust-bitcoin.
    fn pays_one_of(x: &TemplateTx, scripts: &[String]) -> bool {
        let tx: Transaction = jdc_shared::bitcoin::consensus::deserialize(&x.data).unwrap();
        tx.output
            .iter()
            .any(|o| scripts.contains(&hex::encode(o.script_pubkey.as_bytes())))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
        ))]

        /// Every policy with random rules: the block is valid (the general invariants), no
        /// chosen transaction breaks a rule or descends from one that does, each rule's
        /// count and fee is exactly the transactions it (or an ancestor's violation) took
        /// out, and prioritized packages come first.
        #[test]
        fn rules_hold_for_every_policy((t, p, cfg) in arb_case()) {
            let sel = select(&t, &p).unwrap();
            check_invariants(&t, &p, &sel);
            // The exclusions, judged independently: a transaction's own violation, else
            // its first excluded parent's.
            let n = t.txs.len();
            let excluded = independent_exclusions(&t, &cfg);
            let index_of: HashMap<&str, usize> =
                t.txs.iter().enumerate().map(|(i, x)| (x.txid.as_str(), i)).collect();
            let chosen: Vec<usize> = sel.txids.iter().map(|x| index_of[x.as_str()]).collect();
            for &i in &chosen {
                prop_assert_eq!(excluded[i], None, "tx {} chosen against a rule", i);
            }
            for reason in &DropReason::ALL[3..] {
                let (count, fee) = excluded
                    .iter()
                    .zip(&t.txs)
                    .filter(|(e, _)| **e == Some(*reason))
                    .fold((0u32, 0u64), |(c, f), (_, x)| (c + 1, f + x.fee));
                prop_assert_eq!(dropped(&sel, *reason), (count, fee), "{}", reason.as_str());
            }
            // Prioritized packages (the transactions and their ancestors) come first.
            if p.kind == PolicyKind::FeeRate {
                let mut first = vec![false; n];
                for i in (0..n).rev() {
                    let x = &t.txs[i];
                    let prioritized = excluded[i].is_none()
                        && (cfg.prioritize_txids.contains(&x.txid)
                            || pays_one_of(x, &cfg.prioritize_scripts));
                    if prioritized && chosen.contains(&i) {
                        first[i] = true;
                    }
                    if first[i] {
                        for &d in &x.depends {
                            first[d as usize - 1] = true;
                        }
                    }
                }
                let flags: Vec<bool> = chosen.iter().map(|&i| first[i]).collect();
                prop_assert!(
                    flags.windows(2).all(|w| w[0] || !w[1]),
                    "prioritized packages are not first: {:?}", flags
                );
            }
        }

        /// With room for everything and a minimum fee rate no package meets, exactly the
        /// prioritized transactions no rule excludes are chosen, with their ancestors. The
        /// expectation is computed here with rust-bitcoin (not with the selector's rules).
        #[test]
        fn prioritized_transactions_ignore_the_minimum_fee_rate((t, p, cfg) in arb_case()) {
            let mut t = t;
            t.weight_limit = u32::MAX as u64;
            t.sigop_limit = u32::MAX as u64;
            let p = Policy {
                kind: PolicyKind::FeeRate,
                min_fee_rate_sat_vb: 1e9,
                max_block_weight: u32::MAX as u64,
                max_block_sigops: u32::MAX as u64,
                ..p
            };
            let sel = select(&t, &p).unwrap();
            check_invariants(&t, &p, &sel);
            let excluded = independent_exclusions(&t, &cfg);
            let mut expected = vec![false; t.txs.len()];
            for i in (0..t.txs.len()).rev() {
                let x = &t.txs[i];
                let prioritized = excluded[i].is_none()
                    && (cfg.prioritize_txids.contains(&x.txid) || pays_one_of(x, &cfg.prioritize_scripts));
                expected[i] |= prioritized;
                if expected[i] {
                    for &d in &x.depends {
                        expected[d as usize - 1] = true;
                    }
                }
            }
            let expected: BTreeSet<&str> = t
                .txs
                .iter()
                .zip(&expected)
                .filter(|(_, &e)| e)
                .map(|(x, _)| x.txid.as_str())
                .collect();
            let chosen: BTreeSet<&str> = sel.txids.iter().map(String::as_str).collect();
            prop_assert_eq!(chosen, expected);
        }
    }

    // --- hand-written cases: exact counts and fees per rule ---

    fn plain() -> Carrier {
        Carrier {
            op_returns: vec![],
            envelope: false,
            tapscript_push: 0,
        }
    }

    /// Appends a real transaction to `txs`: it spends output 0 of each of `parents`
    /// (template indexes), or a confirmed coin outside the template without parents, pays
    /// `payees` and carries `carrier`; its fee is `fee`.
    fn push_real(
        txs: &mut Vec<TemplateTx>,
        parents: &[usize],
        payees: &[u8],
        carrier: Carrier,
        fee: u64,
    ) {
        let i = txs.len();
        let ids: Vec<Txid> = parents
            .iter()
            .map(|&p| txs[p].txid.parse().unwrap())
            .collect();
        let t = real_tx(i, &ids, payees, &carrier);
        txs.push(TemplateTx {
            data: serialize(&t),
            txid: t.compute_txid().to_string(),
            wtxid: t.compute_wtxid().to_string(),
            fee,
            weight: t.weight().to_wu(),
            sigops: 4,
            depends: parents.iter().map(|&p| p as u32 + 1).collect(),
        });
    }

    /// `kind` with no limit binding (minimum fee rate `min_rate`) and the rules of `cfg`.
    fn ruled(kind: PolicyKind, min_rate: f64, cfg: SelectorConfig) -> Policy {
        Policy {
            rules: Rules::from_config(&cfg, Network::Regtest).unwrap(),
            ..policy(kind, min_rate, 4_000_000)
        }
    }

    /// The chosen transactions as template indexes, in block order.
    fn chosen_ix(t: &Template, sel: &Selection) -> Vec<usize> {
        sel.txids
            .iter()
            .map(|x| t.txs.iter().position(|y| &y.txid == x).unwrap())
            .collect()
    }

    /// The confirmed coin (outside the template) that a parentless `real_tx` spends.
    fn coin_of(x: &TemplateTx) -> String {
        let tx: Transaction = jdc_shared::bitcoin::consensus::deserialize(&x.data).unwrap();
        tx.input[0].previous_output.to_string()
    }

    #[test]
    fn exclusions_by_outpoint_txid_and_script_take_their_descendants() {
        let mut txs = Vec::new();
        push_real(&mut txs, &[], &[0], plain(), 1_000); // 0: spends an excluded coin
        push_real(&mut txs, &[0], &[0], plain(), 2_000); // 1: its child
        push_real(&mut txs, &[], &[0], plain(), 4_000); // 2: kept
        push_real(&mut txs, &[2], &[0], plain(), 8_000); // 3: spends 2:0, excluded
        push_real(&mut txs, &[3], &[0], plain(), 16_000); // 4: its child
        push_real(&mut txs, &[], &[0, 2], plain(), 32_000); // 5: pays an excluded script
        push_real(&mut txs, &[5], &[0], plain(), 64_000); // 6: its child
        push_real(&mut txs, &[], &[1], plain(), 128_000); // 7: kept
        push_real(&mut txs, &[], &[0], plain(), 256_000); // 8: excluded txid
        push_real(&mut txs, &[8], &[0], plain(), 512_000); // 9: its child
        let t = template(txs);
        let cfg = SelectorConfig {
            // A confirmed coin no other rule knows of, and an in-template output.
            exclude_outpoints: vec![coin_of(&t.txs[0]), format!("{}:0", t.txs[2].txid)],
            exclude_txids: vec![t.txs[8].txid.to_uppercase()],
            exclude_scripts: vec![hex::encode(payee(2).as_bytes())],
            ..SelectorConfig::default()
        };
        assert_eq!(coin_of(&t.txs[0]), format!("{}:0", "01".repeat(32)));
        for kind in [PolicyKind::PassThrough, PolicyKind::FeeRate] {
            let p = ruled(kind, 0.0, cfg.clone());
            let sel = select(&t, &p).unwrap();
            check_invariants(&t, &p, &sel);
            let mut ix = chosen_ix(&t, &sel);
            ix.sort_unstable();
            assert_eq!(ix, vec![2, 7], "{kind:?}");
            assert_eq!(sel.fees, 132_000);
            assert_eq!(dropped(&sel, DropReason::ExcludedOutpoint), (4, 27_000));
            assert_eq!(dropped(&sel, DropReason::ExcludedScript), (2, 96_000));
            assert_eq!(dropped(&sel, DropReason::ExcludedTxid), (2, 768_000));
            assert_eq!(sel.dropped.len(), 3, "{:?}", sel.dropped);
        }
    }

    #[test]
    fn a_prioritized_payee_goes_first_with_its_ancestors_whatever_the_rate() {
        let mut txs = Vec::new();
        push_real(&mut txs, &[], &[0], plain(), 100_000); // 0: the best rate
        push_real(&mut txs, &[], &[0], plain(), 5); // 1: 0.0x sat/vB
        push_real(&mut txs, &[1], &[1], plain(), 20); // 2: pays the prioritized payee
        push_real(&mut txs, &[], &[0], plain(), 50_000); // 3
        push_real(&mut txs, &[], &[1], plain(), 7_000); // 4: prioritized but excluded
        push_real(&mut txs, &[], &[0], plain(), 1); // 5: below the minimum
        let t = template(txs);
        let address = jdc_shared::bitcoin::Address::from_script(&payee(1), Network::Regtest)
            .unwrap()
            .to_string();
        let cfg = SelectorConfig {
            prioritize_scripts: vec![address],
            exclude_txids: vec![t.txs[4].txid.clone()],
            ..SelectorConfig::default()
        };
        let p = ruled(PolicyKind::FeeRate, 2.0, cfg.clone());
        let sel = select(&t, &p).unwrap();
        check_invariants(&t, &p, &sel);
        assert_eq!(chosen_ix(&t, &sel), vec![1, 2, 0, 3]);
        assert_eq!(sel.fees, 150_025);
        assert_eq!(dropped(&sel, DropReason::ExcludedTxid), (1, 7_000));
        assert_eq!(dropped(&sel, DropReason::BelowMinFeeRate), (1, 1));
        assert_eq!(sel.dropped.len(), 2, "{:?}", sel.dropped);
        // Pass-through keeps bitcoind's order: priorities (and the minimum) do not apply.
        let p = ruled(PolicyKind::PassThrough, 2.0, cfg);
        let sel = select(&t, &p).unwrap();
        assert_eq!(chosen_ix(&t, &sel), vec![0, 1, 2, 3, 5]);
    }

    #[test]
    fn op_return_caps_count_bytes_of_script_and_outputs_per_transaction() {
        let with = |op_returns: Vec<usize>| Carrier {
            op_returns,
            ..plain()
        };
        let mut txs = Vec::new();
        push_real(&mut txs, &[], &[0], with(vec![80]), 1_000); // 0: an 83-byte script: kept
        push_real(&mut txs, &[], &[0], with(vec![81]), 2_000); // 1: 84 bytes: too big
        push_real(&mut txs, &[], &[0], with(vec![4, 4]), 4_000); // 2: two OP_RETURNs
        push_real(&mut txs, &[2], &[0], plain(), 8_000); // 3: its child
        push_real(&mut txs, &[], &[0], plain(), 16_000); // 4: kept
        let t = template(txs);
        let cfg = SelectorConfig {
            max_op_return_bytes: Some(83),
            max_op_return_outputs: Some(1),
            ..SelectorConfig::default()
        };
        for kind in [PolicyKind::PassThrough, PolicyKind::FeeRate] {
            let p = ruled(kind, 0.0, cfg.clone());
            let sel = select(&t, &p).unwrap();
            check_invariants(&t, &p, &sel);
            let mut ix = chosen_ix(&t, &sel);
            ix.sort_unstable();
            assert_eq!(ix, vec![0, 4], "{kind:?}");
            assert_eq!(dropped(&sel, DropReason::OpReturnSize), (1, 2_000));
            assert_eq!(dropped(&sel, DropReason::OpReturnCount), (2, 12_000));
            assert_eq!(sel.dropped.len(), 2, "{:?}", sel.dropped);
        }
        // Two OP_RETURNs are fine when two are allowed.
        let cfg = SelectorConfig {
            max_op_return_outputs: Some(2),
            ..cfg
        };
        let sel = select(&t, &ruled(PolicyKind::FeeRate, 0.0, cfg)).unwrap();
        assert_eq!(sel.dropped.len(), 1);
        assert_eq!(dropped(&sel, DropReason::OpReturnSize), (1, 2_000));
    }

    #[test]
    fn envelopes_and_witness_data_are_counted_apart() {
        let spend = |envelope: bool, tapscript_push: usize| Carrier {
            op_returns: vec![],
            envelope,
            tapscript_push,
        };
        let mut txs = Vec::new();
        // The leaf script pushes a 32-byte key, then "ord" in an envelope, then the data.
        push_real(&mut txs, &[], &[0], spend(true, 0), 1_000); // 0: envelope, 35 bytes
        push_real(&mut txs, &[], &[0], spend(false, 100), 2_000); // 1: 132 bytes: kept
        push_real(&mut txs, &[], &[0], spend(false, 101), 4_000); // 2: 133 bytes
        push_real(&mut txs, &[0], &[0], plain(), 8_000); // 3: child of the envelope
        push_real(&mut txs, &[2], &[0], plain(), 16_000); // 4: child of 133 bytes
        push_real(&mut txs, &[], &[0], plain(), 32_000); // 5: kept
        let t = template(txs);
        let both = SelectorConfig {
            drop_inscriptions: true,
            max_witness_script_push_bytes: Some(132),
            ..SelectorConfig::default()
        };
        let run = |cfg: &SelectorConfig| {
            let p = ruled(PolicyKind::FeeRate, 0.0, cfg.clone());
            let sel = select(&t, &p).unwrap();
            check_invariants(&t, &p, &sel);
            let mut ix = chosen_ix(&t, &sel);
            ix.sort_unstable();
            (ix, sel)
        };
        let (ix, sel) = run(&both);
        assert_eq!(ix, vec![1, 5]);
        assert_eq!(dropped(&sel, DropReason::Inscription), (2, 9_000));
        assert_eq!(dropped(&sel, DropReason::WitnessData), (2, 20_000));
        assert_eq!(sel.dropped.len(), 2, "{:?}", sel.dropped);
        // Each rule alone.
        let (ix, sel) = run(&SelectorConfig {
            max_witness_script_push_bytes: None,
            ..both.clone()
        });
        assert_eq!(ix, vec![1, 2, 4, 5]);
        assert_eq!(dropped(&sel, DropReason::Inscription), (2, 9_000));
        let (ix, sel) = run(&SelectorConfig {
            drop_inscriptions: false,
            ..both
        });
        assert_eq!(ix, vec![0, 1, 3, 5]);
        assert_eq!(dropped(&sel, DropReason::WitnessData), (2, 20_000));
    }

    #[test]
    fn unreadable_transactions_are_left_out_only_when_a_rule_reads_them() {
        let mut txs = vec![TemplateTx {
            data: vec![0xff, 0x00, 0x01],
            txid: txid(0),
            wtxid: wtxid(0),
            fee: 1_000,
            weight: 400,
            sigops: 0,
            depends: vec![],
        }];
        push_real(&mut txs, &[0], &[0], plain(), 2_000); // 1: its child
        push_real(&mut txs, &[], &[0], plain(), 4_000); // 2
        let t = template(txs);
        let reading = SelectorConfig {
            max_op_return_outputs: Some(1),
            ..SelectorConfig::default()
        };
        for kind in [PolicyKind::PassThrough, PolicyKind::FeeRate] {
            let p = ruled(kind, 0.0, reading.clone());
            let sel = select(&t, &p).unwrap();
            check_invariants(&t, &p, &sel);
            assert_eq!(chosen_ix(&t, &sel), vec![2], "{kind:?}");
            assert_eq!(dropped(&sel, DropReason::Unreadable), (2, 3_000));
            assert_eq!(sel.dropped.len(), 1, "{:?}", sel.dropped);
        }
        // A txid rule does not read the bytes: the unreadable transaction is mined.
        let by_txid = SelectorConfig {
            exclude_txids: vec![t.txs[2].txid.clone()],
            ..SelectorConfig::default()
        };
        let sel = select(&t, &ruled(PolicyKind::PassThrough, 0.0, by_txid)).unwrap();
        assert_eq!(chosen_ix(&t, &sel), vec![0, 1]);
        assert_eq!(dropped(&sel, DropReason::ExcludedTxid), (1, 4_000));
    }
}
