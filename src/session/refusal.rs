//! Refusals: the application's "no" to one data frame, which leaves the session open.
//!
//! A receiver whose application cannot take a data frame (a layer it does not have, a shape
//! that does not fit, non-finite values) answers with an Error frame of code APPLICATION whose
//! text names the refused frame's sequence number and the reason, `refused frame 42: ...`.
//! Unlike every other Error, it does not end the session: the sender learns which frame was
//! refused and why, and both sides carry on.

use std::borrow::Cow;

use super::{Received, Session, State};
use crate::wire::{ErrorCode, Message, MAX_ERROR_TEXT};

/// The text of a refusal of frame `sequence`: `refused frame {sequence}: {reason}`.
pub fn refusal_text(sequence: u64, reason: &str) -> String {
    let mut text = format!("refused frame {sequence}: {reason}");
    if text.len() > MAX_ERROR_TEXT {
        let mut cut = MAX_ERROR_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// The refused frame's sequence number and the reason, read back from a refusal's text (the
/// sequence is `None` for a text not in [`refusal_text`]'s form, kept whole as the reason).
pub fn parse_refusal(text: &str) -> (Option<u64>, &str) {
    let parsed = text.strip_prefix("refused frame ").and_then(|rest| {
        let (number, reason) = rest.split_once(": ")?;
        Some((number.parse().ok()?, reason))
    });
    match parsed {
        Some((sequence, reason)) => (Some(sequence), reason),
        None => (None, text),
    }
}

impl Session {
    /// Tells the peer that the application refused its data frame `sequence` because of
    /// `reason` (an Error APPLICATION); the session stays open. Does nothing unless the
    /// session is established.
    pub fn refuse(&mut self, sequence: u64, reason: &str) {
        if self.state != State::Established {
            return;
        }
        self.queue(Message::Error {
            code: ErrorCode::APPLICATION,
            message: Cow::Owned(refusal_text(sequence, reason)),
        });
    }

    /// Takes in the peer's refusal of one of our frames, for the application; the session
    /// carries on.
    pub(super) fn take_refusal(&mut self, text: &str) -> Received {
        let (sequence, reason) = parse_refusal(text);
        log::debug!("peer refused frame {sequence:?}: {reason}");
        Received::Refused {
            sequence,
            reason: reason.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_text_reads_back() {
        let text = refusal_text(42, "layer 9 does not exist: ok? yes: two colons");
        assert_eq!(
            parse_refusal(&text),
            (Some(42), "layer 9 does not exist: ok? yes: two colons")
        );
        assert_eq!(parse_refusal("something else"), (None, "something else"));
        assert_eq!(
            parse_refusal("refused frame x: y"),
            (None, "refused frame x: y")
        );
    }

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary() {
        let text = refusal_text(1, &"é".repeat(MAX_ERROR_TEXT));
        assert!(text.len() <= MAX_ERROR_TEXT);
        assert!(text.starts_with("refused frame 1: é"));
    }
}
