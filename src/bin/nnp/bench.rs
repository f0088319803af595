//! `nnp bench`: round trips or throughput over loopback, against a self-spawned echo node or a
//! running one.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nnp::net::{new_rtt_histogram, ConnId, Engine, EngineConfig, EngineHandle, NetEvent, Receiver};
use nnp::wire::{frame_len, Message};
use std::sync::Arc;

use nnp::auth::AuthConfig;
use serde_json::json;

use crate::tls::TlsClientArgs;
use crate::{explain, BenchKind, CliResult};

/// An in-process echo node: every data frame goes back to its sender.
fn echo_node(
    busy_poll: bool,
    auth: Option<Arc<AuthConfig>>,
) -> Result<(Engine, std::net::SocketAddr, std::thread::JoinHandle<()>), Box<dyn std::error::Error>>
{
    let mut config = EngineConfig::default().threads(1).busy_poll(busy_poll);
    config.session.auth = auth;
    let (engine, handle, rx) = Engine::start(config)?;
    let addr = handle.listen("127.0.0.1:0")?;
    let echo = std::thread::spawn(move || {
        for event in rx {
            if let NetEvent::Frame(f) = event {
                if let Ok(msg) = f.message() {
                    let _ = handle.send(f.conn(), &msg, Duration::from_secs(5));
                }
            }
        }
    });
    Ok((engine, addr, echo))
}

fn client(
    addr: std::net::SocketAddr,
    busy_poll: bool,
    auth: Option<Arc<AuthConfig>>,
    tls: &TlsClientArgs,
) -> Result<(Engine, EngineHandle, nnp::net::Receiver, nnp::net::ConnId), Box<dyn std::error::Error>>
{
    let mut config = tls.apply(EngineConfig::default().threads(1).busy_poll(busy_poll))?;
    config.session.auth = auth;
    let (engine, handle, rx) = Engine::start(config)?;
    let conn = handle
        .connect(addr)
        .map_err(|e| format!("could not connect to {addr}: {}", explain::net(&e)))?;
    Ok((engine, handle, rx, conn))
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "count": h.len(),
        "p50_us": h.value_at_quantile(0.5) as f64 / 1e3,
        "p90_us": h.value_at_quantile(0.9) as f64 / 1e3,
        "p99_us": h.value_at_quantile(0.99) as f64 / 1e3,
        "p99_9_us": h.value_at_quantile(0.999) as f64 / 1e3,
        "max_us": h.max() as f64 / 1e3,
    })
}

/// How the bench's client proves who it is and protects its connection.
pub(crate) struct ClientSecurity<'a> {
    pub(crate) auth: Option<Arc<AuthConfig>>,
    pub(crate) tls: &'a TlsClientArgs,
}

pub(crate) fn bench(
    as_json: bool,
    what: BenchKind,
    count: usize,
    values: usize,
    busy_poll: bool,
    to: Option<&str>,
    ClientSecurity { auth, tls }: ClientSecurity<'_>,
) -> CliResult {
    let (server, addr, echo) = match to {
        Some(to) => (None, explain::address("--to", to)?, None),
        None => {
            let (engine, addr, echo) = echo_node(busy_poll, auth.clone())?;
            (Some(engine), addr, Some(echo))
        }
    };
    let (client_engine, handle, mut rx, conn) = client(addr, busy_poll, auth, tls)?;
    let data = vec![0.5f32; values];
    let msg = Message::ForwardData {
        layer_id: 0,
        data: Cow::Borrowed(&data),
    };
    let len = frame_len(&msg)?;
    match what {
        BenchKind::Rtt => {
            let mut h = new_rtt_histogram();
            for i in 0..count + count / 10 {
                let t = Instant::now();
                handle.send(conn, &msg, Duration::from_secs(5))?;
                loop {
                    match rx.recv_timeout(Duration::from_secs(5)) {
                        Some(NetEvent::Frame(_)) => break,
                        Some(_) => continue,
                        None => return Err("no echo within 5 s".into()),
                    }
                }
                if i >= count / 10 {
                    h.record(t.elapsed().as_nanos().max(1) as u64)?;
                }
            }
            if as_json {
                println!(
                    "{}",
                    json!({ "bench": "rtt", "frame_bytes": len, "rtt": percentiles(&h) })
                );
            } else {
                println!("round trip of a {len}-byte ForwardData over loopback, {count} samples:");
                for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
                    println!(
                        "  {name:<6} {:>9.1} us",
                        h.value_at_quantile(q) as f64 / 1e3
                    );
                }
                println!("  max    {:>9.1} us", h.max() as f64 / 1e3);
            }
        }
        BenchKind::Throughput => {
            // Plain sends (what the node API and most applications do), then a `Sender` in the
            // same process: the first should not trail the second by much.
            let plain = echo_stream(&handle, &mut rx, conn, &data, count, false)?;
            let batched = echo_stream(&handle, &mut rx, conn, &data, count, true)?;
            if as_json {
                println!(
                    "{}",
                    json!({ "bench": "throughput", "frame_bytes": len, "messages": count,
                        "messages_per_s": plain, "gb_per_s": plain * len as f64 / 1e9,
                        "sender_messages_per_s": batched, "ratio_to_sender": plain / batched })
                );
            } else {
                for (api, rate) in [("send", plain), ("Sender", batched)] {
                    println!(
                        "{count} ForwardData of {len} bytes through {api:<6} echoed: {rate:>10.0} messages/s each way, {:.3} GB/s",
                        rate * len as f64 / 1e9
                    );
                }
                println!("plain send: {:.2}x the Sender's rate", plain / batched);
            }
        }
    }
    client_engine.shutdown();
    if let Some(server) = server {
        server.shutdown();
    }
    if let Some(echo) = echo {
        let _ = echo.join();
    }
    Ok(())
}

/// Streams `count` ForwardData to the echo node from another thread, one `send` per message or
/// through a `Sender`, and counts the echoes; returns messages per second each way.
fn echo_stream(
    handle: &EngineHandle,
    rx: &mut Receiver,
    conn: ConnId,
    data: &[f32],
    count: usize,
    batched: bool,
) -> Result<f64, String> {
    let start = Instant::now();
    let sender = {
        let handle = handle.clone();
        let data = data.to_vec();
        std::thread::spawn(move || -> Result<(), String> {
            let msg = Message::ForwardData {
                layer_id: 0,
                data: Cow::Borrowed(&data),
            };
            let timeout = Duration::from_secs(10);
            if batched {
                let mut sender = handle.sender(conn).map_err(|e| e.to_string())?;
                for _ in 0..count {
                    sender.send(&msg, timeout).map_err(|e| e.to_string())?;
                }
                sender.flush().map_err(|e| e.to_string())
            } else {
                for _ in 0..count {
                    handle
                        .send(conn, &msg, timeout)
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        })
    };
    let mut got = 0;
    while got < count {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Some(NetEvent::Frame(_)) => got += 1,
            Some(_) => {}
            None => return Err(format!("only {got} of {count} echoes arrived")),
        }
    }
    sender.join().map_err(|_| "sender panicked")??;
    Ok(count as f64 / start.elapsed().as_secs_f64())
}
