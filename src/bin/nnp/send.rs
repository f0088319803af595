//! `nnp send`: connect to a node, send one data message, and report what came of it.
//!
//! ForwardData waits for the node's answer or its refusal. The other data messages have no
//! answer: they wait a short window (1 s, or `--timeout` if less) for a refusal, and say that
//! none came. A refusal (the node's reason: which layer, what it expected) exits non-zero.

use std::time::{Duration, Instant};

use nnp::net::{CloseCause, Engine, EngineConfig, NetEvent, ReceivedFrame};
use nnp::wire::DisconnectReason;
use serde_json::json;

use crate::describe::{summarize, to_json};
use crate::{explain, CliResult, ControlArgs, DataArgs, DataKind};

/// The longest a message without an answer waits for a refusal.
const REFUSAL_WINDOW: Duration = Duration::from_secs(1);

/// What came of the message.
enum Outcome {
    /// ForwardData's answer.
    Answer(ReceivedFrame),
    /// The node refused it.
    Refused { reason: String },
    /// No refusal within the window.
    NotRefused,
    /// The node closed the connection in good order (shutting down, say) within the window,
    /// without refusing the message.
    ClosedQuietly(DisconnectReason),
}

pub(crate) fn send(
    as_json: bool,
    to: &str,
    kind: DataKind,
    args: &DataArgs,
    timeout: Duration,
    auth: Option<std::sync::Arc<nnp::auth::AuthConfig>>,
    tls: &crate::tls::TlsClientArgs,
) -> CliResult {
    let control = ControlArgs::default();
    let msg = crate::message(kind.into(), args, &control);
    let addrs = explain::addresses("--to", to)?;
    let mut config = tls.apply(EngineConfig::default().threads(1).connect_timeout(timeout))?;
    config.session.auth = auth;
    let (engine, handle, mut rx) = Engine::start(config)?;
    let conn = handle
        .connect(&addrs[..])
        .map_err(|e| format!("could not connect to {to}: {}", explain::net(&e)))?;
    handle.send(conn, &msg, timeout).map_err(|e| {
        format!(
            "could not send {:?} to {to}: {}",
            msg.msg_type(),
            explain::net(&e)
        )
    })?;
    let (wait, answer_expected) = if kind == DataKind::Forward {
        (timeout, true)
    } else {
        (timeout.min(REFUSAL_WINDOW), false)
    };
    let deadline = Instant::now() + wait;
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Some(NetEvent::Frame(f)) if answer_expected => break Outcome::Answer(f),
            Some(NetEvent::Refused { reason, .. }) => break Outcome::Refused { reason },
            Some(NetEvent::Disconnected {
                cause: CloseCause::Disconnect(reason),
                ..
            }) if !answer_expected
                && (reason == DisconnectReason::SHUTDOWN || reason == DisconnectReason::NORMAL) =>
            {
                break Outcome::ClosedQuietly(reason)
            }
            Some(NetEvent::Disconnected { cause, .. }) => {
                return Err(format!(
                    "{to} closed the connection before {}: {cause}",
                    if answer_expected {
                        "answering"
                    } else {
                        "the refusal window ended"
                    }
                )
                .into())
            }
            Some(_) => continue,
            None if answer_expected => {
                return Err(format!(
                    "no answer from {to} within {} s (--timeout)",
                    wait.as_secs_f64()
                )
                .into())
            }
            None => break Outcome::NotRefused,
        }
    };
    handle.close(conn, DisconnectReason::NORMAL, "nnp send done");
    std::thread::sleep(Duration::from_millis(20));
    engine.shutdown();

    let sent = msg.msg_type();
    let window = wait.as_secs_f64();
    match outcome {
        Outcome::Answer(frame) => {
            let answer = frame.message()?;
            if as_json {
                println!(
                    "{}",
                    json!({ "sent": to_json(&msg), "reply": to_json(&answer) })
                );
            } else {
                println!("reply: {}", summarize(&answer));
            }
        }
        Outcome::Refused { reason } => {
            if as_json {
                println!("{}", json!({ "sent": to_json(&msg), "refused": reason }));
            }
            return Err(format!("{to} refused the {sent:?}: {reason}").into());
        }
        Outcome::NotRefused => {
            if as_json {
                println!(
                    "{}",
                    json!({ "sent": to_json(&msg), "refused": null, "window_s": window })
                );
            } else {
                println!("sent {sent:?} to {to}; not refused within {window} s");
            }
        }
        Outcome::ClosedQuietly(reason) => {
            let why = if reason == DisconnectReason::SHUTDOWN {
                "it is shutting down"
            } else {
                "in good order"
            };
            if as_json {
                println!(
                    "{}",
                    json!({ "sent": to_json(&msg), "refused": null, "closed": reason.0 })
                );
            } else {
                println!(
                    "sent {sent:?} to {to}; not refused before {to} closed the connection ({why})"
                );
            }
        }
    }
    Ok(())
}
