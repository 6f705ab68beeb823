//! The template-watcher's SV2 Template Distribution server, end to end: a client on SRI's
//! crates (Noise with the server's authority key) gets a template and the tip at once, a new
//! tip within milliseconds, a fresh template with the mempool's transactions and their data,
//! and its solution becomes a block bitcoind accepts. Bad clients are dropped alone.

use std::time::{Duration, Instant};

use anyhow::bail;
use bitcoincore_rpc::RpcApi;
use jdc_shared::bitcoin::{
    consensus::{deserialize, serialize},
    hashes::Hash,
    Transaction,
};
use jdc_tests::bitcoind::{free_port, Bitcoind};
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
    let (node, funding, mut stack, key_file) =
        tokio::task::block_in_place(|| -> anyhow::Result<_> {
            let (node, funding) = Bitcoind::start_funded()?;
            let mut stack = Stack::new(&node, "51", "")?;
            let key_file = stack.enable_tdp(tdp_port)?;
            stack.start(
                "template-watcher",
                &[],
                "Template Distribution server listening",
            )?;
            Ok((node, funding, stack, key_file))
        })?;
    let key = std::fs::read_to_string(&key_file)?.trim().to_string();
    let addr = format!("127.0.0.1:{tdp_port}");
    let rpc = node.rpc()?;

    let (mut client, answer) =
        Client::connect(&addr, &key, Protocol::TemplateDistributionProtocol).await?;
    if !matches!(
        answer,
        Message::Common(CommonMessagesOwned::SetupConnectionSuccess(_))
    ) {
        bail!("SetupConnection refused: {answer:?}");
    }
    client
        .writer
        .send(Message::TemplateDistribution(
            Tdp::CoinbaseOutputConstraints(CoinbaseOutputConstraints {
                coinbase_output_max_additional_size: 100,
                coinbase_output_max_additional_sigops: 4,
            }),
        ))
        .await?;
    // The current tip: a future template and the SetNewPrevHash activating it, at once.
    let future = client
        .until("a future template", Duration::from_secs(10), |m| match m {
            Tdp::NewTemplate(t) if t.future_template => Some(t.clone()),
            _ => None,
        })
        .await?;
    let prev = client
        .until("SetNewPrevHash", Duration::from_secs(5), |m| match m {
            Tdp::SetNewPrevHash(p) => Some(p.clone()),
            _ => None,
        })
        .await?;
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
