use super::*;

#[test]
fn splits_exactly() {
    let p = Payout::new(vec![
        (ScriptBuf::from_bytes(vec![0x51]), 1),
        (ScriptBuf::from_bytes(vec![0x52]), 2),
    ])
    .unwrap();
    for v in [0u64, 1, 2, 3, 5_000_000_001, 21_000_000 * 100_000_000] {
        let outs = p.outputs(v);
        assert_eq!(outs.iter().map(|o| o.value.to_sat()).sum::<u64>(), v);
    }
    let outs = p.outputs(300);
    assert_eq!(outs[1].value.to_sat(), 200);
    assert!(Payout::new(vec![]).is_none());
}
