//! Data messages from payloads that have already been checked.
//!
//! The session checks every data frame's payload in place as it arrives
//! ([`super::check_payload`]: the rules of [`super::parse_payload`], without building the
//! message), and a frame that fails never reaches the application. [`data_message`] then
//! builds the [`Message`] of such a payload without checking it again: it reads the fixed
//! fields through the payload layouts (`layout.rs`) and casts the values, borrowed in place
//! when they are 4-byte aligned on a little-endian host, copied otherwise, as `parse_payload`
//! does. A frame is so checked once, and parsed (its values cast) once per call.

use zerocopy::{FromBytes, Immutable, KnownLayout};

use super::header::MsgType;
use super::layout::{HebbianFixed, LayerFixed, WeightSyncFixed};
use super::message::{Message, SyncMode, WeightSync};
use super::parse::f32s;

/// The message of a data payload that [`super::check_payload`] accepted.
///
/// # Panics
/// On a control type, and (with debug assertions) on a payload the check refuses: only
/// checked data payloads may come here.
pub(crate) fn data_message(msg_type: MsgType, payload: &[u8]) -> Message<'_> {
    debug_assert!(
        super::check_payload(msg_type, payload).is_ok(),
        "data_message takes checked payloads only"
    );
    match msg_type {
        MsgType::ForwardData => {
            let (f, data) = split::<LayerFixed>(payload);
            Message::ForwardData {
                layer_id: f.layer_id.get(),
                data: f32s(data),
            }
        }
        MsgType::BackwardData => {
            let (f, data) = split::<LayerFixed>(payload);
            Message::BackwardData {
                layer_id: f.layer_id.get(),
                data: f32s(data),
            }
        }
        MsgType::HebbianData => {
            let (f, data) = split::<HebbianFixed>(payload);
            Message::HebbianData {
                layer_id: f.layer_id.get(),
                learning_rate: f32::from_bits(f.learning_rate.get()),
                rows: f.rows.get(),
                cols: f.cols.get(),
                correlations: f32s(data),
            }
        }
        MsgType::WeightSync => {
            let (f, data) = split::<WeightSyncFixed>(payload);
            Message::WeightSync(WeightSync {
                layer_id: f.layer_id.get(),
                mode: if f.mode == SyncMode::Average as u8 {
                    SyncMode::Average
                } else {
                    SyncMode::Replace
                },
                rows: f.rows.get(),
                cols: f.cols.get(),
                offset: f.offset.get(),
                sample_count: f.sample_count.get(),
                values: f32s(data),
            })
        }
        other => panic!("{other:?} is not a data message type"),
    }
}

/// A checked payload's fixed fields and the values after them.
fn split<T: FromBytes + KnownLayout + Immutable>(payload: &[u8]) -> (&T, &[u8]) {
    T::ref_from_prefix(payload).expect("a checked payload holds its fixed fields")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use std::borrow::Cow;

    use super::*;
    use crate::wire::fuzzing::{message_from_bytes, same_message};
    use crate::wire::F32s;
    use crate::wire::{check_payload, encode_frame, parse_payload, HEADER_LEN};

    /// `message` encoded in a buffer where its payload starts `shift` bytes past a 4-byte
    /// boundary, and where its payload lies. Values start 2 bytes past a multiple of 4 into
    /// the payload, so they are aligned when `shift` is 2 (as when the frame is).
    fn encoded(message: &Message<'_>, shift: usize) -> (Vec<u32>, usize, usize) {
        let mut bytes = Vec::new();
        let len = encode_frame(message, 7, &mut bytes).expect("a valid message");
        let start = (4 + shift - HEADER_LEN % 4) % 4;
        let mut words = vec![0u32; (start + len).div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[start..start + len].copy_from_slice(&bytes);
        (words, start + HEADER_LEN, start + len)
    }

    /// Checks that `data_message` builds `message` (a data message) from its payload at
    /// `shift` (mod 4), as `parse_payload` does.
    fn agrees(message: &Message<'_>, shift: usize) {
        let (words, from, to) = encoded(message, shift);
        let payload = &bytemuck::cast_slice::<u32, u8>(&words)[from..to];
        let parsed = parse_payload(message.msg_type(), payload).expect("an encoded payload");
        let built = data_message(message.msg_type(), payload);
        assert!(same_message(&built, &parsed), "{built:?} != {parsed:?}");
        assert!(same_message(&built, message), "{built:?} != {message:?}");
    }

    fn values<'a>(message: &'a Message<'a>) -> Option<&'a F32s<'a>> {
        match message {
            Message::ForwardData { data, .. } | Message::BackwardData { data, .. } => Some(data),
            Message::HebbianData { correlations, .. } => Some(correlations),
            Message::WeightSync(w) => Some(&w.values),
            _ => None,
        }
    }

    #[test]
    fn each_data_type_borrows_its_values_when_aligned_and_copies_them_otherwise() {
        let data = [1.0f32, -2.5, f32::NAN, 0.0];
        let messages = [
            Message::ForwardData {
                layer_id: 3,
                data: Cow::Borrowed(&data),
            },
            Message::BackwardData {
                layer_id: 513,
                data: Cow::Borrowed(&data),
            },
            Message::HebbianData {
                layer_id: 2,
                learning_rate: 0.5,
                rows: 2,
                cols: 2,
                correlations: Cow::Borrowed(&data),
            },
            Message::WeightSync(WeightSync {
                layer_id: 1,
                mode: SyncMode::Average,
                rows: 2,
                cols: 3,
                offset: 4,
                sample_count: 100,
                values: Cow::Borrowed(&data[..3]),
            }),
        ];
        for message in &messages {
            for shift in 0..4 {
                let (words, from, to) = encoded(message, shift);
                let payload = &bytemuck::cast_slice::<u32, u8>(&words)[from..to];
                let built = data_message(message.msg_type(), payload);
                assert!(same_message(&built, message), "{built:?} != {message:?}");
                let aligned = shift == 2 && cfg!(target_endian = "little");
                let borrowed = matches!(values(&built), Some(Cow::Borrowed(_)));
                assert_eq!(
                    borrowed,
                    aligned,
                    "{:?} at shift {shift}",
                    message.msg_type()
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "not a data message type")]
    fn a_control_type_is_refused() {
        // A Heartbeat payload: 2-byte flags, 8-byte timestamp.
        let payload = [0u8; 10];
        data_message(MsgType::Heartbeat, &payload);
    }

    /// No failure file (Miri's isolation refuses the working directory) and few cases
    /// under Miri, which is slow.
    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: if cfg!(miri) { 4 } else { 256 },
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_encoded_data_message_is_built_as_parse_payload_builds_it(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            shift in 0usize..4,
        ) {
            let message = message_from_bytes(&bytes);
            if message.msg_type().is_data() {
                agrees(&message, shift);
            }
        }

        #[test]
        fn any_checked_payload_is_built_as_parse_payload_builds_it(
            kind in 0usize..4,
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let msg_type = [
                MsgType::ForwardData,
                MsgType::BackwardData,
                MsgType::HebbianData,
                MsgType::WeightSync,
            ][kind];
            if check_payload(msg_type, &payload).is_ok() {
                let parsed = parse_payload(msg_type, &payload).expect("checked");
                prop_assert!(same_message(&data_message(msg_type, &payload), &parsed));
            }
        }
    }
}
