//! Bus encoding and decoding of a 5,000-transaction template.
//!
//! `cargo bench -p jdc-shared --bench bus_codec`

use std::time::Instant;

use jdc_shared::bus::{self, Topic};
use jdc_shared::messages::{Template, TemplateTx};

fn main() {
    let txs: Vec<TemplateTx> = (0..5_000u32)
        .map(|i| TemplateTx {
            data: vec![(i % 251) as u8; 285],
            txid: hex::encode([i as u8; 32]),
            wtxid: hex::encode([(i + 1) as u8; 32]),
            fee: 2_000,
            weight: 800,
            sigops: 1,
            depends: vec![],
        })
        .collect();
    let t = Template {
        id: 1,
        height: 1,
        prev_hash: hex::encode([0u8; 32]),
        version: 0x2000_0000,
        bits: 0x207f_ffff,
        target: hex::encode([0xffu8; 32]),
        curtime: 1,
        mintime: 1,
        coinbase_value: 1,
        subsidy: 1,
        weight_limit: 4_000_000,
        sigop_limit: 80_000,
        txs,
        tip_detected_at_us: 0,
    };
    let n = 20;
    let t0 = Instant::now();
    let mut body = Vec::new();
    for _ in 0..n {
        body = bus::encode_body(Topic::Template, &t).expect("encode");
    }
    let enc = t0.elapsed() / n;
    let bytes = bus::test_support_envelope(&body);
    let t0 = Instant::now();
    for _ in 0..n {
        let _: bus::Envelope<serde::de::IgnoredAny> =
            rmp_serde::from_slice(&bytes).expect("header");
    }
    let header = t0.elapsed() / n;
    let t0 = Instant::now();
    for _ in 0..n {
        let _: bus::Envelope<Template> = rmp_serde::from_slice(&bytes).expect("decode");
    }
    let full = t0.elapsed() / n;
    println!(
        "template of 5000 txs, {:.2} MB on the bus: encode {enc:?}, header check {header:?}, full decode {full:?}",
        bytes.len() as f64 / 1e6
    );
}
