//! Property tests of the codec: round trips, stream splitting, mutations, misalignment.

use std::borrow::Cow;

use bytes::BytesMut;
use nnp::wire::fuzzing::same_message;
use nnp::wire::{
    decode_frame, encode_frame, encode_layer_frame, frame_len, split_frame, DisconnectReason,
    ErrorCode, FrameDecoder, Hello, Message, SyncMode, WeightSync, DEFAULT_MAX_PAYLOAD,
};
use proptest::prelude::*;

/// Any f32 bit pattern: NaNs (signalling and quiet, any payload), infinities, subnormals.
fn any_f32() -> impl Strategy<Value = f32> {
    any::<u32>().prop_map(f32::from_bits)
}

fn f32s(max: usize) -> impl Strategy<Value = Cow<'static, [f32]>> {
    prop::collection::vec(any_f32(), 0..max).prop_map(Cow::Owned)
}

/// Any unicode text (any scalar value, so 1- to 4-byte UTF-8).
fn text(max_chars: usize) -> impl Strategy<Value = Cow<'static, str>> {
    prop::collection::vec(any::<char>(), 0..max_chars)
        .prop_map(|chars| Cow::Owned(chars.into_iter().collect()))
}

fn hello() -> impl Strategy<Value = Hello<'static>> {
    (
        any::<u64>(),
        any::<u8>(),
        any::<u8>(),
        any::<u32>(),
        prop::collection::vec(any::<u32>(), 0..64),
        text(100),
    )
        .prop_map(
            |(node_id, min_version, max_version, capabilities, sizes, name)| Hello {
                node_id,
                min_version,
                max_version,
                capabilities,
                layer_sizes: Cow::Owned(sizes),
                name,
            },
        )
}

fn weight_sync() -> impl Strategy<Value = WeightSync<'static>> {
    (
        any::<u16>(),
        any::<bool>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        prop::collection::vec(any_f32(), 0..3000),
    )
        .prop_map(
            |(layer_id, average, rows, cols, offset, sample_count, mut values)| {
                let params = u64::from(rows) * u64::from(cols) + u64::from(rows);
                values.truncate(params.min(values.len() as u64) as usize);
                let offset = (u64::from(offset) % (params - values.len() as u64 + 1)) as u32;
                WeightSync {
                    layer_id,
                    mode: if average {
                        SyncMode::Average
                    } else {
                        SyncMode::Replace
                    },
                    rows,
                    cols,
                    offset,
                    sample_count,
                    values: Cow::Owned(values),
                }
            },
        )
}

fn message() -> impl Strategy<Value = Message<'static>> {
    prop_oneof![
        hello().prop_map(Message::Handshake),
        hello().prop_map(Message::HandshakeAck),
        (any::<u16>(), f32s(3000))
            .prop_map(|(layer_id, data)| Message::ForwardData { layer_id, data }),
        (any::<u16>(), f32s(3000))
            .prop_map(|(layer_id, data)| Message::BackwardData { layer_id, data }),
        (any::<u16>(), any_f32(), 0u32..64, 0u32..64).prop_flat_map(
            |(layer_id, learning_rate, rows, cols)| {
                prop::collection::vec(any_f32(), (rows * cols) as usize).prop_map(move |c| {
                    Message::HebbianData {
                        layer_id,
                        learning_rate,
                        rows,
                        cols,
                        correlations: Cow::Owned(c),
                    }
                })
            }
        ),
        weight_sync().prop_map(Message::WeightSync),
        (any::<u64>(), any::<bool>()).prop_map(|(timestamp_ns, reply)| Message::Heartbeat {
            timestamp_ns,
            reply
        }),
        (any::<u16>(), text(300)).prop_map(|(r, message)| Message::Disconnect {
            reason: DisconnectReason(r),
            message
        }),
        (any::<u16>(), text(300)).prop_map(|(c, message)| Message::Error {
            code: ErrorCode(c),
            message
        }),
    ]
}

fn encode(message: &Message<'_>, sequence: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let n = encode_frame(message, sequence, &mut out).expect("valid message");
    assert_eq!(n, out.len());
    out
}

/// Feeds `stream` to a FrameDecoder in chunks of the given sizes (cycled) and returns the
/// frames' bytes.
fn decode_in_chunks(stream: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut decoder = FrameDecoder::default();
    let mut src = BytesMut::new();
    let mut frames = Vec::new();
    let mut pos = 0;
    let mut sizes = sizes.iter().copied().cycle();
    while pos < stream.len() {
        let end = (pos + sizes.next().unwrap_or(stream.len())).min(stream.len());
        src.extend_from_slice(&stream[pos..end]);
        pos = end;
        while let Some(frame) = decoder.decode(&mut src).expect("valid stream") {
            frame.message().expect("valid payload");
            frames.push(frame.as_bytes().to_vec());
        }
    }
    assert!(src.is_empty());
    frames
}

proptest! {
    #[test]
    fn any_message_round_trips(message in message(), sequence in any::<u64>()) {
        let bytes = encode(&message, sequence);
        prop_assert_eq!(bytes.len() % 4, 0);
        prop_assert_eq!(bytes.len(), frame_len(&message).unwrap());
        let (frame, used) = decode_frame(&bytes, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(frame.sequence, sequence);
        prop_assert!(same_message(&frame.message, &message), "{:?}", frame.message);
    }

    #[test]
    fn any_split_of_a_stream_gives_the_same_frames(
        messages in prop::collection::vec(message(), 1..6),
        sizes in prop::collection::vec(1usize..200, 1..8),
    ) {
        let frames: Vec<Vec<u8>> =
            messages.iter().enumerate().map(|(i, m)| encode(m, i as u64)).collect();
        let stream = frames.concat();
        prop_assert_eq!(&decode_in_chunks(&stream, &sizes), &frames);
        prop_assert_eq!(&decode_in_chunks(&stream, &[stream.len()]), &frames);
    }

    #[test]
    fn any_mutation_is_an_error_or_a_valid_frame(
        message in message(),
        index in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = encode(&message, 3);
        let i = index.index(bytes.len());
        bytes[i] = byte;
        // Panics if decoding panics, or if a frame that decodes does not re-encode to the
        // same bytes; streaming and one-shot decoding must agree too.
        nnp::wire::fuzzing::decode_frame(&bytes);
        nnp::wire::fuzzing::stream_decoder(&[&[0u8][..], &bytes].concat());
    }

    #[test]
    fn checking_a_payload_in_place_judges_it_as_parsing_does(
        message in message(),
        index in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        noise in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        // A valid payload, the same with one byte changed, and bytes at random: each judged as
        // every message type.
        let mut payload = encode(&message, 0).split_off(nnp::wire::HEADER_LEN);
        nnp::wire::fuzzing::payload_checks_agree(&payload);
        if !payload.is_empty() {
            let i = index.index(payload.len());
            payload[i] = byte;
            nnp::wire::fuzzing::payload_checks_agree(&payload);
        }
        nnp::wire::fuzzing::payload_checks_agree(&noise);
    }

    #[test]
    fn a_split_frame_is_the_encoded_frame_in_pieces(
        message in message(),
        sequence in any::<u64>(),
        offset in any::<prop::sample::Index>(),
    ) {
        let bytes = encode(&message, sequence);
        let has_values = matches!(
            message,
            Message::ForwardData { .. }
                | Message::BackwardData { .. }
                | Message::HebbianData { .. }
                | Message::WeightSync(_)
        );
        match split_frame(&message, sequence).unwrap() {
            Some(parts) => {
                prop_assert!(has_values);
                prop_assert_eq!(parts.len(), bytes.len());
                prop_assert_eq!(&parts.pieces().concat(), &bytes);
                // Any tail of it, as a partial write leaves it.
                let offset = offset.index(bytes.len() + 1);
                let mut tail = vec![0u8; bytes.len() - offset];
                parts.copy_into(offset, &mut tail);
                prop_assert_eq!(&tail[..], &bytes[offset..]);
            }
            None => prop_assert!(!has_values || cfg!(target_endian = "big")),
        }
    }

    #[test]
    fn the_layer_frame_encoder_writes_what_encode_frame_writes(
        message in message(),
        sequence in any::<u64>(),
        short_by in 1usize..64,
    ) {
        let bytes = encode(&message, sequence);
        let is_layer = matches!(
            message,
            Message::ForwardData { .. } | Message::BackwardData { .. }
        );
        // Room to spare: the frame goes at the front and nothing after it is touched.
        let mut room = vec![0xA5u8; bytes.len() + 7];
        match encode_layer_frame(&message, sequence, &mut room) {
            Some(n) => {
                prop_assert!(is_layer);
                prop_assert_eq!(n, bytes.len());
                prop_assert_eq!(&room[..n], &bytes[..]);
                prop_assert!(room[n..].iter().all(|&b| b == 0xA5));
            }
            None => {
                prop_assert!(!is_layer || cfg!(target_endian = "big"));
                prop_assert!(room.iter().all(|&b| b == 0xA5));
            }
        }
        // Exactly the room it needs.
        let mut exact = vec![0xA5u8; bytes.len()];
        prop_assert_eq!(
            encode_layer_frame(&message, sequence, &mut exact),
            is_layer.then_some(bytes.len()).filter(|_| cfg!(target_endian = "little"))
        );
        if is_layer && cfg!(target_endian = "little") {
            prop_assert_eq!(&exact, &bytes);
        }
        // Too little room: refused, nothing written.
        let mut short = vec![0xA5u8; bytes.len().saturating_sub(short_by)];
        prop_assert_eq!(encode_layer_frame(&message, sequence, &mut short), None);
        prop_assert!(short.iter().all(|&b| b == 0xA5));
    }

    #[test]
    fn a_stream_read_in_pieces_is_judged_as_in_one_piece_even_when_corrupt(
        messages in prop::collection::vec(message(), 1..4),
        sizes in prop::collection::vec(any::<u8>(), 1..8),
        index in any::<prop::sample::Index>(),
        flip in any::<u8>(),
    ) {
        // Both streaming checks (FrameDecoder and check_frame_resumed, which checksum each
        // piece as it comes) must find the frames and the error one-shot decoding finds.
        let mut stream: Vec<u8> = messages
            .iter()
            .enumerate()
            .flat_map(|(i, m)| encode(m, i as u64))
            .collect();
        let i = index.index(stream.len());
        stream[i] ^= flip;
        let input = [&[sizes.len() as u8][..], &sizes, &stream].concat();
        nnp::wire::fuzzing::stream_decoder(&input);
    }

    #[test]
    fn misaligned_frames_decode_to_the_same_values(message in message()) {
        let bytes = encode(&message, 9);
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(&bytes);
        let (aligned, _) = decode_frame(&bytes, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
        let (frame, used) = decode_frame(&shifted[1..], DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert!(same_message(&frame.message, &message));
        prop_assert!(same_message(&frame.message, &aligned.message));
        // A non-empty array one byte off cannot be borrowed: it took the copying path.
        if let Message::ForwardData { data, .. } = &frame.message {
            prop_assert!(data.is_empty() || matches!(data, Cow::Owned(_)));
        }
        if let Message::WeightSync(w) = &frame.message {
            prop_assert!(w.values.is_empty() || matches!(w.values, Cow::Owned(_)));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn a_stream_fed_one_byte_at_a_time_gives_the_same_frames(
        messages in prop::collection::vec(message(), 1..4),
    ) {
        let frames: Vec<Vec<u8>> =
            messages.iter().enumerate().map(|(i, m)| encode(m, i as u64)).collect();
        prop_assert_eq!(&decode_in_chunks(&frames.concat(), &[1]), &frames);
    }
}
