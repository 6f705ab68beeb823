use super::*;

const I: Duration = Duration::from_millis(1000);

fn down() -> Probe {
    Probe::Unreachable("refused".into())
}

#[test]
fn each_change_is_reported_once() {
    let mut h = Health::new(I);
    assert_eq!(
        h.observe(&down()),
        Some(Change::NotReachable("refused".into()))
    );
    assert_eq!(h.observe(&down()), None);
    assert_eq!(h.observe(&down()), None);
    assert_eq!(
        h.observe(&Probe::Ibd {
            blocks: 1,
            headers: 9
        }),
        Some(Change::EnteredIbd {
            blocks: 1,
            headers: 9
        })
    );
    assert_eq!(
        h.observe(&Probe::Ibd {
            blocks: 5,
            headers: 9
        }),
        None
    );
    assert_eq!(h.state(), NodeState::InitialBlockDownload);
    assert_eq!(
        h.observe(&Probe::Synced),
        Some(Change::Ready { again: false })
    );
    assert_eq!(h.observe(&Probe::Synced), None);
    assert_eq!(h.state(), NodeState::Ok);
    assert_eq!(h.observe(&down()), Some(Change::Lost("refused".into())));
    assert_eq!(h.observe(&down()), None);
    assert_eq!(
        h.observe(&Probe::Synced),
        Some(Change::Ready { again: true })
    );
}

#[test]
fn first_probe_succeeding_is_ready() {
    let mut h = Health::new(I);
    assert_eq!(h.state(), NodeState::Waiting);
    assert_eq!(
        h.observe(&Probe::Synced),
        Some(Change::Ready { again: false })
    );
}

#[test]
fn backoff_doubles_up_to_the_cap_and_resets() {
    let mut h = Health::new(I);
    assert_eq!(h.next_delay(), I);
    let mut delays = Vec::new();
    for _ in 0..6 {
        h.observe(&down());
        delays.push(h.next_delay().as_millis());
    }
    assert_eq!(delays, vec![1000, 2000, 4000, 5000, 5000, 5000]);
    h.observe(&Probe::Synced);
    assert_eq!(h.next_delay(), I);
    // an interval longer than the cap is kept as is
    let mut slow = Health::new(Duration::from_secs(10));
    slow.observe(&down());
    slow.observe(&down());
    assert_eq!(slow.next_delay(), Duration::from_secs(10));
}

#[test]
fn a_node_on_another_chain_is_refused() {
    let mut info = ChainInfo {
        chain: "main".into(),
        blocks: 10,
        headers: 10,
        bestblockhash: "00".repeat(32),
        initialblockdownload: false,
    };
    match probe_of(&info, Network::Regtest) {
        Probe::Unreachable(why) => assert!(why.contains("`main`"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(probe_of(&info, Network::Bitcoin), Probe::Synced);
    info.chain = "testnet4".into();
    info.initialblockdownload = true;
    assert_eq!(
        probe_of(&info, Network::Testnet4),
        Probe::Ibd {
            blocks: 10,
            headers: 10
        }
    );
    assert_eq!(chain_name(Network::Testnet), "test");
    assert_eq!(chain_name(Network::Signet), "signet");
}

#[test]
fn states_have_heartbeat_names() {
    assert_eq!(NodeState::Waiting.as_str(), "waiting-for-bitcoind");
    assert_eq!(
        NodeState::InitialBlockDownload.as_str(),
        "initial-block-download"
    );
    assert_eq!(NodeState::Ok.as_str(), "ok");
}
