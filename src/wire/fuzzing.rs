//! The logic of the fuzz targets in `fuzz/`, here so that a stable test (`tests/fuzz_corpus.rs`)
//! replays the same corpus through the same code. Not part of the API.
//!
//! Each function takes arbitrary bytes and panics if, and only if, the codec breaks one of its
//! promises: no panic on any input, decode then encode gives back the same bytes, streaming
//! and one-shot decoding agree, encode then decode gives back the same message.

use std::borrow::Cow;

use bytes::BytesMut;

use super::error::{DisconnectReason, ErrorCode, ProtocolError};
use super::header::{MsgType, DEFAULT_MAX_PAYLOAD, HEADER_LEN};
use super::message::{Auth, AuthScheme, AuthStep, Hello, Message, SyncMode, WeightSync};
use super::{self as wire, FrameCheck, FrameDecoder, PartialChecksum};

/// Decodes one frame from `data`; a frame that decodes must re-encode to the same bytes and
/// decode to the same message from a misaligned copy.
pub fn decode_frame(data: &[u8]) {
    payload_checks_agree(data.get(HEADER_LEN..).unwrap_or_default());
    let result = wire::decode_frame(data, DEFAULT_MAX_PAYLOAD);
    let Ok(Some((frame, used))) = result else {
        return;
    };
    assert!(used >= HEADER_LEN && used % 4 == 0 && used <= data.len());
    let mut out = Vec::new();
    let written = wire::encode_frame(&frame.message, frame.sequence, &mut out)
        .expect("a decoded message must encode");
    assert_eq!(written, used);
    assert_eq!(out, &data[..used], "decode then encode changed the bytes");

    let mut shifted = vec![0u8; used + 1];
    shifted[1..].copy_from_slice(&data[..used]);
    let (again, again_used) = wire::decode_frame(&shifted[1..], DEFAULT_MAX_PAYLOAD)
        .expect("same bytes, different alignment")
        .expect("whole frame");
    assert_eq!(again_used, used);
    assert_eq!(again.sequence, frame.sequence);
    assert!(same_message(&again.message, &frame.message));
}

/// [`wire::check_payload`] must accept `payload` as a message of each type exactly when
/// [`wire::parse_payload`] does, and refuse it with the same error.
pub fn payload_checks_agree(payload: &[u8]) {
    for msg_type in MsgType::ALL {
        assert_eq!(
            wire::check_payload(msg_type, payload),
            wire::parse_payload(msg_type, payload).map(drop),
            "check_payload and parse_payload disagree on a {msg_type:?} payload"
        );
    }
}

/// What a decoder made of a stream: the frames' bytes and the error that stopped it, if any.
type StreamOutcome = (Vec<Vec<u8>>, Option<ProtocolError>);

/// Feeds `data` to a [`FrameDecoder`] in chunks and checks it finds what repeated
/// [`wire::decode_frame`] finds.
///
/// Layout: byte 0 modulo 8 is the number `n` of control bytes that follow; chunk sizes cycle
/// through `control byte + 1` (no control bytes: one chunk); the rest is the stream.
pub fn stream_decoder(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(first % 8).min(rest.len());
    let (control, stream) = rest.split_at(n);

    let reference = decode_all(stream);

    let mut streaming = Streaming {
        decoder: FrameDecoder::default(),
        src: BytesMut::new(),
    };
    assert_eq!(
        split_in_chunks(stream, control, &mut streaming),
        reference,
        "streaming and one-shot decoding differ"
    );
    let mut resumed = Resumed::default();
    assert_eq!(
        split_in_chunks(stream, control, &mut resumed),
        reference,
        "resumed and one-shot checking differ"
    );
}

/// A reader of a stream that is given its bytes piece by piece.
trait Splitter {
    /// Takes the next piece of the stream.
    fn push(&mut self, piece: &[u8]);
    /// The bytes of the next whole, valid frame, `None` if more bytes are needed.
    fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ProtocolError>;
}

/// [`FrameDecoder`] on a `BytesMut`, as a tokio-style reader uses it.
struct Streaming {
    decoder: FrameDecoder,
    src: BytesMut,
}

impl Splitter for Streaming {
    fn push(&mut self, piece: &[u8]) {
        self.src.extend_from_slice(piece);
    }

    fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ProtocolError> {
        let Some(frame) = self.decoder.decode(&mut self.src)? else {
            return Ok(None);
        };
        frame.message()?;
        Ok(Some(frame.as_bytes().to_vec()))
    }
}

/// [`wire::check_frame_resumed`] on a growing buffer, as the engine's connections check
/// frames in place: each frame's checksum resumes where the previous call left it.
#[derive(Default)]
struct Resumed {
    buf: Vec<u8>,
    start: usize,
    checksum: PartialChecksum,
}

impl Splitter for Resumed {
    fn push(&mut self, piece: &[u8]) {
        self.buf.extend_from_slice(piece);
    }

    fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ProtocolError> {
        let unread = &self.buf[self.start..];
        match wire::check_frame_resumed(unread, DEFAULT_MAX_PAYLOAD, &mut self.checksum)? {
            FrameCheck::Complete { len, msg_type } => {
                let frame = &unread[..len];
                wire::parse_payload(msg_type, &frame[HEADER_LEN..])?;
                self.start += len;
                Ok(Some(frame.to_vec()))
            }
            FrameCheck::Incomplete { .. } => {
                assert!(self.checksum.hashed() <= unread.len());
                Ok(None)
            }
        }
    }
}

/// Feeds `stream` to `splitter` in [`chunks`], taking every frame after each piece, until the
/// stream ends or an error stops it.
fn split_in_chunks(stream: &[u8], control: &[u8], splitter: &mut impl Splitter) -> StreamOutcome {
    let mut frames = Vec::new();
    for piece in chunks(stream, control) {
        splitter.push(piece);
        loop {
            match splitter.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// `stream` in consecutive pieces whose sizes cycle through `control byte + 1` (one piece if
/// `control` is empty).
fn chunks<'a>(stream: &'a [u8], control: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut sizes = control.iter().map(|&c| usize::from(c) + 1).cycle();
    let mut rest = stream;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = sizes.next().unwrap_or(rest.len()).min(rest.len());
        let (piece, tail) = rest.split_at(size);
        rest = tail;
        Some(piece)
    })
}

fn decode_all(mut stream: &[u8]) -> StreamOutcome {
    let mut frames = Vec::new();
    loop {
        match wire::decode_frame(stream, DEFAULT_MAX_PAYLOAD) {
            Ok(Some((_, used))) => {
                frames.push(stream[..used].to_vec());
                stream = &stream[used..];
            }
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

/// Builds a message from `data` ([`message_from_bytes`]), encodes it, and checks that both
/// decoders give it back bit for bit, and that its split for a vectored write and the
/// layer-frame encoder's bytes are the same bytes.
pub fn round_trip(data: &[u8]) {
    let message = message_from_bytes(data);
    let sequence = data
        .iter()
        .fold(0u64, |acc, &b| acc.rotate_left(5) ^ u64::from(b));
    let mut out = Vec::new();
    let written = wire::encode_frame(&message, sequence, &mut out).expect("a valid message");
    assert_eq!(written, out.len());
    assert_eq!(written, wire::frame_len(&message).expect("a valid message"));
    let (frame, used) = wire::decode_frame(&out, DEFAULT_MAX_PAYLOAD)
        .expect("an encoded frame decodes")
        .expect("whole frame");
    assert_eq!(used, out.len());
    assert_eq!(frame.sequence, sequence);
    assert!(
        same_message(&frame.message, &message),
        "{:?} != {:?}",
        frame.message,
        message
    );

    let mut src = BytesMut::from(&out[..]);
    let raw = FrameDecoder::default()
        .decode(&mut src)
        .expect("an encoded frame decodes")
        .expect("whole frame");
    assert!(same_message(&raw.message().expect("parses"), &message));

    // The pieces of a vectored write are the same bytes.
    if let Some(parts) = wire::split_frame(&message, sequence).expect("a valid message") {
        assert_eq!(parts.pieces().concat(), out);
    }

    // The batching sender's layer-frame encoder writes the same bytes, or nothing.
    let mut room = vec![0u8; out.len()];
    match wire::encode_layer_frame(&message, sequence, &mut room) {
        Some(n) => assert_eq!(&room[..n], &out[..]),
        None => assert!(
            !matches!(
                message,
                Message::ForwardData { .. } | Message::BackwardData { .. }
            ) || cfg!(target_endian = "big")
        ),
    }
}

/// Whether two messages are equal, f32 values compared bit for bit (so NaN equals itself).
pub fn same_message(a: &Message<'_>, b: &Message<'_>) -> bool {
    fn bits(x: &[f32], y: &[f32]) -> bool {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
    }
    match (a, b) {
        (
            Message::ForwardData {
                layer_id: l,
                data: d,
            },
            Message::ForwardData {
                layer_id: m,
                data: e,
            },
        )
        | (
            Message::BackwardData {
                layer_id: l,
                data: d,
            },
            Message::BackwardData {
                layer_id: m,
                data: e,
            },
        ) => l == m && bits(d, e),
        (
            Message::HebbianData {
                layer_id,
                learning_rate,
                rows,
                cols,
                correlations,
            },
            Message::HebbianData {
                layer_id: l2,
                learning_rate: r2,
                rows: rows2,
                cols: cols2,
                correlations: c2,
            },
        ) => {
            layer_id == l2
                && learning_rate.to_bits() == r2.to_bits()
                && rows == rows2
                && cols == cols2
                && bits(correlations, c2)
        }
        (Message::WeightSync(w), Message::WeightSync(v)) => {
            w.layer_id == v.layer_id
                && w.mode == v.mode
                && w.rows == v.rows
                && w.cols == v.cols
                && w.offset == v.offset
                && w.sample_count == v.sample_count
                && bits(&w.values, &v.values)
        }
        // No f32 anywhere else: plain equality.
        _ => a == b,
    }
}

/// Reads fixed-size values from the front of a byte slice, zeros once it runs out.
struct ByteReader<'a>(&'a [u8]);

impl ByteReader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn f32(&mut self) -> f32 {
        f32::from_bits(self.u32())
    }
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
    /// Up to `n` bytes as text (invalid UTF-8 replaced, so any unicode can come out).
    fn text(&mut self, n: usize) -> String {
        let n = n.min(self.0.len());
        let (text, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8_lossy(text).into_owned()
    }
}

/// A valid message of any type, built from arbitrary bytes (missing bytes read as zero).
pub fn message_from_bytes(data: &[u8]) -> Message<'static> {
    let mut r = ByteReader(data);
    match r.u8() % 10 {
        tag @ (0 | 1) => {
            let hello = Hello {
                node_id: r.u64(),
                min_version: r.u8(),
                max_version: r.u8(),
                capabilities: r.u32(),
                layer_sizes: {
                    let n = usize::from(r.u8() % 16);
                    Cow::Owned((0..n).map(|_| r.u32()).collect())
                },
                name: {
                    let n = usize::from(r.u8());
                    Cow::Owned(r.text(n))
                },
            };
            if tag == 0 {
                Message::Handshake(hello)
            } else {
                Message::HandshakeAck(hello)
            }
        }
        tag @ (2 | 3) => {
            let layer_id = r.u16();
            let n = usize::from(r.u16() % 2048);
            let data = Cow::Owned(r.f32s(n));
            if tag == 2 {
                Message::ForwardData { layer_id, data }
            } else {
                Message::BackwardData { layer_id, data }
            }
        }
        4 => {
            let layer_id = r.u16();
            let learning_rate = r.f32();
            let rows = u32::from(r.u8() % 32);
            let cols = u32::from(r.u8() % 32);
            Message::HebbianData {
                layer_id,
                learning_rate,
                rows,
                cols,
                correlations: Cow::Owned(r.f32s((rows * cols) as usize)),
            }
        }
        5 => {
            let layer_id = r.u16();
            let mode = if r.u8() % 2 == 0 {
                SyncMode::Replace
            } else {
                SyncMode::Average
            };
            let (rows, cols) = (r.u32(), r.u32());
            let params = u64::from(rows) * u64::from(cols) + u64::from(rows);
            let n = u64::from(r.u16() % 2048).min(params);
            // Keeps offset + n within the layer; never larger than the u32 it came from.
            let offset = (u64::from(r.u32()) % (params - n + 1)) as u32;
            let sample_count = r.u32();
            Message::WeightSync(WeightSync {
                layer_id,
                mode,
                rows,
                cols,
                offset,
                sample_count,
                values: Cow::Owned(r.f32s(n as usize)),
            })
        }
        6 => Message::Heartbeat {
            timestamp_ns: r.u64(),
            reply: r.u8() % 2 == 1,
        },
        9 => {
            let step =
                [AuthStep::Challenge, AuthStep::Response, AuthStep::Proof][usize::from(r.u8() % 3)];
            let scheme = if r.u8() % 2 == 0 {
                AuthScheme::Ed25519
            } else {
                AuthScheme::PreSharedKey
            };
            let mut bytes = [0u8; 128];
            bytes.iter_mut().for_each(|b| *b = r.u8());
            let mut auth = Auth {
                step,
                scheme,
                key: [0; 32],
                nonce: [0; 32],
                proof: [0; 64],
            };
            auth.key.copy_from_slice(&bytes[..32]);
            auth.nonce.copy_from_slice(&bytes[32..64]);
            auth.proof.copy_from_slice(&bytes[64..]);
            Message::Auth(Box::new(auth))
        }
        tag => {
            let code = r.u16();
            let n = usize::from(r.u16() % 1024);
            let message = Cow::Owned(r.text(n));
            if tag == 7 {
                Message::Disconnect {
                    reason: DisconnectReason(code),
                    message,
                }
            } else {
                Message::Error {
                    code: ErrorCode(code),
                    message,
                }
            }
        }
    }
}
