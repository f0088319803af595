//! The NNP wire format: frame header, payload layouts and the streaming codec.
//!
//! Nothing here touches a socket or a clock: bytes in, typed messages out, and back.
