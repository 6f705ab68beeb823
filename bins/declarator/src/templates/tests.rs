use super::*;
use jdc_shared::messages::TemplateTx;

fn template(id: u64, n: u8) -> Template {
    Template {
        id,
        height: 10,
        prev_hash: hex::encode([1u8; 32]),
        version: 0x2000_0000,
        bits: 0x207f_ffff,
        target: hex::encode([0xff; 32]),
        curtime: 1,
        mintime: 1,
        coinbase_value: 0,
        subsidy: 0,
        weight_limit: 4_000_000,
        sigop_limit: 80_000,
        txs: (1..=n)
            .map(|i| TemplateTx {
                data: vec![i],
                txid: hex::encode([i; 32]),
                wtxid: hex::encode([i; 32]),
                fee: 1,
                weight: 4,
                sigops: 0,
                depends: if i > 1 {
                    vec![u32::from(i) - 1]
                } else {
                    vec![]
                },
            })
            .collect(),
        tip_detected_at_us: 0,
    }
}

#[test]
fn indexes_transactions_and_their_parents() {
    let t = TemplateTxs::from_template(template(1, 3)).unwrap();
    assert_eq!(t.position(&[2; 32]), Some(1));
    assert_eq!(t.position(&[9; 32]), None);
    assert_eq!(t.txs[2].parents, vec![1]);
    assert_eq!(t.txs[0].parents, Vec::<u32>::new());
}

#[test]
fn store_keeps_the_newest_few() {
    let mut store = TemplateStore::default();
    for id in 1..=6 {
        store.insert(Arc::new(
            TemplateTxs::from_template(template(id, 1)).unwrap(),
        ));
    }
    let kept: Vec<u64> = store.all().iter().map(|t| t.id).collect();
    assert_eq!(kept.len(), TEMPLATES_KEPT);
    assert_eq!(kept.last(), Some(&6));
    assert!(!store.contains(1));
    assert_eq!(store.get(6).map(|t| t.id), Some(6));
    // A re-sent template replaces itself rather than pushing another out.
    store.insert(Arc::new(
        TemplateTxs::from_template(template(6, 1)).unwrap(),
    ));
    assert_eq!(store.all().iter().map(|t| t.id).collect::<Vec<_>>(), kept);
}

#[test]
fn select_all_is_a_valid_selection() {
    let t = template(4, 3);
    let sel = select_all(&t, 9, Network::Regtest);
    assert_eq!(sel.txids.len(), 3);
    assert_eq!(sel.fees, 3);
    assert_eq!(sel.template_id, 4);
    let txs = TemplateTxs::from_template(t).unwrap();
    assert!(crate::work::validate_selection(&sel, &txs, Network::Regtest).is_ok());
}
