//! Noise-encrypted SV2 connections over a tokio `TcpStream`.
//!
//! [`accept`] (Noise NX responder, for servers) and [`connect`] (initiator, for clients) run the
//! handshake and hand back the two halves of the connection: an [`Sv2Reader`] that yields
//! parsed, owned [`Message`]s and an [`Sv2Writer`] that encrypts and sends them. The halves are
//! independent, so one task can read while another writes.
//!
//! Wire format (spec chapter 4, identical to SRI's `codec_sv2`): the handshake acts are raw
//! bytes (64 bytes initiator -> responder, 234 bytes back); afterwards each frame is the 6-byte
//! header sealed on its own (22 bytes), then the payload sealed in chunks of at most 65 519
//! plaintext bytes (each chunk + 16-byte MAC). The ciphers, headers and message parsers are the
//! SRI crates', so both sides interoperate with SRI peers.
//!
//! Hostile input is rejected with an [`Sv2Error`] naming the problem, never a panic: a frame
//! whose header announces more than [`Sv2Reader::set_max_payload`] bytes is refused before
//! anything of it is buffered, a frame that fails to decrypt ends the connection, and an unknown
//! or malformed message is reported with its type.
//!
//! A responder cannot tell a well-formed first handshake act from 64 random bytes (every 64-byte
//! string is a valid ElligatorSwift key), so [`accept`] also waits, within the same deadline,
//! for the peer's first encrypted frame header and checks that it decrypts: garbage on the port
//! makes [`accept`] fail rather than the first [`Sv2Reader::recv`]. SV2 clients always speak
//! first (`SetupConnection`), so this costs a legitimate peer nothing.

use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use std::time::Duration;
use stratum_core::bitcoin::secp256k1::XOnlyPublicKey;
use stratum_core::framing_sv2::framing::{EncodableFrame, MessageFrame};
use stratum_core::framing_sv2::header::Header;
use stratum_core::noise_sv2::{
    self, Initiator, NoiseDecryptor, NoiseEncryptor, Responder, AEAD_MAC_LEN,
    ELLSWIFT_ENCODING_SIZE, INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE,
};
use stratum_core::parsers_sv2::{self, AnyMessage, AnyMessageOwned, IsSv2Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::keys::AuthorityKeys;

/// What crosses an SV2 connection, parsed and owned (SRI's `parsers_sv2::AnyMessageOwned`).
pub type Message = AnyMessageOwned;

/// Default largest accepted payload: 64 KiB, plenty for every message a mining device sends.
/// Raise it with [`Sv2Reader::set_max_payload`] for peers that send big messages.
pub const DEFAULT_MAX_PAYLOAD: usize = 64 * 1024;

/// Largest payload the frame format can carry (24-bit length).
pub const MAX_FRAME_PAYLOAD: usize = (1 << 24) - 1;

/// Size of a sealed frame header (6-byte header + MAC).
const ENCRYPTED_HEADER_SIZE: usize = Header::SIZE + AEAD_MAC_LEN;
/// Largest sealed chunk (spec: 65 535 bytes including its MAC).
const MAX_CHUNK: usize = 65_535;
/// Plaintext carried by a full chunk.
const CHUNK_PLAINTEXT: usize = MAX_CHUNK - AEAD_MAC_LEN;

/// Everything that can go wrong on an SV2 connection. Every message says what was wrong.
///
/// After [`Sv2Error::Parse`] the connection is still in sync (the frame was read whole) and the
/// caller may carry on (see [`Sv2Error::is_fatal`]); after any other error drop the connection.
#[derive(Debug, thiserror::Error)]
pub enum Sv2Error {
    /// Socket error.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The Noise handshake failed (wrong authority key, not an SV2 peer, ...).
    #[error("Noise handshake failed: {0}")]
    Handshake(String),
    /// The handshake did not complete within the handshake timeout.
    #[error("Noise handshake timed out: the peer did not complete it in time (not an SV2 Noise peer, or stalled)")]
    Timeout,
    /// The peer closed the connection cleanly between frames.
    #[error("connection closed by the peer")]
    Closed,
    /// A frame could not be read: truncated, bad header, or decryption failure.
    #[error("bad frame: {0}")]
    Frame(String),
    /// A frame decrypted fine but does not hold a known, well-formed message.
    #[error("bad message: {0}")]
    Parse(String),
    /// A frame header announces a payload larger than this reader accepts.
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Announced payload length.
        len: usize,
        /// The reader's limit.
        max: usize,
    },
    /// A message could not be encoded or encrypted for sending.
    #[error("cannot send message: {0}")]
    Encode(String),
}

impl Sv2Error {
    /// Whether the connection is unusable after this error (everything but [`Sv2Error::Parse`]).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Sv2Error::Parse(_))
    }
}

/// Receiving half of an SV2 connection.
pub struct Sv2Reader {
    stream: OwnedReadHalf,
    rx: BytesMut,
    decryptor: NoiseDecryptor,
    max_payload: usize,
    /// Header of the frame being read (decrypted, payload not yet complete).
    pending: Option<Header>,
    peer: Option<SocketAddr>,
}

/// Sending half of an SV2 connection.
pub struct Sv2Writer {
    stream: OwnedWriteHalf,
    encryptor: NoiseEncryptor,
    tx: Vec<u8>,
    peer: Option<SocketAddr>,
}

impl std::fmt::Debug for Sv2Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sv2Reader")
            .field("peer", &self.peer)
            .field("max_payload", &self.max_payload)
            .finish()
    }
}

impl std::fmt::Debug for Sv2Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sv2Writer")
            .field("peer", &self.peer)
            .finish()
    }
}

/// Noise NX responder side: runs the handshake on `stream`, presenting a certificate signed by
/// `keys` and valid for `cert_validity`, and waits for the peer's first frame header to decrypt
/// (see the module docs). All of it must finish within `handshake_timeout`.
pub async fn accept(
    stream: TcpStream,
    keys: &AuthorityKeys,
    cert_validity: Duration,
    handshake_timeout: Duration,
) -> Result<(Sv2Reader, Sv2Writer), Sv2Error> {
    accept_at(stream, keys, cert_validity, handshake_timeout, None).await
}

/// [`accept`], presenting a certificate issued at `issued_at_unix_secs` (seconds since the Unix
/// epoch) instead of now: valid from then for `cert_validity`. `None` is now, as [`accept`].
/// For tests that play a server whose certificate is expired or not yet valid; a client
/// refuses such a certificate, so the handshake then fails on this side too.
pub async fn accept_at(
    mut stream: TcpStream,
    keys: &AuthorityKeys,
    cert_validity: Duration,
    handshake_timeout: Duration,
    issued_at_unix_secs: Option<u32>,
) -> Result<(Sv2Reader, Sv2Writer), Sv2Error> {
    let mut responder = Responder::from_authority_kp(
        &keys.public_key_bytes(),
        &keys.secret_bytes(),
        cert_validity,
    )
    .map_err(|e| Sv2Error::Handshake(format!("authority key pair rejected: {e:?}")))?;
    let handshake = async {
        let mut rx = BytesMut::with_capacity(4096);
        fill_handshake(
            &mut stream,
            &mut rx,
            ELLSWIFT_ENCODING_SIZE,
            "the initiator's ephemeral key",
        )
        .await?;
        let mut act1 = [0u8; ELLSWIFT_ENCODING_SIZE];
        act1.copy_from_slice(&rx[..ELLSWIFT_ENCODING_SIZE]);
        rx.advance(ELLSWIFT_ENCODING_SIZE);
        let reply = match issued_at_unix_secs {
            Some(now) => responder.step_1_with_now_rng(act1, now, &mut rand::thread_rng()),
            None => responder.step_1(act1),
        };
        let (act2, engine) =
            reply.map_err(|e| Sv2Error::Handshake(format!("cannot build handshake reply: {e}")))?;
        stream.write_all(&act2).await?;
        let (mut reader, writer) = split(stream, rx, engine.into_split())?;
        // Prove the peer holds the session keys: its first frame header must decrypt.
        match reader.read_header().await {
            Ok(()) => Ok((reader, writer)),
            Err(Sv2Error::Closed) => Err(Sv2Error::Handshake(
                "the peer closed the connection right after the handshake".into(),
            )),
            Err(Sv2Error::Frame(why)) => Err(Sv2Error::Handshake(format!(
                "the peer's first frame is not valid SV2 Noise (garbage or wrong protocol?): {why}"
            ))),
            Err(e) => Err(e),
        }
    };
    tokio::time::timeout(handshake_timeout, handshake)
        .await
        .map_err(|_| Sv2Error::Timeout)?
}

/// Noise NX initiator side: runs the handshake on `stream` and verifies the server's certificate
/// against `authority` (`None` = no verification: encrypted but unauthenticated, use only for
/// trusted local peers). Must finish within `handshake_timeout`.
pub async fn connect(
    mut stream: TcpStream,
    authority: Option<XOnlyPublicKey>,
    handshake_timeout: Duration,
) -> Result<(Sv2Reader, Sv2Writer), Sv2Error> {
    let mut initiator = match authority {
        Some(key) => Initiator::from_raw_k(key.serialize())
            .map_err(|e| Sv2Error::Handshake(format!("authority key rejected: {e:?}")))?,
        None => Initiator::without_pk()
            .map_err(|e| Sv2Error::Handshake(format!("cannot create initiator: {e:?}")))?,
    };
    let handshake = async {
        let act1 = initiator
            .step_0()
            .map_err(|e| Sv2Error::Handshake(format!("cannot build the first act: {e}")))?;
        stream.write_all(&act1).await?;
        let mut rx = BytesMut::with_capacity(4096);
        fill_handshake(
            &mut stream,
            &mut rx,
            INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE,
            "the responder's handshake reply",
        )
        .await?;
        let mut act2 = [0u8; INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE];
        act2.copy_from_slice(&rx[..INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE]);
        rx.advance(INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE);
        let engine = initiator.step_2(act2).map_err(|e| match e {
            noise_sv2::Error::InvalidCertificate(_) => Sv2Error::Handshake(match authority {
                Some(key) => format!(
                    "the server's certificate is not signed by the expected authority key {} or is outside its validity window (wrong authority public key, or clocks out of sync)",
                    super::keys::encode_authority_public_key(&key)
                ),
                None => "the server's certificate is invalid".into(),
            }),
            noise_sv2::Error::Aead(_) => Sv2Error::Handshake(
                "the server's handshake reply does not decrypt (not an SV2 Noise responder?)"
                    .into(),
            ),
            other => Sv2Error::Handshake(format!("{other:?}")),
        })?;
        split(stream, rx, engine.into_split())
    };
    tokio::time::timeout(handshake_timeout, handshake)
        .await
        .map_err(|_| Sv2Error::Timeout)?
}

/// Splits the stream into the two halves, keeping bytes already buffered in `rx`.
fn split(
    stream: TcpStream,
    rx: BytesMut,
    (encryptor, decryptor): (NoiseEncryptor, NoiseDecryptor),
) -> Result<(Sv2Reader, Sv2Writer), Sv2Error> {
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr().ok();
    let (read, write) = stream.into_split();
    Ok((
        Sv2Reader {
            stream: read,
            rx,
            decryptor,
            max_payload: DEFAULT_MAX_PAYLOAD,
            pending: None,
            peer,
        },
        Sv2Writer {
            stream: write,
            encryptor,
            tx: Vec::with_capacity(4096),
            peer,
        },
    ))
}

/// Reads until `rx` holds at least `n` bytes; `Ok(false)` on EOF first. Cancel-safe:
/// `read_buf` either appends what it read or reads nothing.
async fn read_at_least<R: AsyncRead + Unpin>(
    stream: &mut R,
    rx: &mut BytesMut,
    n: usize,
) -> Result<bool, std::io::Error> {
    while rx.len() < n {
        // Reserve only what is needed (plus slack for small frames); announced lengths beyond
        // the payload limit were refused before getting here.
        rx.reserve((n - rx.len()).max(4096));
        if stream.read_buf(rx).await? == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// [`read_at_least`] for a handshake act, with an error that says which act was cut short.
async fn fill_handshake(
    stream: &mut TcpStream,
    rx: &mut BytesMut,
    n: usize,
    what: &str,
) -> Result<(), Sv2Error> {
    if read_at_least(stream, rx, n).await? {
        Ok(())
    } else {
        Err(Sv2Error::Handshake(format!(
            "the peer closed the connection while sending {what} ({} of {n} bytes received)",
            rx.len()
        )))
    }
}

impl Sv2Reader {
    /// Receives the next message. `Err(Sv2Error::Closed)` on a clean EOF between frames.
    ///
    /// Cancel-safe: if the future is dropped (e.g. in `tokio::select!`), no bytes are lost and
    /// the next call resumes the same frame.
    pub async fn recv(&mut self) -> Result<Message, Sv2Error> {
        if self.pending.is_none() {
            self.read_header().await?;
        }
        let Some(header) = self.pending else {
            return Err(Sv2Error::Frame(
                "internal: no header after reading one".into(),
            ));
        };
        let len = header.payload_length();
        if len > self.max_payload {
            return Err(Sv2Error::PayloadTooLarge {
                len,
                max: self.max_payload,
            });
        }
        let encrypted_len = encrypted_payload_len(len);
        self.fill(encrypted_len).await?;
        // From here on everything is synchronous: the frame is consumed whole or not at all.
        self.pending = None;
        let encrypted = self.rx.split_to(encrypted_len);
        let mut payload = Vec::with_capacity(len);
        let mut chunk = Vec::with_capacity(encrypted_len.min(MAX_CHUNK));
        for sealed in encrypted.chunks(MAX_CHUNK) {
            chunk.clear();
            chunk.extend_from_slice(sealed);
            self.decryptor.decrypt(&mut chunk).map_err(|_| {
                Sv2Error::Frame(format!(
                    "payload of a {} frame does not decrypt (corrupted or forged)",
                    describe(&header)
                ))
            })?;
            payload.extend_from_slice(&chunk);
        }
        parse(header, &mut payload)
    }

    /// Sets the largest payload this reader accepts (default [`DEFAULT_MAX_PAYLOAD`]); larger
    /// frames fail with [`Sv2Error::PayloadTooLarge`] before any of their payload is buffered.
    pub fn set_max_payload(&mut self, n: usize) {
        self.max_payload = n.min(MAX_FRAME_PAYLOAD);
    }

    /// The current payload limit.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The peer's address, if the socket still knew it at connect time.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Reads and decrypts the next frame header into `self.pending`.
    async fn read_header(&mut self) -> Result<(), Sv2Error> {
        self.fill(ENCRYPTED_HEADER_SIZE).await?;
        let mut sealed = self.rx.split_to(ENCRYPTED_HEADER_SIZE).to_vec();
        self.decryptor.decrypt(&mut sealed).map_err(|_| {
            Sv2Error::Frame(
                "frame header does not decrypt (corrupted, forged or not SV2 Noise)".into(),
            )
        })?;
        let header = Header::from_bytes(&sealed)
            .map_err(|e| Sv2Error::Frame(format!("bad frame header: {e}")))?;
        self.pending = Some(header);
        Ok(())
    }

    /// Ensures `n` bytes are buffered; EOF is [`Sv2Error::Closed`] between frames and a
    /// [`Sv2Error::Frame`] inside one. Cancel-safe.
    async fn fill(&mut self, n: usize) -> Result<(), Sv2Error> {
        if read_at_least(&mut self.stream, &mut self.rx, n).await? {
            return Ok(());
        }
        Err(if self.rx.is_empty() && self.pending.is_none() {
            Sv2Error::Closed
        } else {
            Sv2Error::Frame(format!(
                "connection closed in the middle of a frame ({} of {} bytes received)",
                self.rx.len(),
                n
            ))
        })
    }
}

impl Sv2Writer {
    /// Encrypts and sends one message.
    ///
    /// Not cancel-safe: dropping the future mid-write leaves the connection unusable.
    pub async fn send(&mut self, msg: Message) -> Result<(), Sv2Error> {
        self.tx.clear();
        encode(&mut self.encryptor, msg, &mut self.tx)?;
        self.stream.write_all(&self.tx).await?;
        Ok(())
    }

    /// Encrypts several messages and sends them with a single write (e.g. a new job and the
    /// `SetNewPrevHash` that activates it).
    pub async fn send_all(&mut self, msgs: Vec<Message>) -> Result<(), Sv2Error> {
        self.tx.clear();
        for msg in msgs {
            encode(&mut self.encryptor, msg, &mut self.tx)?;
        }
        if !self.tx.is_empty() {
            self.stream.write_all(&self.tx).await?;
        }
        Ok(())
    }

    /// Closes the sending direction (TCP FIN); the peer's reader sees [`Sv2Error::Closed`].
    pub async fn shutdown(&mut self) -> Result<(), Sv2Error> {
        self.stream.shutdown().await?;
        Ok(())
    }

    /// The peer's address, if the socket still knew it at connect time.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Sends raw bytes as they are, bypassing framing and encryption. Only for tests that need
    /// to play a misbehaving peer.
    #[doc(hidden)]
    pub async fn send_raw_for_tests(&mut self, bytes: &[u8]) -> Result<(), Sv2Error> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Seals `plaintext` as one chunk with the session key. Only for tests that need to forge
    /// frames (e.g. a header announcing an oversized payload).
    #[doc(hidden)]
    pub fn seal_for_tests(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, Sv2Error> {
        let mut buf = plaintext.to_vec();
        self.encryptor
            .encrypt(&mut buf)
            .map_err(|_| Sv2Error::Encode("encryption failed".into()))?;
        Ok(buf)
    }
}

/// Ciphertext length of a payload of `len` plaintext bytes: one MAC per chunk.
fn encrypted_payload_len(len: usize) -> usize {
    len + len.div_ceil(CHUNK_PLAINTEXT) * AEAD_MAC_LEN
}

/// Appends the sealed frame of `msg` to `out`.
fn encode(encryptor: &mut NoiseEncryptor, msg: Message, out: &mut Vec<u8>) -> Result<(), Sv2Error> {
    let name = parsers_sv2::message_type_to_name(msg.message_type());
    let frame = MessageFrame::<Message>::try_from(msg)
        .map_err(|e| Sv2Error::Encode(format!("{name}: {e}")))?;
    let mut plain = vec![0u8; frame.encoded_length()];
    frame
        .encode_into(&mut plain)
        .map_err(|e| Sv2Error::Encode(format!("{name}: {e}")))?;
    let seal = |encryptor: &mut NoiseEncryptor, bytes: &[u8], out: &mut Vec<u8>| {
        let mut buf = Vec::with_capacity(bytes.len() + AEAD_MAC_LEN);
        buf.extend_from_slice(bytes);
        encryptor.encrypt(&mut buf).map_err(|_| {
            Sv2Error::Encode(format!("{name}: encryption failed (nonce exhausted?)"))
        })?;
        out.extend_from_slice(&buf);
        Ok::<(), Sv2Error>(())
    };
    let (header, payload) = plain.split_at(Header::SIZE);
    seal(encryptor, header, out)?;
    for chunk in payload.chunks(CHUNK_PLAINTEXT) {
        seal(encryptor, chunk, out)?;
    }
    Ok(())
}

/// Parses a decrypted payload into an owned message.
fn parse(header: Header, payload: &mut [u8]) -> Result<Message, Sv2Error> {
    let len = payload.len();
    match AnyMessage::try_from((header, payload)) {
        Ok(msg) => Ok(msg.into_owned()),
        Err(parsers_sv2::ParserError::UnexpectedMessage(_)) => Err(Sv2Error::Parse(format!(
            "unknown message type 0x{:02x} (extension 0x{:04x}, {len} bytes)",
            header.msg_type(),
            header.ext_type_without_channel_msg()
        ))),
        Err(e) => Err(Sv2Error::Parse(format!(
            "malformed {} ({len} bytes): {e}",
            describe(&header)
        ))),
    }
}

/// "SetupConnection (type 0x00)" style description of a frame.
fn describe(header: &Header) -> String {
    let ext = header.ext_type_without_channel_msg();
    if ext == 0 {
        format!(
            "{} (type 0x{:02x})",
            parsers_sv2::message_type_to_name(header.msg_type()),
            header.msg_type()
        )
    } else {
        format!(
            "extension 0x{ext:04x} message type 0x{:02x}",
            header.msg_type()
        )
    }
}
