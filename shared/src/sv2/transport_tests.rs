//! Transport tests over real loopback TCP sockets, including interop with SRI's own codec.

use super::keys::AuthorityKeys;
use super::transport::*;
use std::time::Duration;
use stratum_core::binary_sv2::{
    B032Owned, B064KOwned, Seq0255Owned, Str0255Owned, Sv2OptionOwned, U256Owned,
};
use stratum_core::common_messages_sv2::{Protocol, SetupConnectionOwned, SetupConnectionSuccess};
use stratum_core::framing_sv2::framing::MessageFrame;
use stratum_core::framing_sv2::header::Header;
use stratum_core::mining_sv2::{
    NewExtendedMiningJobOwned, OpenExtendedMiningChannelOwned,
    OpenExtendedMiningChannelSuccessOwned,
};
use stratum_core::parsers_sv2::{AnyMessage, CommonMessagesOwned, MiningOwned};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const HANDSHAKE: Duration = Duration::from_secs(10);
const CERT: Duration = Duration::from_secs(3600);

fn setup_connection() -> Message {
    Message::Common(CommonMessagesOwned::SetupConnection(SetupConnectionOwned {
        protocol: Protocol::MiningProtocol,
        min_version: 2,
        max_version: 2,
        flags: 0,
        endpoint_host: Str0255Owned::try_from("127.0.0.1").unwrap(),
        endpoint_port: 34255,
        vendor: Str0255Owned::try_from("jdc-test").unwrap(),
        hardware_version: Str0255Owned::try_from("").unwrap(),
        firmware: Str0255Owned::try_from("0.1.0").unwrap(),
        device_id: Str0255Owned::try_from("").unwrap(),
    }))
}

fn setup_success() -> Message {
    Message::Common(CommonMessagesOwned::SetupConnectionSuccess(
        SetupConnectionSuccess {
            used_version: 2,
            flags: 0,
        },
    ))
}

fn open_extended() -> Message {
    Message::Mining(MiningOwned::OpenExtendedMiningChannel(
        OpenExtendedMiningChannelOwned {
            request_id: 7,
            user_identity: Str0255Owned::try_from("worker.1").unwrap(),
            nominal_hash_rate: 1.0e6,
            max_target: U256Owned::from([0xff; 32]),
            min_extranonce_size: 4,
        },
    ))
}

fn open_extended_success() -> Message {
    Message::Mining(MiningOwned::OpenExtendedMiningChannelSuccess(
        OpenExtendedMiningChannelSuccessOwned {
            request_id: 7,
            channel_id: 3,
            target: U256Owned::from([0x7f; 32]),
            extranonce_size: 8,
            extranonce_prefix: B032Owned::new(vec![1, 2, 3, 4]).unwrap(),
            group_channel_id: 1,
        },
    ))
}

/// A job whose coinbase halves make the payload span several 65 519-byte chunks.
fn big_job(job_id: u32, half: usize) -> Message {
    Message::Mining(MiningOwned::NewExtendedMiningJob(
        NewExtendedMiningJobOwned {
            channel_id: 3,
            job_id,
            min_ntime: Sv2OptionOwned::new(None),
            version: 0x2000_0000,
            version_rolling_allowed: true,
            merkle_path: Seq0255Owned::new(vec![U256Owned::from([9u8; 32]); 12]).unwrap(),
            coinbase_tx_prefix: B064KOwned::new((0..half).map(|i| i as u8).collect()).unwrap(),
            coinbase_tx_suffix: B064KOwned::new(vec![0xab; half]).unwrap(),
        },
    ))
}

/// Encodes any message into plain SV2 bytes, to compare what was sent and what arrived.
fn plain_bytes(msg: Message) -> Vec<u8> {
    use stratum_core::framing_sv2::framing::EncodableFrame;
    let frame = MessageFrame::<Message>::try_from(msg).unwrap();
    let mut out = vec![0u8; frame.encoded_length()];
    frame.encode_into(&mut out).unwrap();
    out
}

fn assert_same(a: &Message, b: Message) {
    assert_eq!(plain_bytes(a.clone()), plain_bytes(b));
}

async fn listener() -> (TcpListener, std::net::SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// A connected (server, client) pair of halves after a successful handshake.
async fn pair() -> ((Sv2Reader, Sv2Writer), (Sv2Reader, Sv2Writer)) {
    let keys = AuthorityKeys::generate();
    let (l, addr) = listener().await;
    let authority = keys.public_key();
    let client = tokio::spawn(async move {
        let s = TcpStream::connect(addr).await.unwrap();
        let mut halves = connect(s, Some(authority), HANDSHAKE).await.unwrap();
        // accept() waits for the client's first frame: say hello.
        halves.1.send(setup_connection()).await.unwrap();
        halves
    });
    let (s, _) = l.accept().await.unwrap();
    let server = accept(s, &keys, CERT, HANDSHAKE).await.unwrap();
    (server, client.await.unwrap())
}

#[tokio::test]
async fn handshake_and_round_trips_both_ways() {
    let ((mut s_rx, mut s_tx), (mut c_rx, mut c_tx)) = pair().await;
    // Device messages fit the default limit; the big jobs need more.
    s_rx.set_max_payload(1 << 20);
    c_rx.set_max_payload(1 << 20);

    assert_same(&setup_connection(), s_rx.recv().await.unwrap());
    s_tx.send(setup_success()).await.unwrap();
    assert_same(&setup_success(), c_rx.recv().await.unwrap());

    c_tx.send(open_extended()).await.unwrap();
    assert_same(&open_extended(), s_rx.recv().await.unwrap());
    s_tx.send(open_extended_success()).await.unwrap();
    assert_same(&open_extended_success(), c_rx.recv().await.unwrap());

    // Server -> client: two jobs in one write, one of them spanning three chunks.
    let batch = vec![big_job(1, 100), big_job(2, 60_000)];
    s_tx.send_all(batch.clone()).await.unwrap();
    for expected in &batch {
        assert_same(expected, c_rx.recv().await.unwrap());
    }
    // Client -> server, same.
    c_tx.send(big_job(3, 65_535)).await.unwrap();
    assert_same(&big_job(3, 65_535), s_rx.recv().await.unwrap());

    // Clean close is reported as Closed on the other side.
    c_tx.shutdown().await.unwrap();
    assert!(matches!(s_rx.recv().await, Err(Sv2Error::Closed)));
}

#[tokio::test]
async fn recv_survives_cancellation_mid_frame() {
    let ((mut s_rx, _s_tx), (_c_rx, mut c_tx)) = pair().await;
    s_rx.set_max_payload(1 << 20);
    assert_same(&setup_connection(), s_rx.recv().await.unwrap());
    // Send a big frame in two parts, cancelling recv() between them.
    let mut sealed = Vec::new();
    let job = big_job(5, 60_000);
    {
        let bytes = plain_bytes(job.clone());
        sealed.extend(c_tx.seal_for_tests(&bytes[..Header::SIZE]).unwrap());
        for chunk in bytes[Header::SIZE..].chunks(65_519) {
            sealed.extend(c_tx.seal_for_tests(chunk).unwrap());
        }
    }
    let (first, second) = sealed.split_at(sealed.len() / 2);
    c_tx.send_raw_for_tests(first).await.unwrap();
    // The first half is fully readable yet the frame is incomplete: recv must be pending.
    let pending = tokio::time::timeout(Duration::from_millis(200), s_rx.recv()).await;
    assert!(pending.is_err(), "recv completed on half a frame");
    c_tx.send_raw_for_tests(second).await.unwrap();
    assert_same(&job, s_rx.recv().await.unwrap());
}

#[tokio::test]
async fn wrong_authority_key_fails_connect_clearly() {
    let server_keys = AuthorityKeys::generate();
    let expected = AuthorityKeys::generate();
    let (l, addr) = listener().await;
    let expected_pk = expected.public_key();
    let client = tokio::spawn(async move {
        let s = TcpStream::connect(addr).await.unwrap();
        connect(s, Some(expected_pk), HANDSHAKE).await
    });
    let (s, _) = l.accept().await.unwrap();
    let server = tokio::spawn(async move { accept(s, &server_keys, CERT, HANDSHAKE).await });
    let err = client.await.unwrap().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Sv2Error::Handshake(_)), "{text}");
    assert!(
        text.contains("not signed by the expected authority key"),
        "{text}"
    );
    assert!(text.contains(&expected.public_key_string()), "{text}");
    // The server sees the client go away without ever sending a frame.
    let server_err = server.await.unwrap().unwrap_err();
    assert!(
        matches!(server_err, Sv2Error::Handshake(_) | Sv2Error::Io(_)),
        "{server_err}"
    );
}

#[tokio::test]
async fn no_authority_connects_to_any_server() {
    let keys = AuthorityKeys::generate();
    let (l, addr) = listener().await;
    let client = tokio::spawn(async move {
        let s = TcpStream::connect(addr).await.unwrap();
        let (mut rx, mut tx) = connect(s, None, HANDSHAKE).await.unwrap();
        tx.send(setup_connection()).await.unwrap();
        rx.recv().await.unwrap()
    });
    let (s, _) = l.accept().await.unwrap();
    let (mut rx, mut tx) = accept(s, &keys, CERT, HANDSHAKE).await.unwrap();
    assert_same(&setup_connection(), rx.recv().await.unwrap());
    tx.send(setup_success()).await.unwrap();
    assert_same(&setup_success(), client.await.unwrap());
}

/// Runs accept() against a raw TCP peer that sends `bytes` and then either closes or stays.
async fn accept_garbage(bytes: Vec<u8>, close: bool, timeout: Duration) -> Sv2Error {
    let keys = AuthorityKeys::generate();
    let (l, addr) = listener().await;
    let peer = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        if close {
            s.shutdown().await.unwrap();
        }
        // Keep the socket open until the server is done with it.
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut sink).await;
    });
    let (s, _) = l.accept().await.unwrap();
    let err = accept(s, &keys, CERT, timeout).await.unwrap_err();
    drop(peer);
    err
}

#[tokio::test]
async fn garbage_after_a_fake_first_act_fails_accept() {
    // 64 bytes pass as an ephemeral key; what follows is not a valid encrypted frame.
    let garbage: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
    let err = accept_garbage(garbage, false, HANDSHAKE).await;
    let text = err.to_string();
    assert!(matches!(err, Sv2Error::Handshake(_)), "{text}");
    assert!(
        text.contains("first frame is not valid SV2 Noise"),
        "{text}"
    );
}

#[tokio::test]
async fn http_request_fails_accept() {
    let garbage = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec();
    let err = accept_garbage(garbage, true, HANDSHAKE).await;
    let text = err.to_string();
    assert!(matches!(err, Sv2Error::Handshake(_)), "{text}");
    assert!(
        text.contains("closed the connection while sending"),
        "{text}"
    );
    assert!(text.contains("of 64 bytes"), "{text}");
}

#[tokio::test]
async fn stalled_peer_times_out() {
    let err = accept_garbage(vec![1, 2, 3], false, Duration::from_millis(300)).await;
    assert!(matches!(err, Sv2Error::Timeout), "{err}");
    assert!(err.to_string().contains("timed out"));
}

#[tokio::test]
async fn stalled_server_times_out_connect() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        // Accept TCP but never answer the handshake.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    });
    let s = TcpStream::connect(addr).await.unwrap();
    let err = connect(s, None, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, Sv2Error::Timeout), "{err}");
    server.abort();
}

#[tokio::test]
async fn oversized_frame_header_is_refused() {
    let ((mut s_rx, _s_tx), (_c_rx, mut c_tx)) = pair().await;
    assert_same(&setup_connection(), s_rx.recv().await.unwrap());
    // A NewExtendedMiningJob header announcing 1 MB; no payload follows.
    let len: u32 = 1_000_000;
    let mut header = [0u8; 6];
    header[2] = 0x1f;
    header[3..6].copy_from_slice(&len.to_le_bytes()[..3]);
    let sealed = c_tx.seal_for_tests(&header).unwrap();
    c_tx.send_raw_for_tests(&sealed).await.unwrap();
    let err = s_rx.recv().await.unwrap_err();
    assert!(
        matches!(err, Sv2Error::PayloadTooLarge { len: 1_000_000, max } if max == DEFAULT_MAX_PAYLOAD),
        "{err}"
    );
    assert!(err.is_fatal());
    assert!(err.to_string().contains("1000000"), "{err}");
}

#[tokio::test]
async fn oversized_first_frame_is_refused_on_first_recv() {
    let keys = AuthorityKeys::generate();
    let (l, addr) = listener().await;
    let authority = keys.public_key();
    let client = tokio::spawn(async move {
        let s = TcpStream::connect(addr).await.unwrap();
        let (_rx, mut tx) = connect(s, Some(authority), HANDSHAKE).await.unwrap();
        let mut header = [0u8; 6];
        header[3..6].copy_from_slice(&[0xff, 0xff, 0xff]);
        let sealed = tx.seal_for_tests(&header).unwrap();
        tx.send_raw_for_tests(&sealed).await.unwrap();
        tx
    });
    let (s, _) = l.accept().await.unwrap();
    let (mut rx, _tx) = accept(s, &keys, CERT, HANDSHAKE).await.unwrap();
    let _keep = client.await.unwrap();
    let err = rx.recv().await.unwrap_err();
    assert!(
        matches!(
            err,
            Sv2Error::PayloadTooLarge {
                len: 16_777_215,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn tampered_frame_fails_to_decrypt() {
    let ((mut s_rx, _s_tx), (_c_rx, mut c_tx)) = pair().await;
    assert_same(&setup_connection(), s_rx.recv().await.unwrap());
    let bytes = plain_bytes(open_extended());
    let mut sealed = c_tx.seal_for_tests(&bytes[..Header::SIZE]).unwrap();
    let mut payload = c_tx.seal_for_tests(&bytes[Header::SIZE..]).unwrap();
    payload[3] ^= 0x01;
    sealed.extend(payload);
    c_tx.send_raw_for_tests(&sealed).await.unwrap();
    let err = s_rx.recv().await.unwrap_err();
    assert!(matches!(err, Sv2Error::Frame(_)), "{err}");
    assert!(err.to_string().contains("does not decrypt"), "{err}");
    assert!(
        err.to_string().contains("OpenExtendedMiningChannel"),
        "{err}"
    );
}

#[tokio::test]
async fn truncated_frame_is_reported() {
    let ((mut s_rx, _s_tx), (_c_rx, mut c_tx)) = pair().await;
    assert_same(&setup_connection(), s_rx.recv().await.unwrap());
    let bytes = plain_bytes(open_extended());
    let mut sealed = c_tx.seal_for_tests(&bytes[..Header::SIZE]).unwrap();
    sealed.extend(c_tx.seal_for_tests(&bytes[Header::SIZE..]).unwrap());
    c_tx.send_raw_for_tests(&sealed[..sealed.len() - 5])
        .await
        .unwrap();
    c_tx.shutdown().await.unwrap();
    let err = s_rx.recv().await.unwrap_err();
    assert!(matches!(err, Sv2Error::Frame(_)), "{err}");
    assert!(err.to_string().contains("middle of a frame"), "{err}");
}

#[tokio::test]
async fn unknown_message_type_is_a_recoverable_parse_error() {
    let ((mut s_rx, _s_tx), (_c_rx, mut c_tx)) = pair().await;
    assert_same(&setup_connection(), s_rx.recv().await.unwrap());
    let payload = [1u8, 2, 3, 4];
    let mut header = [0u8; 6];
    header[2] = 0xee;
    header[3] = payload.len() as u8;
    let mut sealed = c_tx.seal_for_tests(&header).unwrap();
    sealed.extend(c_tx.seal_for_tests(&payload).unwrap());
    c_tx.send_raw_for_tests(&sealed).await.unwrap();
    // A known type with a truncated body.
    let mut header = [0u8; 6];
    header[2] = 0x13; // OpenExtendedMiningChannel
    header[3] = 2;
    let mut sealed = c_tx.seal_for_tests(&header).unwrap();
    sealed.extend(c_tx.seal_for_tests(&[0, 0]).unwrap());
    c_tx.send_raw_for_tests(&sealed).await.unwrap();
    c_tx.send(open_extended()).await.unwrap();

    let err = s_rx.recv().await.unwrap_err();
    assert!(matches!(err, Sv2Error::Parse(_)), "{err}");
    assert!(!err.is_fatal());
    assert!(
        err.to_string().contains("unknown message type 0xee"),
        "{err}"
    );
    let err = s_rx.recv().await.unwrap_err();
    assert!(matches!(err, Sv2Error::Parse(_)), "{err}");
    assert!(
        err.to_string()
            .contains("malformed OpenExtendedMiningChannel"),
        "{err}"
    );
    // The stream is still in sync.
    assert_same(&open_extended(), s_rx.recv().await.unwrap());
}

/// Random payloads for every message type must give a message or an error, never a panic.
#[test]
fn parser_never_panics_on_random_payloads() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for msg_type in 0..=255u8 {
        for ext in [0u16, 0x8000, 0x0001] {
            for _ in 0..40 {
                let len = rng.gen_range(0..200);
                let mut payload: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                let mut h = [0u8; 6];
                h[..2].copy_from_slice(&ext.to_le_bytes());
                h[2] = msg_type;
                h[3] = len as u8;
                let header = Header::from_bytes(&h).unwrap();
                let _ = AnyMessage::try_from((header, &mut payload[..]));
            }
        }
    }
}

// --- interop with SRI's own codec (codec_sv2 7.0.0) ---------------------------------------

mod sri {
    use super::*;
    use std::io::{Read, Write};
    use stratum_core::codec_sv2::{
        Decoded, Decrypted, Handshake, InitiatorSent, NoiseDecoder, NoiseEncoder,
        TransportDecryptState, TransportEncryptState,
    };
    use stratum_core::noise_sv2::{Initiator, Responder};

    fn read_handshake<R: stratum_core::codec_sv2::ExpectsHandshakeMessage>(
        s: &mut std::net::TcpStream,
        dec: &mut NoiseDecoder,
    ) -> Vec<u8> {
        loop {
            s.read_exact(dec.writable()).unwrap();
            if let Decoded::Frame(f) = dec.next_handshake_frame::<R>().unwrap() {
                return f.payload().to_vec();
            }
        }
    }

    fn read_message(
        s: &mut std::net::TcpStream,
        dec: &mut NoiseDecoder,
        mut state: TransportDecryptState,
    ) -> (Message, TransportDecryptState) {
        loop {
            s.read_exact(dec.writable()).unwrap();
            match dec.next_transport_frame(state).unwrap() {
                Decrypted::Frame(mut frame, st) => {
                    let header = frame.header();
                    let msg = AnyMessage::try_from((header, frame.payload()))
                        .unwrap()
                        .into_owned();
                    return (msg, st);
                }
                Decrypted::Incomplete(_, st) => state = st,
            }
        }
    }

    fn write_message(
        s: &mut std::net::TcpStream,
        enc: &mut NoiseEncoder,
        state: &mut TransportEncryptState,
        msg: Message,
    ) {
        let frame = MessageFrame::<Message>::try_from(msg).unwrap();
        let bytes = enc.encode_transport(frame, state).unwrap();
        s.write_all(bytes.as_ref()).unwrap();
    }

    #[tokio::test]
    async fn sri_initiator_talks_to_our_accept() {
        let keys = AuthorityKeys::generate();
        let (l, addr) = listener().await;
        let authority = keys.public_key().serialize();
        let sri_client = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let mut enc = NoiseEncoder::new();
            let mut dec = NoiseDecoder::new();
            let hs = Handshake::initiator(Initiator::from_raw_k(authority).unwrap());
            let (first, hs) = hs.step_0().unwrap();
            s.write_all(enc.encode_handshake(first).as_ref()).unwrap();
            let reply = read_handshake::<InitiatorSent>(&mut s, &mut dec);
            let transport = hs.step_2(reply.try_into().unwrap()).unwrap();
            let (mut tx_state, rx_state) = transport.split();
            write_message(&mut s, &mut enc, &mut tx_state, setup_connection());
            write_message(&mut s, &mut enc, &mut tx_state, big_job(9, 65_000));
            let (reply, rx_state) = read_message(&mut s, &mut dec, rx_state);
            let (job, _) = read_message(&mut s, &mut dec, rx_state);
            (reply, job)
        });
        let (s, _) = l.accept().await.unwrap();
        let (mut rx, mut tx) = accept(s, &keys, CERT, HANDSHAKE).await.unwrap();
        rx.set_max_payload(1 << 20);
        assert_same(&setup_connection(), rx.recv().await.unwrap());
        assert_same(&big_job(9, 65_000), rx.recv().await.unwrap());
        tx.send_all(vec![setup_success(), big_job(10, 64_000)])
            .await
            .unwrap();
        let (reply, job) = tokio::task::spawn_blocking(move || sri_client.join().unwrap())
            .await
            .unwrap();
        assert_same(&setup_success(), reply);
        assert_same(&big_job(10, 64_000), job);
    }

    #[tokio::test]
    async fn our_connect_talks_to_an_sri_responder() {
        let keys = AuthorityKeys::generate();
        let (pk, sk) = (keys.public_key_bytes(), keys.secret_bytes());
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let sri_server = std::thread::spawn(move || {
            let (mut s, _) = std_listener.accept().unwrap();
            let mut enc = NoiseEncoder::new();
            let mut dec = NoiseDecoder::new();
            let hs = Handshake::responder(Responder::from_authority_kp(&pk, &sk, CERT).unwrap());
            let first = read_handshake::<Responder>(&mut s, &mut dec);
            let (reply, transport) = hs.step_1(first.try_into().unwrap()).unwrap();
            s.write_all(enc.encode_handshake(reply).as_ref()).unwrap();
            let (mut tx_state, rx_state) = transport.split();
            let (setup, rx_state) = read_message(&mut s, &mut dec, rx_state);
            let (job, _) = read_message(&mut s, &mut dec, rx_state);
            write_message(&mut s, &mut enc, &mut tx_state, setup_success());
            write_message(&mut s, &mut enc, &mut tx_state, big_job(11, 65_535));
            (setup, job)
        });
        let s = TcpStream::connect(addr).await.unwrap();
        let (mut rx, mut tx) = connect(s, Some(keys.public_key()), HANDSHAKE)
            .await
            .unwrap();
        rx.set_max_payload(1 << 20);
        tx.send(setup_connection()).await.unwrap();
        tx.send(big_job(12, 70)).await.unwrap();
        assert_same(&setup_success(), rx.recv().await.unwrap());
        assert_same(&big_job(11, 65_535), rx.recv().await.unwrap());
        let (setup, job) = tokio::task::spawn_blocking(move || sri_server.join().unwrap())
            .await
            .unwrap();
        assert_same(&setup_connection(), setup);
        assert_same(&big_job(12, 70), job);
    }
}
