//! Stratum V1 devices straight on the declarator's V1 port: blocks with version rolling
//! accepted by bitcoind, shares judged like SV2 shares, and every kind of bad input answered
//! or dropped for the offending device only.

use std::time::{Duration, Instant};

use bitcoincore_rpc::RpcApi;
use jdc_shared::bitcoin::hashes::Hash;
use jdc_tests::bitcoind::Bitcoind;
use jdc_tests::exposition;
use jdc_tests::stack::Stack;
use jdc_tests::sv1_client::{solve_block, V1Client};
use jdc_tests::wait_until;
use serde_json::{json, Value};

const MASK: u32 = 0x1fff_e000;

fn stack(bitcoind: &Bitcoind, extra: &[&str]) -> anyhow::Result<Stack> {
    let mut s = Stack::new(bitcoind, "51", "")?;
    // Regtest: every hash is a share at 1 H/s (a target of 1 in 10).
    let mut args = vec!["--set", "declarator.sv1_initial_hash_rate=1.0"];
    args.extend_from_slice(extra);
    s.start("declarator", &args, "Stratum V1 server listening")?;
    s.start_template_source()?;
    s.start("metrics", &[], "listening")?;
    // Shares are not re-sent: jdc-metrics must hear the declarator before the first one.
    let port = s.ports.metrics;
    wait_until(
        "jdc-metrics to hear the declarator",
        Duration::from_secs(15),
        || {
            let text = exposition::scrape(port)?;
            Ok(
                (exposition::sum(&text, "jdc_process_up", &["process=\"declarator\""]) == 1.0)
                    .then_some(()),
            )
        },
    )?;
    Ok(s)
}

fn v1(s: &Stack) -> anyhow::Result<V1Client> {
    V1Client::connect(&format!("127.0.0.1:{}", s.ports.sv1))
}

fn error_code(answer: &Value) -> Option<i64> {
    answer["error"][0].as_i64()
}

#[test]
fn a_v1_device_mines_blocks_with_version_rolling_that_bitcoind_accepts() -> anyhow::Result<()> {
    let bitcoind = Bitcoind::start()?;
    bitcoind.generate(1)?;
    let s = stack(&bitcoind, &[])?;
    let mut dev = v1(&s)?;
    let mask = dev.handshake(Some(0xffff_ffff))?;
    assert_eq!(mask, Some(MASK), "the server's mask is what may roll");
    assert!(!dev.extranonce1.is_empty());
    assert!(dev.extranonce2_size >= 4, "{}", dev.extranonce2_size);
    let rpc = bitcoind.rpc()?;
    let mut en2 = vec![0u8; dev.extranonce2_size];
    for round in 0..3u32 {
        // The job on bitcoind's tip (the notify for the last block may still be on its way).
        let tip = rpc.get_best_block_hash()?.to_byte_array();
        let job = loop {
            let job = dev.next_job(Duration::from_secs(30))?;
            if job.prev_hash == tip {
                break job;
            }
        };
        assert!(job.clean, "a job for a new tip cleans the old ones");
        assert!(
            dev.difficulty.is_some(),
            "set_difficulty before the first job"
        );
        let rolled = 0x0000_2000u32 << (round % 4);
        en2[0] = round as u8;
        let sol = solve_block(&job, &dev.extranonce1, &en2, (job.version & !MASK) | rolled)?;
        let answer = dev.submit(&job, &sol, Some(rolled))?;
        assert_eq!(answer["result"], json!(true), "share refused: {answer}");
        // The block reaches bitcoind with the rolled version.
        let hash = wait_until("the block at bitcoind", Duration::from_secs(10), || {
            let best = rpc.get_best_block_hash()?;
            Ok((best == sol.hash).then_some(best))
        })?;
        let header = rpc.get_block_header(&hash)?;
        assert_eq!(header.version.to_consensus() as u32, sol.version);
        assert_ne!(
            header.version.to_consensus() as u32 & MASK,
            0,
            "rolled bits kept"
        );
        // The same share again is a duplicate; the old job is stale after the new tip.
        let again = dev.submit(&job, &sol, Some(rolled))?;
        assert!(
            matches!(error_code(&again), Some(21) | Some(22)),
            "resubmitted block: {again}"
        );
    }
    // The last block's tip reaches the device on its own time (after the watcher hears of it):
    // wait for its job first, so no clean job arrives later and makes the jobs below stale.
    let tip = rpc.get_best_block_hash()?.to_byte_array();
    while dev.next_job(Duration::from_secs(30))?.prev_hash != tip {}
    // A suggested difficulty is taken: a new difficulty, then a job carrying it.
    dev.pending.clear();
    let answer = dev.call("mining.suggest_difficulty", json!([0.5]))?;
    assert_eq!(answer["result"], json!(true), "{answer}");
    // set_difficulty and its job follow the answer; what came before it is older.
    dev.pending.clear();
    let job = dev.next_job(Duration::from_secs(10))?;
    let d = dev.difficulty.unwrap_or_default();
    assert!(
        (d - 0.5).abs() < 0.01,
        "difficulty {d} after suggesting 0.5"
    );
    let answer = dev.call("mining.suggest_difficulty", json!(["lots"]))?;
    assert_eq!(error_code(&answer), Some(20), "{answer}");

    // Shares that break the rules are refused with the V1 code saying why.
    en2[0] = 0xee;
    let sol = solve_block(&job, &dev.extranonce1, &en2, job.version)?;
    let outside = dev.submit(&job, &sol, Some(0x0000_0001))?;
    assert_eq!(error_code(&outside), Some(20), "{outside}");
    assert!(outside.to_string().contains("mask"), "{outside}");
    let mut short = sol.clone();
    short.extranonce2.pop();
    let wrong_size = dev.submit(&job, &short, None)?;
    assert_eq!(error_code(&wrong_size), Some(20), "{wrong_size}");
    assert!(
        wrong_size.to_string().contains("extranonce2"),
        "{wrong_size}"
    );
    let mut unknown = job.clone();
    unknown.id = "999999".into();
    let stale = dev.submit(&unknown, &sol, None)?;
    assert_eq!(error_code(&stale), Some(21), "{stale}");
    // A nonce that does not meet even the share target: low difficulty.
    let mut bad = sol.clone();
    let mut found_low = false;
    for nonce in 0..10_000u32 {
        let h = jdc_tests::sv1_client::header(&job, &dev.extranonce1, &en2, job.version, nonce);
        let hash = h.block_hash().to_byte_array();
        // Far above any share target at 1 H/s: the top byte of the hash (little endian) set.
        if hash[31] == 0xff {
            bad.nonce = nonce;
            found_low = true;
            break;
        }
    }
    assert!(found_low);
    let low = dev.submit(&job, &bad, None)?;
    assert_eq!(error_code(&low), Some(23), "{low}");

    // The shares are counted as V1 shares, the blocks as accepted.
    let text =
        wait_until(
            "V1 shares and jobs in /metrics",
            Duration::from_secs(10),
            || {
                let text = exposition::scrape(s.ports.metrics)?;
                let sv1 = |result: &str| {
                    exposition::sum(
                        &text,
                        "jdc_shares_total",
                        &["channel_kind=\"sv1\"", &format!("result=\"{result}\"")],
                    )
                };
                // Jobs to the V1 device count like an SV2 device's (published as they are written).
                let jobs = exposition::sum(&text, "jdc_jobs_sent_total", &[]);
                let observed = exposition::sum(&text, "jdc_tip_to_job_seconds_count", &[]);
                Ok((sv1("accepted") >= 3.0
                    && sv1("rejected") >= 4.0
                    && jobs >= 3.0
                    && observed >= 3.0)
                    .then_some(text))
            },
        )?;
    exposition::check(&text).map_err(anyhow::Error::msg)?;
    let blocks =
        |stage: &str| exposition::sum(&text, "jdc_blocks_total", &[&format!("stage=\"{stage}\"")]);
    assert!(blocks("accepted") >= 3.0);
    assert!(blocks("submitted") >= blocks("accepted"));
    // The V1 device is the only one: every job counted is one it was sent. Three blocks, so
    // at least three new tips each made a clean job for it, and the first job on each tip
    // measured the tip-to-job latency.
    let jobs = exposition::sum(&text, "jdc_jobs_sent_total", &[]);
    assert!(jobs >= 3.0, "{jobs} jobs sent to the V1 device");
    let observed = exposition::sum(&text, "jdc_tip_to_job_seconds_count", &[]);
    assert!(observed >= 3.0, "{observed} tip-to-job latencies observed");
    Ok(())
}

#[test]
fn bad_input_on_the_v1_port_costs_only_the_offender() -> anyhow::Result<()> {
    let bitcoind = Bitcoind::start()?;
    bitcoind.generate(1)?;
    let s = stack(
        &bitcoind,
        &["--set", "declarator.sv1_max_submits_per_sec=5"],
    )?;
    // A well-behaved device, connected throughout.
    let mut good = v1(&s)?;
    good.handshake(None)?;
    let first = good.next_job(Duration::from_secs(30))?;
    let far = Instant::now() + Duration::from_secs(5);

    // Not JSON: an error naming the problem, then the connection ends.
    let mut garbage = v1(&s)?;
    garbage.send_raw(b"this is not json\n")?;
    let answer = garbage.read(far)?.expect("an error answer");
    assert!(
        answer["error"].to_string().contains("malformed"),
        "{answer}"
    );
    assert!(garbage.read(far)?.is_none(), "dropped after garbage");

    // Not UTF-8: dropped.
    let mut binary = v1(&s)?;
    binary.send_raw(&[0xff, 0xfe, 0x00, 0x80, b'\n'])?;
    assert!(binary.read(far)?.is_none(), "dropped after binary input");

    // A line over the limit (8 KiB by default): dropped, no matter what follows.
    let mut huge = v1(&s)?;
    let mut line = vec![b'a'; 9000];
    line.push(b'\n');
    let _ = huge.send_raw(&line);
    assert!(huge.read(far)?.is_none(), "dropped after an oversized line");

    // An unknown method: an error, and the connection goes on.
    let mut curious = v1(&s)?;
    let answer = curious.call("mining.get_transactions", json!(["1"]))?;
    assert_eq!(error_code(&answer), Some(20), "{answer}");
    assert!(answer.to_string().contains("unknown method"), "{answer}");
    let params = curious.call("mining.subscribe", json!({"not": "a list"}))?;
    assert!(
        params["error"].is_array(),
        "bad parameters answered: {params}"
    );
    curious.handshake(None)?;
    curious.next_job(Duration::from_secs(30))?;

    // Submitting before authorizing: refused, not dropped.
    let mut early = v1(&s)?;
    let answer = early.call(
        "mining.submit",
        json!(["w", "1", "00000000", "00000000", "00000000"]),
    )?;
    assert!(
        matches!(error_code(&answer), Some(24) | Some(25)),
        "{answer}"
    );

    // A flood of submits: refused beyond the rate (5/s, bursts of 10), then dropped.
    let mut flood = v1(&s)?;
    flood.handshake(None)?;
    for _ in 0..150 {
        if flood
            .send(
                "mining.submit",
                json!(["rig1", "1", "00", "00000000", "00000000"]),
            )
            .is_err()
        {
            break;
        }
    }
    let mut slow_down = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(msg) = flood.read(deadline)? {
        if msg.to_string().contains("too many submits") {
            slow_down += 1;
        }
    }
    assert!(slow_down >= 100, "{slow_down} submits refused as a flood");

    // The good device never noticed: it still gets the next block's job.
    bitcoind.generate(1)?;
    let next = wait_until(
        "a new job for the good device",
        Duration::from_secs(30),
        || {
            let job = good.next_job(Duration::from_secs(10))?;
            Ok((job.prev_hash != first.prev_hash && job.clean).then_some(job))
        },
    )?;
    assert!(next.clean);

    // Every kind of bad input is counted.
    let text = wait_until("bad-input counters", Duration::from_secs(10), || {
        let text = exposition::scrape(s.ports.metrics)?;
        let flood = exposition::sum(&text, "jdc_sv1_bad_input_total", &["reason=\"flood\""]);
        Ok((flood >= 100.0).then_some(text))
    })?;
    for (reason, at_least) in [
        ("malformed", 3.0),
        ("oversized", 1.0),
        ("unknown_method", 1.0),
    ] {
        let n = exposition::sum(
            &text,
            "jdc_sv1_bad_input_total",
            &[&format!("reason=\"{reason}\"")],
        );
        assert!(n >= at_least, "{reason}: {n}");
    }
    let log = s.get("declarator")?.log_lines().join("\n");
    assert!(
        log.contains("line longer than 8192 bytes"),
        "the log says why"
    );
    Ok(())
}

#[test]
fn the_sim_miner_mines_through_the_v1_port_and_vardiff_raises_its_difficulty() -> anyhow::Result<()>
{
    let bitcoind = Bitcoind::start()?;
    bitcoind.generate(1)?;
    let mut s = stack(&bitcoind, &[])?;
    let rpc = bitcoind.rpc()?;
    let start_height = rpc.get_block_count()?;
    let args = [
        "--protocol".to_string(),
        "sv1".into(),
        "--connect".into(),
        format!("127.0.0.1:{}", s.ports.sv1),
        "--user".into(),
        "rig7".into(),
        "--max-shares-per-sec".into(),
        "20".into(),
    ];
    let program = s.bin("jdc-sim-miner");
    let miner = s.start_command("sim-miner", &program, &args, "")?;
    // Blocks accepted by bitcoind.
    wait_until(
        "3 blocks from the V1 sim-miner",
        Duration::from_secs(60),
        || Ok((rpc.get_block_count()? >= start_height + 3).then_some(())),
    )?;
    miner.wait_for_event(0, Duration::from_secs(10), |e| {
        e["event"] == "share-accepted"
    })?;
    // It starts at 1 H/s (every hash a share) and sends 20 shares a second for a target of 6
    // a minute: SRI's vardiff (every 15 s at most) makes the target harder.
    let (_, first) =
        miner.wait_for_event(0, Duration::from_secs(10), |e| e["event"] == "set-target")?;
    let (_, harder) = miner.wait_for_event(0, Duration::from_secs(45), |e| {
        e["event"] == "set-target" && e["target"].as_str() < first["target"].as_str()
    })?;
    eprintln!("V1 target {} -> {}", first["target"], harder["target"]);
    let log = s.get("declarator")?.log_lines().join("\n");
    assert!(log.contains("V1 device authorized"), "{log}");
    assert!(log.contains("worker=rig7"), "the worker name is logged");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_and_sv2_devices_never_share_an_extranonce_prefix() -> anyhow::Result<()> {
    let (bitcoind, s) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let bitcoind = Bitcoind::start()?;
        bitcoind.generate(1)?;
        let s = stack(&bitcoind, &[])?;
        Ok((bitcoind, s))
    })?;
    let mut prefixes = Vec::new();
    let mut sv2 = Vec::new();
    let mut v1_devices = Vec::new();
    // Interleaved: SV2, V1, SV2, V1, ... from the one allocator.
    for _ in 0..4 {
        let dev = s.connect_device().await?;
        prefixes.push(("sv2", dev.prefix.clone(), dev.extranonce_size));
        sv2.push(dev);
        let addr = format!("127.0.0.1:{}", s.ports.sv1);
        let v1 = tokio::task::block_in_place(|| -> anyhow::Result<V1Client> {
            let mut v1 = V1Client::connect(&addr)?;
            v1.handshake(None)?;
            Ok(v1)
        })?;
        prefixes.push(("v1", v1.extranonce1.clone(), v1.extranonce2_size));
        v1_devices.push(v1);
    }
    let total = prefixes[0].1.len() + prefixes[0].2;
    for (kind, prefix, rollable) in &prefixes {
        assert_eq!(
            prefix.len() + rollable,
            total,
            "{kind}: every device rolls the same extranonce layout"
        );
    }
    let distinct: std::collections::HashSet<&Vec<u8>> = prefixes.iter().map(|p| &p.1).collect();
    assert_eq!(
        distinct.len(),
        prefixes.len(),
        "prefixes collide: {prefixes:?}"
    );
    drop(bitcoind);
    Ok(())
}

/// The declarator's `devices` state lists what is connected: an SV2 sim-miner (standard
/// channel) and a V1 sim-miner appear with their worker names, also for a subscriber that
/// joins after they connected (the state is re-sent), and go when they disconnect; jdc-metrics
/// counts them in `jdc_devices_connected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_declarator_publishes_connected_and_disconnected_devices() -> anyhow::Result<()> {
    use jdc_shared::bus::Topic;
    use jdc_shared::messages::Devices;

    let (bitcoind, mut s) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let bitcoind = Bitcoind::start()?;
        bitcoind.generate(1)?;
        let mut s = stack(&bitcoind, &[])?;
        s.start_miner(
            "sv2-miner",
            &[
                "--channel",
                "standard",
                "--user",
                "farm.sv2",
                "--nominal-hashrate",
                "1000",
            ],
        )?;
        let args = [
            "--protocol".to_string(),
            "sv1".into(),
            "--connect".into(),
            format!("127.0.0.1:{}", s.ports.sv1),
            "--user".into(),
            "rig7".into(),
        ];
        let program = s.bin("jdc-sim-miner");
        s.start_command("sv1-miner", &program, &args, "")?;
        Ok((bitcoind, s))
    })?;

    // Subscribed only now: the devices already connected come from the re-sent state.
    let (mut inbox, stop) = s.subscribe(vec![Topic::Devices]);
    let _stop = stop.drop_guard();
    let both = next_devices(&mut inbox, "listing both miners", |d: &Devices| {
        d.devices
            .iter()
            .any(|c| c.kind == "standard" && c.user_identity == "farm.sv2")
            && d.devices
                .iter()
                .any(|c| c.kind == "sv1" && c.user_identity == "rig7")
    })
    .await?;
    assert_eq!(both.devices.len(), 2, "{both:?}");
    let sv2 = both.devices.iter().find(|c| c.kind == "standard");
    assert_eq!(sv2.map(|c| c.nominal_hashrate), Some(1000.0), "{both:?}");
    assert!(both
        .devices
        .iter()
        .all(|c| c.peer.starts_with("127.0.0.1:")));

    let port = s.ports.metrics;
    let gauge = |kind: &str| -> anyhow::Result<f64> {
        let text = exposition::scrape(port)?;
        Ok(exposition::sum(
            &text,
            "jdc_devices_connected",
            &[format!("kind=\"{kind}\"").as_str()],
        ))
    };
    tokio::task::block_in_place(|| {
        wait_until(
            "jdc-metrics to count both devices",
            Duration::from_secs(15),
            || Ok((gauge("standard")? == 1.0 && gauge("sv1")? == 1.0).then_some(())),
        )
    })?;

    // The V1 miner goes: only the SV2 one is left.
    let mut v1 = s
        .take("sv1-miner")
        .ok_or_else(|| anyhow::anyhow!("no sv1-miner"))?;
    v1.kill9();
    let left = next_devices(&mut inbox, "without the V1 miner", |d: &Devices| {
        d.devices.iter().all(|c| c.kind != "sv1")
    })
    .await?;
    assert_eq!(left.devices.len(), 1, "{left:?}");
    assert_eq!(left.devices[0].user_identity, "farm.sv2");

    // Then the SV2 one: nothing is connected.
    let mut sv2 = s
        .take("sv2-miner")
        .ok_or_else(|| anyhow::anyhow!("no sv2-miner"))?;
    sv2.kill9();
    next_devices(&mut inbox, "with no device", |d: &Devices| {
        d.devices.is_empty()
    })
    .await?;
    tokio::task::block_in_place(|| {
        wait_until(
            "jdc-metrics to count no device",
            Duration::from_secs(15),
            || Ok((gauge("standard")? == 0.0 && gauge("sv1")? == 0.0).then_some(())),
        )
    })?;
    drop(bitcoind);
    Ok(())
}

/// The next `devices` state on `inbox` that `pred` accepts (30 s at most).
async fn next_devices(
    inbox: &mut tokio::sync::mpsc::Receiver<jdc_shared::bus::Received>,
    what: &str,
    pred: impl Fn(&jdc_shared::messages::Devices) -> bool,
) -> anyhow::Result<jdc_shared::messages::Devices> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout_at(deadline, inbox.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no devices state {what} within 30 s"))?
            .ok_or_else(|| anyhow::anyhow!("bus subscription ended"))?;
        let state: jdc_shared::messages::Devices = msg.decode()?;
        if pred(&state) {
            return Ok(state);
        }
    }
}
