//! NNP embedded as a transport: one process streams ForwardData frames to another engine over
//! loopback through a batching `Sender`, and the receiving side takes them in place with
//! `Receiver::poll`, checking every frame's values. Both engines run inline (no loop threads:
//! the sending and the receiving thread drive them), the fastest small-frame configuration.
//!
//! `cargo run --release --example stream [frames]` (default 2,000,000).

use std::borrow::Cow;
use std::thread;
use std::time::{Duration, Instant};

use nnp::net::{Engine, EngineConfig, NetEvent, Polled};
use nnp::wire::Message;

/// The values of frame `i`: the receiver recomputes them to check each frame.
fn activations(i: u64, out: &mut [f32]) {
    for (k, v) in out.iter_mut().enumerate() {
        *v = (i % 1000) as f32 + k as f32 * 0.5;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let frames: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000_000);
    let inline = EngineConfig::default().inline();

    let (_server, server, mut rx) = Engine::start(inline.clone())?;
    let addr = server.listen("127.0.0.1:0")?;
    // An inline server makes progress only while a thread calls its receiver: this one runs
    // before the client connects.
    let receiving = thread::spawn(move || -> Result<(u64, Duration), String> {
        let mut got = 0u64;
        let mut expected = [0f32; 100];
        let mut first = None;
        while got < frames {
            let n = rx.poll(1024, Duration::from_secs(10), |polled| match polled {
                Polled::Frame(frame) => {
                    first.get_or_insert_with(Instant::now);
                    let Ok(Message::ForwardData { data, .. }) = frame.message() else {
                        panic!("a ForwardData frame");
                    };
                    // In order: frame number `got` carries the values of frame `got`.
                    activations(got, &mut expected);
                    assert_eq!(&data[..], &expected[..], "frame {got}");
                    got += 1;
                }
                Polled::Event(NetEvent::Disconnected { cause, .. }) => {
                    panic!("closed early: {cause}")
                }
                Polled::Event(_) => {}
            });
            if n == 0 {
                return Err(format!("the stream stalled after {got} frames"));
            }
        }
        Ok((got, first.map_or(Duration::ZERO, |t| t.elapsed())))
    });

    let (_client, client, _client_rx) = Engine::start(inline)?;
    let conn = client.connect(addr)?;
    let start = Instant::now();
    let mut sender = client.sender(conn)?;
    let mut values = [0f32; 100];
    for i in 0..frames {
        activations(i, &mut values);
        let message = Message::ForwardData {
            layer_id: 1,
            data: Cow::Borrowed(&values),
        };
        sender.send(&message, Duration::from_secs(10))?;
    }
    sender.flush()?;
    // An inline client writes only while this thread calls into it.
    client.wait_sent(conn, Duration::from_secs(30))?;
    let sent_in = start.elapsed();

    let (got, received_in) = receiving.join().expect("the receiving thread")?;
    let rate = got as f64 / received_in.max(sent_in).as_secs_f64();
    println!(
        "{got} ForwardData(100) frames, every value checked: {:.2} M frames/s, {:.2} GB/s",
        rate / 1e6,
        rate * 424.0 / 1e9
    );
    Ok(())
}
