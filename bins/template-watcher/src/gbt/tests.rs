use super::*;

const GBT: &str = include_str!("../../tests/fixtures/gbt-regtest-depends.json");
const HEADER: &str = include_str!("../../tests/fixtures/header-regtest.json");

fn gbt() -> GbtResult {
    serde_json::from_str(GBT).unwrap()
}

#[test]
fn real_template_with_depends_converts() {
    let t = template_from_gbt(gbt(), 42, Network::Regtest, 7).unwrap();
    assert_eq!(t.id, 42);
    assert_eq!(t.height, 102);
    assert_eq!(
        t.prev_hash,
        "4e96c9c84d2146e9a503d4c3ed35b161c6b1828fff63beaed6fb39d1144d3412"
    );
    assert_eq!(t.bits, 0x207f_ffff);
    assert_eq!(t.version, 0x2000_0000);
    assert_eq!(t.weight_limit, 4_000_000);
    assert_eq!(t.sigop_limit, 80_000);
    assert_eq!(t.subsidy, 5_000_000_000);
    assert_eq!(
        t.coinbase_value,
        t.subsidy + t.txs.iter().map(|x| x.fee).sum::<u64>()
    );
    assert_eq!(t.tip_detected_at_us, 7);
    assert_eq!(t.txs.len(), 2);
    assert_eq!(t.txs[0].depends, Vec::<u32>::new());
    assert_eq!(t.txs[1].depends, vec![1]);
    assert_ne!(t.txs[0].txid, t.txs[0].wtxid, "segwit tx: wtxid differs");
    // data is the decoded hex: its txid hashes back to the reported txid
    use jdc_shared::bitcoin::{consensus::deserialize, Transaction};
    for tx in &t.txs {
        let parsed: Transaction = deserialize(&tx.data).unwrap();
        assert_eq!(parsed.compute_txid().to_string(), tx.txid);
        assert_eq!(parsed.compute_wtxid().to_string(), tx.wtxid);
        assert_eq!(parsed.weight().to_wu(), tx.weight);
    }
}

fn edit(f: impl FnOnce(&mut serde_json::Value)) -> Result<Template, String> {
    let mut v: serde_json::Value = serde_json::from_str(GBT).unwrap();
    f(&mut v);
    let g: GbtResult = serde_json::from_value(v).map_err(|e| e.to_string())?;
    template_from_gbt(g, 1, Network::Regtest, 0).map_err(|e| e.to_string())
}

#[test]
fn bad_answers_name_the_field() {
    let e = edit(|v| v["transactions"][1]["depends"] = serde_json::json!([2])).unwrap_err();
    assert!(e.contains("transaction 2") && e.contains("depends"), "{e}");
    let e = edit(|v| v["transactions"][0]["depends"] = serde_json::json!([0])).unwrap_err();
    assert!(e.contains("depends"), "{e}");
    let e = edit(|v| v["transactions"][0]["data"] = "zz".into()).unwrap_err();
    assert!(e.contains("not hex"), "{e}");
    let e = edit(|v| v["bits"] = "7fffff".into()).unwrap_err();
    assert!(e.contains("`bits`"), "{e}");
    let e = edit(|v| v["previousblockhash"] = "00".into()).unwrap_err();
    assert!(e.contains("previousblockhash"), "{e}");
    let e = edit(|v| v["transactions"][0]["txid"] = "abc".into()).unwrap_err();
    assert!(e.contains("transaction 1") && e.contains("txid"), "{e}");
    let e = edit(|v| v["target"] = "ff".into()).unwrap_err();
    assert!(e.contains("target"), "{e}");
    // missing limits fall back to the consensus values
    let t = edit(|v| {
        let o = v.as_object_mut().unwrap();
        o.remove("weightlimit");
        o.remove("sigoplimit");
    })
    .unwrap();
    assert_eq!((t.weight_limit, t.sigop_limit), (4_000_000, 80_000));
}

#[test]
fn empty_template() {
    let t = edit(|v| v["transactions"] = serde_json::json!([])).unwrap();
    assert!(t.txs.is_empty());
}

#[test]
fn tip_from_real_header() {
    let h: HeaderInfo = serde_json::from_str(HEADER).unwrap();
    assert_eq!(h.confirmations, 1);
    let (tip, bits) = tip_from_header(
        &h,
        Network::Regtest,
        0,
        DEFAULT_VERSION,
        11,
        DetectedBy::Zmq,
    )
    .unwrap();
    assert_eq!(bits, TipBits::Known);
    assert_eq!(tip.height, 102);
    assert_eq!(tip.prev_hash, h.hash);
    assert_eq!(tip.nbits, 0x207f_ffff);
    assert_eq!(tip.min_time, h.mediantime + 1);
    assert_eq!(
        tip.time, tip.min_time,
        "clock behind min_time: min_time wins"
    );
    assert_eq!(tip.version, DEFAULT_VERSION);
    assert_eq!(tip.subsidy, 5_000_000_000);
    assert_eq!((tip.detected_at_us, tip.detected_by.as_str()), (11, "zmq"));
    let (tip, _) = tip_from_header(
        &h,
        Network::Regtest,
        h.mediantime + 100,
        0x2000_0004,
        1,
        DetectedBy::Poll,
    )
    .unwrap();
    assert_eq!(tip.time, h.mediantime + 100, "now wins when later");
    assert_eq!(tip.version, 0x2000_0004);
    assert_eq!(tip.detected_by, "poll");
}

#[test]
fn retarget_boundaries_defer_bits_to_the_template() {
    let mut h: HeaderInfo = serde_json::from_str(HEADER).unwrap();
    h.height = 2015; // next block 2016: a retarget
    let bits_of = |h: &HeaderInfo, n| tip_from_header(h, n, 0, 1, 0, DetectedBy::Zmq).unwrap().1;
    assert_eq!(bits_of(&h, Network::Bitcoin), TipBits::FromTemplate);
    assert_eq!(bits_of(&h, Network::Signet), TipBits::FromTemplate);
    assert_eq!(bits_of(&h, Network::Regtest), TipBits::Known);
    h.height = 2016;
    assert_eq!(bits_of(&h, Network::Bitcoin), TipBits::Known);
    assert_eq!(bits_of(&h, Network::Testnet4), TipBits::FromTemplate);
    // subsidy of the next block on mainnet
    h.height = 839_999;
    let (tip, _) = tip_from_header(&h, Network::Bitcoin, 0, 1, 0, DetectedBy::Zmq).unwrap();
    assert_eq!(tip.subsidy, 312_500_000);
}

#[test]
fn completing_a_tip_takes_the_template_values() {
    let h: HeaderInfo = serde_json::from_str(HEADER).unwrap();
    let (tip, _) = tip_from_header(&h, Network::Regtest, 0, 1, 5, DetectedBy::Zmq).unwrap();
    let mut t = template_from_gbt(gbt(), 1, Network::Regtest, 5).unwrap();
    t.bits = 0x1d00_ffff;
    let head = TemplateHead::of(&t);
    assert_eq!((head.tx_count, head.fees, head.weight), (2, 5760, 1146));
    let mut same = t.clone();
    same.curtime += 1;
    same.id += 1;
    assert_eq!(TemplateHead::of(&same).content_digest, head.content_digest);
    same.txs.swap(0, 1);
    assert_ne!(TemplateHead::of(&same).content_digest, head.content_digest);
    let tip = complete_tip(tip, &head);
    assert_eq!(tip.nbits, 0x1d00_ffff);
    assert_eq!(tip.min_time, t.mintime);
    assert_eq!(tip.version, t.version);
    assert_eq!(tip.detected_at_us, 5);
}

/// A synthetic 4 MB / 5,000-transaction answer (valid shapes, fake transactions).
fn large_gbt_json(n: usize, tx_bytes: usize) -> String {
    let data = "ab".repeat(tx_bytes);
    let mut json = String::with_capacity(n * (tx_bytes * 2 + 250) + 1000);
    json.push_str(r#"{"version":536870912,"previousblockhash":""#);
    json.push_str(&"11".repeat(32));
    json.push_str(r#"","transactions":["#);
    for i in 0..n {
        if i > 0 {
            json.push(',');
        }
        let depends = if i % 10 == 9 {
            format!("[{i}]")
        } else {
            "[]".into()
        };
        json.push_str(&format!(
            r#"{{"data":"{data}","txid":"{:064x}","hash":"{:064x}","depends":{depends},"fee":1000,"sigops":4,"weight":{}}}"#,
            i + 1,
            i + 1_000_000,
            tx_bytes * 4
        ));
    }
    json.push_str(r#"],"coinbasevalue":5005000000,"target":""#);
    json.push_str(&"7f".repeat(32));
    json.push_str(r#"","mintime":1,"curtime":2,"bits":"207fffff","height":1000,"weightlimit":4000000,"sigoplimit":80000}"#);
    json
}

#[test]
fn large_template_converts() {
    let json = large_gbt_json(5_000, 800);
    let gbt: GbtResult = serde_json::from_str(&json).unwrap();
    let t = template_from_gbt(gbt, 1, Network::Regtest, 0).unwrap();
    assert_eq!(t.txs.len(), 5_000);
    assert_eq!(t.txs.iter().map(|x| x.data.len()).sum::<usize>(), 4_000_000);
    assert_eq!(t.txs[9].depends, vec![9]);
}

/// Figures for the report; run with
/// `cargo test --release -p jdc-template-watcher --lib -- --ignored --nocapture`.
#[test]
#[ignore = "timing figures, not a test"]
fn large_template_figures() {
    use jdc_shared::bus::{encode_body, Topic};
    use std::time::Instant;
    let json = large_gbt_json(5_000, 800);
    for _ in 0..3 {
        let t0 = Instant::now();
        let gbt: GbtResult = serde_json::from_str(&json).unwrap();
        let t1 = Instant::now();
        let t = template_from_gbt(gbt, 1, Network::Regtest, 0).unwrap();
        let t2 = Instant::now();
        let head = TemplateHead::of(&t);
        let t3 = Instant::now();
        let body = encode_body(Topic::Template, &t).unwrap();
        let t4 = Instant::now();
        eprintln!(
            "{} MB JSON, {} txs: parse+hex {:?}, checks {:?}, head {:?}, encode {:?} ({} bytes)",
            json.len() / 1_000_000,
            head.tx_count,
            t1 - t0,
            t2 - t1,
            t3 - t2,
            t4 - t3,
            body.len()
        );
    }
}

#[test]
fn bad_header_is_refused() {
    let mut h: HeaderInfo = serde_json::from_str(HEADER).unwrap();
    h.bits = "xyz".into();
    let e = tip_from_header(&h, Network::Regtest, 0, 1, 0, DetectedBy::Zmq).unwrap_err();
    assert!(e.to_string().contains("getblockheader"), "{e}");
}
