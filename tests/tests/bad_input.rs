//! Bad input of every kind: broken configuration, garbage on the SV2 port, failed Noise
//! handshakes, malformed bus messages. Each is refused with a clear error and only the
//! offender is affected.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use jdc_shared::bus::{BusStats, HeartbeatWithStats, Topic};
use jdc_tests::bitcoind::{free_port, Bitcoind};
use jdc_tests::stack::{target_dir, Proc, Stack};

const COMPONENTS: [&str; 4] = ["template-watcher", "tx-selector", "declarator", "metrics"];

fn run_to_exit(component: &str, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let dir = std::env::temp_dir().join(format!("jdc-bad-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut p = Proc::spawn(
        component,
        &target_dir()?.join(format!("jdc-{component}")),
        &args,
        &[],
        &dir,
    )?;
    let status = p.wait_exit(Duration::from_secs(20))?;
    Ok((status.code().unwrap_or(-1), p.log_lines().join("\n")))
}

#[test]
fn bad_configuration_exits_2_naming_the_key() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("jdc-bad-config-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let typo = dir.join("typo.toml");
    std::fs::write(&typo, "[bus]\nwatchr = \"tcp://127.0.0.1:1\"\n")?;
    let bad_type = dir.join("type.toml");
    std::fs::write(
        &bad_type,
        "[template_watcher]\ntip_poll_interval_ms = \"often\"\n",
    )?;
    for component in COMPONENTS {
        let typo_arg = typo.display().to_string();
        let (code, err) = run_to_exit(component, &["-c", &typo_arg])?;
        assert_eq!(code, 2, "{component} with an unknown key: {err}");
        assert!(
            err.contains("bus.watchr"),
            "{component} did not name the key: {err}"
        );

        let bad_type_arg = bad_type.display().to_string();
        let (code, err) = run_to_exit(component, &["-c", &bad_type_arg])?;
        assert_eq!(code, 2, "{component} with a bad value: {err}");
        assert!(
            err.contains("template_watcher.tip_poll_interval_ms"),
            "{component}: {err}"
        );

        let (code, err) = run_to_exit(component, &["--set", "network=moon"])?;
        assert_eq!(code, 2, "{component} with a bad network: {err}");
        assert!(err.contains("`network`"), "{component}: {err}");

        let (code, err) = run_to_exit(component, &["-c", "/nonexistent/jdc.toml"])?;
        assert_eq!(code, 2, "{component} with a missing file: {err}");
    }
    // The declarator needs a payout, and a valid one.
    let (code, err) = run_to_exit("declarator", &[])?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("declarator.payout"), "{err}");
    let (code, err) = run_to_exit(
        "declarator",
        &[
            "--set",
            "declarator.payout=[{destination=\"bc1qnotregtest\"}]",
        ],
    )?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("declarator.payout[0].destination"), "{err}");
    // An upstream whose authority key or mode is not valid.
    let payout = "declarator.payout=[{destination=\"51\"}]";
    for (entry, key) in [
        (
            "{pool=\"127.0.0.1:1\",jds=\"127.0.0.1:2\",authority_public_key=\"nope\",user_identity=\"u\"}",
            "declarator.upstream[0].authority_public_key",
        ),
        (
            "{pool=\"127.0.0.1:1\",jds=\"127.0.0.1:2\",authority_public_key=\"9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72\",user_identity=\"u\",mode=\"fast\"}",
            "declarator.upstream[0].mode",
        ),
    ] {
        let upstream = format!("declarator.upstream=[{entry}]");
        let (code, err) = run_to_exit("declarator", &["--set", payout, "--set", &upstream])?;
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(key), "{key} not named: {err}");
    }
    Ok(())
}

fn miner_stack() -> anyhow::Result<(Bitcoind, Stack)> {
    let node = Bitcoind::start()?;
    node.create_wallet("miner")?;
    let addr = node.new_address()?;
    node.generate_to(&addr, 101)?;
    let mut stack = Stack::new(&node, &addr.to_string(), "")?;
    stack.start_services()?;
    stack.start_miner("miner", &["--max-shares-per-sec", "4"])?;
    Ok((node, stack))
}

/// Waits for the good miner to get a share accepted after event line `from`.
fn miner_still_mining(stack: &Stack, from: usize) -> anyhow::Result<()> {
    stack
        .get("miner")?
        .wait_for_event(from, Duration::from_secs(30), |e| {
            e["event"] == "share-accepted"
        })
        .map(|_| ())
}

/// Whether the server closed `stream` (EOF or reset) within `timeout`.
fn closed_by_server(stream: &mut TcpStream, timeout: Duration) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn garbage_and_bad_handshakes_drop_only_that_peer() -> anyhow::Result<()> {
    let (_node, stack) = miner_stack()?;
    let addr = format!("127.0.0.1:{}", stack.ports.sv2);
    let declarator = stack.get("declarator")?;

    // 1. Plain garbage (HTTP, say).
    let from = stack.get("miner")?.stdout_len();
    let mut s = TcpStream::connect(&addr)?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
    s.write_all(&[0xffu8; 300])?;
    assert!(
        closed_by_server(&mut s, Duration::from_secs(20)),
        "garbage peer not dropped"
    );
    declarator.wait_for_log("device dropped", Duration::from_secs(10))?;
    miner_still_mining(&stack, from)?;

    // 2. A half handshake that stalls: dropped at the handshake timeout, nobody else waits.
    let mut stall = TcpStream::connect(&addr)?;
    stall.write_all(&[7u8; 20])?;

    // 3. A client that expects another authority key refuses the server; 4. a client that
    //    completes the handshake then sends garbage frames is dropped by the server.
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let wrong = jdc_shared::sv2::AuthorityKeys::generate().public_key();
        let tcp = tokio::net::TcpStream::connect(&addr).await?;
        let r = jdc_shared::sv2::connect(tcp, Some(wrong), Duration::from_secs(5)).await;
        let Err(e) = r else {
            bail!("handshake with the wrong authority key succeeded")
        };
        assert!(
            e.to_string().to_lowercase().contains("handshake"),
            "unclear error: {e}"
        );

        let right = jdc_shared::sv2::parse_authority_public_key(&stack.authority_key()?)?;
        let tcp = tokio::net::TcpStream::connect(&addr).await?;
        let (mut reader, mut writer) =
            jdc_shared::sv2::connect(tcp, Some(right), Duration::from_secs(5)).await?;
        // An encrypted frame whose header decrypts but whose payload is junk for its type.
        let junk = writer.seal_for_tests(&[0, 0, 0x13, 3, 0, 0, 1, 2, 3])?;
        writer.send_raw_for_tests(&junk).await?;
        let dropped = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match reader.recv().await {
                    Ok(_) => continue,
                    Err(_) => return,
                }
            }
        })
        .await;
        if dropped.is_err() {
            bail!("peer sending malformed frames was not dropped");
        }
        anyhow::Ok(())
    })?;
    assert!(
        closed_by_server(&mut stall, Duration::from_secs(20)),
        "stalled handshake not dropped"
    );
    let from = stack.get("miner")?.stdout_len();
    miner_still_mining(&stack, from)?;
    Ok(())
}

#[test]
fn malformed_bus_messages_are_counted_and_skipped() -> anyhow::Result<()> {
    // The declarator listens to a "selector" stream that this test publishes garbage on, next
    // to the real watcher stream; it must count the garbage and keep mining.
    let node = Bitcoind::start()?;
    node.create_wallet("miner")?;
    let addr = node.new_address()?;
    node.generate_to(&addr, 101)?;
    let mut stack = Stack::new(&node, &addr.to_string(), "")?;
    let fake_selector = free_port();
    let fake = format!("bus.selector=\"tcp://127.0.0.1:{fake_selector}\"");
    stack.start(
        "declarator",
        &["--set", &fake],
        "SV2 mining server listening",
    )?;
    stack.start("template-watcher", &[], "bus publisher bound")?;
    stack.start_miner("miner", &["--max-shares-per-sec", "4"])?;

    let rt = tokio::runtime::Runtime::new()?;
    let declarator_stream = format!("tcp://127.0.0.1:{}", stack.ports.declarator);
    let malformed = rt.block_on(async move {
        use zeromq::{Socket, SocketSend};
        let mut publisher = zeromq::PubSocket::new();
        publisher
            .bind(&format!("tcp://127.0.0.1:{fake_selector}"))
            .await
            .context("bind fake selector")?;
        let stats = std::sync::Arc::new(BusStats::default());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (mut inbox, _tasks) = jdc_shared::bus::subscribe(
            jdc_shared::bus::SubscribeOptions {
                streams: vec![("declarator".into(), declarator_stream)],
                topics: vec![Topic::Heartbeat],
                silence_timeout: Duration::from_secs(5),
            },
            stats,
            shutdown.clone(),
        );
        let garbage: Vec<Vec<bytes::Bytes>> = vec![
            vec![bytes::Bytes::from_static(b"selection"), bytes::Bytes::from_static(b"\xc1\xc1not msgpack")],
            vec![bytes::Bytes::from_static(b"selection")],
            vec![bytes::Bytes::from_static(b"selection"), bytes::Bytes::from(rmp_serde::to_vec_named(&serde_json::json!({"version": 99, "source": "x", "instance": 1, "seq": 1, "sent_at_us": 1, "body": {}}))?)],
            vec![bytes::Bytes::from_static(b"selection"), bytes::Bytes::from(rmp_serde::to_vec_named(&serde_json::json!({"version": 1, "source": "x", "instance": 1, "seq": 1, "sent_at_us": 1, "body": {"id": "not a number"}}))?)],
        ];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for g in &garbage {
                if let Ok(msg) = zeromq::ZmqMessage::try_from(g.clone()) {
                    let _ = publisher.send(msg).await;
                }
            }
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), inbox.recv()).await {
                let hb: HeartbeatWithStats = m.decode()?;
                if hb.bus_malformed >= 4 {
                    shutdown.cancel();
                    return anyhow::Ok(hb.bus_malformed);
                }
            }
            if Instant::now() > deadline {
                bail!("declarator heartbeat never counted the malformed messages");
            }
        }
    })?;
    assert!(malformed >= 4);
    let declarator = stack.get("declarator")?;
    declarator.wait_for_log("malformed", Duration::from_secs(5))?;
    // Still mining: a new block arrives after the garbage.
    let before = node
        .rpc()
        .map(|r| bitcoincore_rpc::RpcApi::get_block_count(&r))??;
    let deadline = Instant::now() + Duration::from_secs(60);
    while node
        .rpc()
        .map(|r| bitcoincore_rpc::RpcApi::get_block_count(&r))??
        < before + 2
    {
        if Instant::now() > deadline {
            bail!("mining stopped after malformed bus messages");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The rejected-share trigger's limits (`upstream_reject_*`).
#[test]
fn bad_reject_limits_exit_2_naming_the_key() -> anyhow::Result<()> {
    let payout = "declarator.payout=[{destination=\"51\"}]";
    for (set, key) in [
        (
            "declarator.upstream_reject_window=0",
            "declarator.upstream_reject_window",
        ),
        (
            "declarator.upstream_reject_max_fraction=1.5",
            "declarator.upstream_reject_max_fraction",
        ),
        (
            "declarator.upstream_reject_max_fraction=0",
            "declarator.upstream_reject_max_fraction",
        ),
    ] {
        let (code, err) = run_to_exit("declarator", &["--set", payout, "--set", set])?;
        assert_eq!(code, 2, "{set}: {err}");
        assert!(err.contains(key), "{key} not named: {err}");
    }
    Ok(())
}
