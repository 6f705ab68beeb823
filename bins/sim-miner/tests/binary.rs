//! The `jdc-sim-miner` binary as tests and the demo run it: events on stdout, logs on stderr,
//! exit code 2 on bad options, clean exit on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use jdc_shared::sv2::{self, AuthorityKeys, Message};
use stratum_core::binary_sv2::{B032Owned, U256Owned};
use stratum_core::common_messages_sv2::SetupConnectionSuccess;
use stratum_core::mining_sv2::OpenExtendedMiningChannelSuccessOwned;
use stratum_core::parsers_sv2::{CommonMessagesOwned, MiningOwned};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_jdc-sim-miner");

#[tokio::test]
async fn help_describes_the_options() {
    let out = Command::new(BIN).arg("--help").output().await.unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for option in [
        "--connect",
        "--authority-public-key",
        "--authority-key-file",
        "--channel",
        "--max-shares-per-sec",
        "--events-file",
        "--log-format",
        "--protocol",
        "sv1",
        "--user",
        "--password",
        "--no-version-rolling",
        "mining.authorize",
    ] {
        assert!(help.contains(option), "--help lacks {option}");
    }
}

#[tokio::test]
async fn bad_options_exit_2_naming_the_option() {
    let out = Command::new(BIN)
        .args(["--authority-public-key", "not-a-key"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--authority-public-key"), "{err}");
    assert!(out.stdout.is_empty(), "events printed on a config error");

    let out = Command::new(BIN).arg("--threads=0").output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("--threads"));
}

#[tokio::test]
async fn prints_json_events_on_stdout_and_stops_on_sigterm() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let keys = AuthorityKeys::generate();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let key_file =
            std::env::temp_dir().join(format!("sim-miner-bin-{}.pub", std::process::id()));
        std::fs::write(&key_file, format!("{}\n", keys.public_key_string())).unwrap();
        let mut child = Command::new(BIN)
            .args(["--connect", &addr.to_string(), "--authority-key-file"])
            .arg(&key_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

        let (stream, _) = listener.accept().await.unwrap();
        let (mut rx, mut tx) = sv2::accept(
            stream,
            &keys,
            Duration::from_secs(3600),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert!(matches!(
            rx.recv().await.unwrap(),
            Message::Common(CommonMessagesOwned::SetupConnection(_))
        ));
        tx.send(Message::Common(
            CommonMessagesOwned::SetupConnectionSuccess(SetupConnectionSuccess {
                used_version: 2,
                flags: 0,
            }),
        ))
        .await
        .unwrap();
        let Message::Mining(MiningOwned::OpenExtendedMiningChannel(open)) =
            rx.recv().await.unwrap()
        else {
            panic!("expected OpenExtendedMiningChannel");
        };
        tx.send(Message::Mining(
            MiningOwned::OpenExtendedMiningChannelSuccess(OpenExtendedMiningChannelSuccessOwned {
                request_id: open.request_id,
                channel_id: 2,
                target: U256Owned::from([0xff; 32]),
                extranonce_size: 4,
                extranonce_prefix: B032Owned::new(vec![0xab]).unwrap(),
                group_channel_id: 1,
            }),
        ))
        .await
        .unwrap();

        let mut seen = Vec::new();
        while seen.len() < 2 {
            let line = lines.next_line().await.unwrap().expect("stdout closed");
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line: {line:?}: {e}"));
            seen.push(v);
        }
        assert_eq!(seen[0]["event"], "connected");
        assert_eq!(seen[0]["authenticated"], true);
        assert_eq!(seen[1]["event"], "channel-opened");
        assert_eq!(seen[1]["channel_id"], 2);
        assert_eq!(seen[1]["extranonce_prefix"], "ab");

        let pid = child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = child.wait().await.unwrap();
        assert!(status.success(), "exit status {status:?}");
        std::fs::remove_file(&key_file).unwrap();
    })
    .await
    .expect("scenario stalled");
}
