//! Frames and bytes counted by message type: what a read took in or a write put out, for the
//! metrics. A plain table the caller owns, so that counting costs an add per frame and the
//! shared counters are touched once per read or write, not once per frame.

use crate::wire::MsgType;

/// Frames and bytes per message type, indexed by [`MsgType::index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TypeTally {
    frames: [u64; MsgType::ALL.len()],
    bytes: [u64; MsgType::ALL.len()],
}

impl TypeTally {
    /// Counts `frames` frames of `msg_type`, `bytes` long together.
    #[inline]
    pub fn add(&mut self, msg_type: MsgType, frames: u64, bytes: u64) {
        let i = msg_type.index();
        self.frames[i] += frames;
        self.bytes[i] += bytes;
    }

    /// Frames of `msg_type` counted.
    pub fn frames(&self, msg_type: MsgType) -> u64 {
        self.frames[msg_type.index()]
    }

    /// Bytes of `msg_type` counted.
    pub fn bytes(&self, msg_type: MsgType) -> u64 {
        self.bytes[msg_type.index()]
    }

    /// The types with something counted: `(type, frames, bytes)`.
    pub fn iter(&self) -> impl Iterator<Item = (MsgType, u64, u64)> + '_ {
        MsgType::ALL
            .into_iter()
            .map(|t| (t, self.frames[t.index()], self.bytes[t.index()]))
            .filter(|&(_, frames, bytes)| frames != 0 || bytes != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_type_apart_and_lists_only_those_seen() {
        let mut tally = TypeTally::default();
        tally.add(MsgType::ForwardData, 2, 848);
        tally.add(MsgType::Heartbeat, 1, 32);
        tally.add(MsgType::ForwardData, 1, 424);
        assert_eq!(tally.frames(MsgType::ForwardData), 3);
        assert_eq!(tally.bytes(MsgType::ForwardData), 1272);
        assert_eq!(tally.frames(MsgType::WeightSync), 0);
        let seen: Vec<_> = tally.iter().collect();
        assert_eq!(
            seen,
            [(MsgType::ForwardData, 3, 1272), (MsgType::Heartbeat, 1, 32)]
        );
    }
}
