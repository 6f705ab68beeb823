//! Time the declarator spends turning a new tip into the bytes of the first job for one
//! channel: `WorkBook::on_tip` (empty-block template) plus `Channel::on_new_tip` (future job +
//! `SetNewPrevHash` via channels_sv2), without any I/O.
//!
//! `cargo bench -p jdc-declarator --bench tip_work`

use std::time::Instant;

use jdc_declarator::downstream::channel::Channel;
use jdc_declarator::payout::Payout;
use jdc_declarator::work::WorkBook;
use jdc_shared::bitcoin::{Network, ScriptBuf, Target};
use jdc_shared::chain;
use jdc_shared::messages::Tip;
use stratum_core::channels_sv2::extranonce_manager::ExtranonceAllocator;
use stratum_core::channels_sv2::server::extended::ExtendedChannel;

fn main() {
    let mut book = WorkBook::new(
        Network::Regtest,
        Payout::new(vec![(ScriptBuf::from_bytes(vec![0x51; 22]), 1)]).expect("payout"),
    );
    let mut allocator = ExtranonceAllocator::new(vec![], 10, 65_536).expect("allocator");
    let prefix = allocator.allocate_extended(8).expect("prefix");
    let channel = ExtendedChannel::new_for_job_declaration_client(
        1,
        "bench".into(),
        prefix,
        Target::from_le_bytes([0xff; 32]),
        1.0,
        true,
        8,
        1,
        6.0,
        None,
        "jdc".into(),
        None,
    )
    .expect("channel");
    let mut channel = Channel::extended(channel, 1);
    let n = 2_000u32;
    let (mut t_book, mut t_channel) = (0u128, 0u128);
    for i in 0..n {
        let height = 1000 + i;
        let mut prev = [0u8; 32];
        prev[..4].copy_from_slice(&i.to_le_bytes());
        let tip = Tip {
            height,
            prev_hash: hex::encode(prev),
            nbits: 0x207f_ffff,
            time: 1_700_000_000 + i,
            min_time: 1_700_000_000,
            version: 0x2000_0000,
            subsidy: chain::subsidy(height, Network::Regtest),
            detected_at_us: 0,
            detected_by: "bench".into(),
        };
        let t0 = Instant::now();
        let (state, _) = book.on_tip(&tip).expect("tip").expect("new");
        let t1 = Instant::now();
        let msgs = channel.on_new_tip(&state).expect("job");
        let t2 = Instant::now();
        assert_eq!(msgs.len(), 2);
        t_book += (t1 - t0).as_nanos();
        t_channel += (t2 - t1).as_nanos();
    }
    println!(
        "new tip → first job for one channel: work book {:.1} µs, channel job + SetNewPrevHash {:.1} µs (mean of {n})",
        t_book as f64 / f64::from(n) / 1000.0,
        t_channel as f64 / f64::from(n) / 1000.0
    );
}
