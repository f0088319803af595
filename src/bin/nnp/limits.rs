//! `nnp serve`'s limits on what peers may cost it: connections, the handshake deadline,
//! frame sizes, queued bytes, slow consumers and per-peer rates (the engine's
//! [`nnp::net::Limits`] and the session's timers, docs/PROTOCOL.md "Limits").

use std::time::Duration;

use nnp::net::{EngineConfig, RateLimit};

/// The limits' options.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct LimitArgs {
    /// Accepted connections open at once; one more is told Disconnect OVERLOADED and closed.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_connections: usize,
    /// Accepted connections open at once from one IP address.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    max_connections_per_address: usize,
    /// Seconds a new connection has to complete its handshake (a peer that says nothing, or
    /// dribbles its bytes, is closed with an Error TIMEOUT then).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    handshake_timeout: f64,
    /// The largest payload a peer may send, in bytes (a larger frame is refused with
    /// FRAME_TOO_LARGE as soon as its header arrives).
    #[arg(long, value_name = "BYTES", default_value_t = nnp::wire::DEFAULT_MAX_PAYLOAD)]
    max_payload: u32,
    /// Bytes queued for one peer before sends to it wait (answers to a peer whose queue is
    /// full disconnect it as a slow consumer).
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    max_queued_bytes: usize,
    /// Seconds a peer may leave what it is sent unread (its socket full) before it is
    /// disconnected as a slow consumer (OVERLOADED); 0: never.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    slow_consumer_timeout: f64,
    /// Frames per second one peer may send (data frames over it are refused); no limit
    /// unless given.
    #[arg(long, value_name = "N")]
    rate_frames: Option<u64>,
    /// Bytes per second one peer may send, headers included; no limit unless given.
    #[arg(long, value_name = "BYTES")]
    rate_bytes: Option<u64>,
    /// Seconds' worth of the rates a peer may send at once after a quiet spell.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    rate_burst: f64,
    /// Frames refused within one second after which a peer over its rate is disconnected
    /// (OVERLOADED).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    rate_close_after: u32,
}

fn seconds(option: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("--{option} {value}: not a number of seconds >= 0"))
}

impl LimitArgs {
    /// `engine` with these limits.
    pub(crate) fn apply(&self, mut engine: EngineConfig) -> Result<EngineConfig, String> {
        if self.max_connections == 0 || self.max_connections_per_address == 0 {
            return Err("--max-connections and --max-connections-per-address: at least 1".into());
        }
        if self.max_queued_bytes == 0 {
            return Err("--max-queued-bytes 0: a peer's queue must hold a frame".into());
        }
        if self.rate_frames == Some(0) || self.rate_bytes == Some(0) {
            return Err(
                "--rate-frames and --rate-bytes: at least 1 (leave out for no limit)".into(),
            );
        }
        let limits = &mut engine.limits;
        limits.max_connections = self.max_connections;
        limits.max_connections_per_address = self.max_connections_per_address;
        limits.send_queue_bytes = self.max_queued_bytes;
        let slow = seconds("slow-consumer-timeout", self.slow_consumer_timeout)?;
        limits.slow_consumer_timeout = (!slow.is_zero()).then_some(slow);
        if self.rate_frames.is_some() || self.rate_bytes.is_some() {
            limits.rate_limit = Some(RateLimit {
                frames_per_second: self.rate_frames,
                bytes_per_second: self.rate_bytes,
                burst: seconds("rate-burst", self.rate_burst)?,
                close_after_refusals: self.rate_close_after,
            });
        }
        engine.session.handshake_timeout = seconds("handshake-timeout", self.handshake_timeout)?;
        engine.session.max_payload = self.max_payload;
        Ok(engine)
    }
}
