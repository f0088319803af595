//! `nnp send`: connect to a node, send one message, and print the reply.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use nnp::net::{Engine, EngineConfig, NetEvent};
use nnp::wire::DisconnectReason;
use serde_json::json;

use crate::describe::{summarize, to_json};
use crate::{explain, CliResult, ControlArgs, DataArgs, DataKind};

/// `--to` as socket addresses, or an error naming it.
fn resolve(to: &str) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = to
        .to_socket_addrs()
        .map_err(|e| {
            format!(
                "--to {to:?} is not an address to connect to ({}): give host:port, e.g. 127.0.0.1:7878",
                explain::io(&e)
            )
        })?
        .collect();
    if addrs.is_empty() {
        return Err(format!("--to {to:?} resolves to no address"));
    }
    Ok(addrs)
}

pub(crate) fn send(
    as_json: bool,
    to: &str,
    kind: DataKind,
    args: &DataArgs,
    timeout: Duration,
) -> CliResult {
    let control = ControlArgs::default();
    let msg = crate::message(kind.into(), args, &control);
    let addrs = resolve(to)?;
    let config = EngineConfig::default().threads(1).connect_timeout(timeout);
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
    let reply = if kind == DataKind::Forward {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Some(NetEvent::Frame(f)) => break Some(f),
                Some(NetEvent::Disconnected { cause, .. }) => {
                    return Err(format!("the node closed the connection: {cause}").into())
                }
                Some(NetEvent::Refused { reason, .. }) => {
                    return Err(format!("{to} refused the message: {reason}").into())
                }
                Some(_) => continue,
                None => return Err("no reply before the timeout".into()),
            }
        }
    } else {
        None
    };
    match (&reply, as_json) {
        (Some(frame), true) => println!(
            "{}",
            json!({ "sent": to_json(&msg), "reply": to_json(&frame.message()?) })
        ),
        (Some(frame), false) => {
            println!("reply: {}", summarize(&frame.message()?))
        }
        (None, true) => println!("{}", json!({ "sent": to_json(&msg) })),
        (None, false) => println!("sent {:?} to {to}", msg.msg_type()),
    }
    handle.close(conn, DisconnectReason::NORMAL, "nnp send done");
    std::thread::sleep(Duration::from_millis(20));
    engine.shutdown();
    Ok(())
}
