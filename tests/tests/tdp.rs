//! The template-watcher's SV2 Template Distribution server, end to end: a client on SRI's
//! crates (Noise with the server's authority key) gets a template and the tip at once, a new
//! tip within milliseconds, a fresh template with the mempool's transactions and their data,
//! and its solution becomes a block bitcoind accepts. Bad clients are dropped alone. Many
//! clients get every tip, refreshes go out only when fees rose past the configured delta, and
//! jdc-metrics counts clients and templates sent.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bitcoincore_rpc::RpcApi;
use jdc_shared::bitcoin::{
    consensus::{deserialize, serialize},
    hashes::Hash,
    Transaction,
};
use jdc_tests::bitcoind::{free_port, Bitcoind};
use jdc_tests::exposition::{scrape, sum};
use jdc_tests::stack::Stack;
use jdc_tests::tdp_client::{coinbase, solve, Client};
use jdc_tests::wait_until;
use stratum_core::binary_sv2::B064KOwned;
use stratum_core::common_messages_sv2::Protocol;
use stratum_core::parsers_sv2::{
    AnyMessageOwned as Message, CommonMessagesOwned, TemplateDistributionOwned as Tdp,
};
use stratum_core::template_distribution_sv2::{
    CoinbaseOutputConstraints, RequestTransactionData, SubmitSolutionOwned,
};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tdp_client_gets_templates_and_tips_and_its_solution_becomes_a_block(
) -> anyhow::Result<()> {
    let tdp_port = free_port();
    let (node, funding, mut stack) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let (node, funding) = Bitcoind::start_funded()?;
        let mut stack = Stack::new(&node, "51", "")?;
        stack.enable_tdp(tdp_port)?;
        stack.start(
            "template-watcher",
            &[],
            "Template Distribution server listening",
        )?;
        Ok((node, funding, stack))
    })?;
    let key = stack.tdp_key()?;
    let addr = format!("127.0.0.1:{tdp_port}");
    let rpc = node.rpc()?;

    // The current tip: a future template and the SetNewPrevHash activating it, at once.
    let (mut client, future, prev) = Client::open(&addr, &key, 100).await?;
    assert_eq!(prev.template_id, future.template_id);
    let best = rpc.get_best_block_hash()?;
    assert_eq!(prev.prev_hash.to_array(), best.to_byte_array());

    // Bad clients are dropped alone: garbage, and a Mining SetupConnection.
    let mut garbage = TcpStream::connect(&addr).await?;
    tokio::io::AsyncWriteExt::write_all(&mut garbage, &[0xffu8; 200]).await?;
    let (_, refused) = Client::connect(&addr, &key, Protocol::MiningProtocol).await?;
    assert!(
        matches!(
            refused,
            Message::Common(CommonMessagesOwned::SetupConnectionError(_))
        ),
        "{refused:?}"
    );

    // A frame announcing 16 MB (SubmitSolution, message type 0x76): dropped, unread.
    let (mut big, answer) =
        Client::connect(&addr, &key, Protocol::TemplateDistributionProtocol).await?;
    assert!(matches!(
        answer,
        Message::Common(CommonMessagesOwned::SetupConnectionSuccess(_))
    ));
    let header = big.writer.seal_for_tests(&[0, 0, 0x76, 0xff, 0xff, 0xff])?;
    big.writer.send_raw_for_tests(&header).await?;
    let dropped = tokio::time::timeout(Duration::from_secs(10), async {
        while big.reader.recv().await.is_ok() {}
    })
    .await;
    assert!(
        dropped.is_ok(),
        "a client announcing an oversized frame was not dropped"
    );

    // A client that never reads what it is sent: the others do not wait for it.
    let (mut stalled, _) =
        Client::connect(&addr, &key, Protocol::TemplateDistributionProtocol).await?;
    stalled
        .writer
        .send(Message::TemplateDistribution(
            Tdp::CoinbaseOutputConstraints(CoinbaseOutputConstraints {
                coinbase_output_max_additional_size: 0,
                coinbase_output_max_additional_sigops: 0,
            }),
        ))
        .await?;

    // A new block: a new future template and its SetNewPrevHash, within milliseconds.
    let mined = tokio::task::block_in_place(|| node.generate(1))?[0];
    let t0 = Instant::now();
    let next_prev = client
        .until("the new tip", Duration::from_secs(10), |m| match m {
            Tdp::SetNewPrevHash(p) if p.prev_hash.to_array() == mined.to_byte_array() => {
                Some(p.clone())
            }
            _ => None,
        })
        .await?;
    eprintln!(
        "generate → SetNewPrevHash at the client: {:?}",
        t0.elapsed()
    );

    // Payments: a fresh template carrying them, and their data on request.
    let txids = tokio::task::block_in_place(|| -> anyhow::Result<Vec<_>> {
        (0..3)
            .map(|_| node.send_to_address(&funding, 100_000))
            .collect()
    })?;
    let full = client
        .until(
            "a template with the payments",
            Duration::from_secs(30),
            |m| match m {
                // Coinbase + 3 transactions: a merkle path of 2.
                Tdp::NewTemplate(t) if !t.future_template && t.merkle_path.iter().count() >= 2 => {
                    Some(t.clone())
                }
                _ => None,
            },
        )
        .await?;
    client
        .writer
        .send(Message::TemplateDistribution(Tdp::RequestTransactionData(
            RequestTransactionData {
                template_id: full.template_id,
            },
        )))
        .await?;
    let data = client
        .until(
            "the transaction data",
            Duration::from_secs(5),
            |m| match m {
                Tdp::RequestTransactionDataSuccess(d) => Some(d.clone()),
                _ => None,
            },
        )
        .await?;
    let txs: Vec<Transaction> = data
        .transaction_list
        .iter()
        .map(|t| deserialize(t.as_ref()))
        .collect::<Result<_, _>>()?;
    for id in &txids {
        assert!(
            txs.iter().any(|t| &t.compute_txid() == id),
            "payment {id} missing from the template's data"
        );
    }

    // A solution: bitcoind takes the block, with the payments and our coinbase.
    let cb = coinbase(&full, &[0x51])?;
    let header = solve(&full, &next_prev, &cb);
    client
        .writer
        .send(Message::TemplateDistribution(Tdp::SubmitSolution(
            SubmitSolutionOwned {
                template_id: full.template_id,
                version: header.version.to_consensus() as u32,
                header_timestamp: header.time,
                header_nonce: header.nonce,
                coinbase_tx: B064KOwned::new(serialize(&cb))
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?,
            },
        )))
        .await?;
    let hash = header.block_hash();
    tokio::task::block_in_place(|| {
        wait_until(
            "bitcoind to take the TDP block",
            Duration::from_secs(10),
            || Ok((rpc.get_best_block_hash()? == hash).then_some(())),
        )
    })?;
    let block = rpc.get_block(&hash)?;
    assert_eq!(block.txdata[0].compute_txid(), cb.compute_txid());
    for id in &txids {
        assert!(block.txdata.iter().any(|t| &t.compute_txid() == id));
    }
    let log = stack.get("template-watcher")?.log_lines().join("\n");
    assert!(log.contains("TDP block accepted by bitcoind"), "{log}");
    assert!(
        log.contains("TDP client dropped"),
        "the bad clients are logged"
    );
    drop(stalled);
    drop(stack.take("template-watcher"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_get_every_tip_and_refreshes_only_past_the_fee_delta() -> anyhow::Result<()> {
    const CLIENTS: usize = 32;
    const FEE_DELTA: u64 = 50_000;
    let tdp_port = free_port();
    let (node, funding, mut stack) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let (node, funding) = Bitcoind::start_funded()?;
        let mut stack = Stack::new(&node, "51", "")?;
        stack.enable_tdp_with_fee_delta(tdp_port, FEE_DELTA)?;
        stack.start(
            "template-watcher",
            &[],
            "Template Distribution server listening",
        )?;
        stack.start("metrics", &[], "listening")?;
        Ok((node, funding, stack))
    })?;
    let key = stack.tdp_key()?;
    let addr = format!("127.0.0.1:{tdp_port}");
    let metrics = stack.ports.metrics;
    let metric = move |name: &str, labels: &[&str]| -> anyhow::Result<f64> {
        Ok(sum(&scrape(metrics)?, name, labels))
    };

    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(Client::open(&addr, &key, 0).await?.0);
    }
    tokio::task::block_in_place(|| {
        wait_until(
            "jdc-metrics to count the TDP clients",
            Duration::from_secs(10),
            || Ok((metric("jdc_tdp_clients", &[])? == CLIENTS as f64).then_some(())),
        )
    })?;

    // A new block reaches every client, then the (empty) template for it.
    let mined = tokio::task::block_in_place(|| node.generate(1))?[0];
    let mut base_value = 0;
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .until("the new tip", Duration::from_secs(10), |m| match m {
                Tdp::SetNewPrevHash(p) if p.prev_hash.to_array() == mined.to_byte_array() => {
                    Some(())
                }
                _ => None,
            })
            .await
            .with_context(|| format!("client {i}"))?;
        base_value = client
            .until(
                "the template for the new tip",
                Duration::from_secs(10),
                |m| match m {
                    Tdp::NewTemplate(t) if !t.future_template => {
                        Some(t.coinbase_tx_value_remaining)
                    }
                    _ => None,
                },
            )
            .await
            .with_context(|| format!("client {i}"))?;
    }

    // A payment with a small fee: bitcoind's template gains it, but its fees stay under the
    // delta, so no client is sent a refresh.
    let templates_before = metric("jdc_templates_total", &[])?;
    let cheap = tokio::task::block_in_place(|| node.send_to_address(&funding, 100_000))?;
    tokio::task::block_in_place(|| {
        wait_until(
            "the watcher to publish a template with the cheap payment",
            Duration::from_secs(30),
            || {
                let fees = metric("jdc_template_fees_sats", &[])?;
                let n = metric("jdc_templates_total", &[])?;
                Ok((fees > 0.0 && n > templates_before).then_some(fees))
            },
        )
    })
    .and_then(|fees| {
        if fees >= FEE_DELTA as f64 {
            bail!("the cheap payment paid {fees} sats, not less than the delta");
        }
        Ok(())
    })?;
    // The server reads the same bus stream as jdc-metrics: a refresh would be on its way now.
    let quiet = clients[0].next(Duration::from_secs(1)).await;
    if let Ok(m) = quiet {
        bail!("a template refresh under the fee delta was sent: {m:?}");
    }

    // A payment paying far more than the delta: every client gets a refresh with both.
    let rich = tokio::task::block_in_place(|| node.send_with_fee_rate(&funding, 100_000, 500))?;
    for (i, client) in clients.iter_mut().enumerate() {
        let refresh = client
            .until(
                "a refresh with both payments",
                Duration::from_secs(30),
                |m| match m {
                    // Coinbase + 2 transactions: a merkle path of 2.
                    Tdp::NewTemplate(t)
                        if !t.future_template && t.merkle_path.iter().count() == 2 =>
                    {
                        Some(t.clone())
                    }
                    _ => None,
                },
            )
            .await
            .with_context(|| format!("client {i} (payments {cheap} and {rich})"))?;
        assert!(
            refresh.coinbase_tx_value_remaining >= base_value + FEE_DELTA,
            "client {i}: {} sats, the template before had {base_value}",
            refresh.coinbase_tx_value_remaining
        );
    }
    let full_sent = metric("jdc_tdp_templates_sent_total", &["kind=\"full\""])?;
    let future_sent = metric("jdc_tdp_templates_sent_total", &["kind=\"future\""])?;
    tokio::task::block_in_place(|| {
        wait_until(
            "jdc-metrics to count the templates sent",
            Duration::from_secs(10),
            || {
                let full = metric("jdc_tdp_templates_sent_total", &["kind=\"full\""])?;
                let future = metric("jdc_tdp_templates_sent_total", &["kind=\"future\""])?;
                // Per client: a future template on connecting and on the block; the full
                // template on connecting (when there was one), on the block, and the refresh.
                Ok((future >= 2.0 * CLIENTS as f64 && full >= 2.0 * CLIENTS as f64).then_some(()))
            },
        )
    })
    .with_context(|| format!("full {full_sent}, future {future_sent}"))?;

    // Clients leaving are counted out.
    clients.truncate(CLIENTS / 2);
    tokio::task::block_in_place(|| {
        wait_until(
            "jdc-metrics to see half the TDP clients gone",
            Duration::from_secs(15),
            || Ok((metric("jdc_tdp_clients", &[])? == (CLIENTS / 2) as f64).then_some(())),
        )
    })?;
    drop(clients);
    drop(stack.take("metrics"));
    drop(stack.take("template-watcher"));
    Ok(())
}
