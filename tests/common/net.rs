//! Engines over loopback for the `net_*` tests: configurations, a listening engine, an echo
//! server, and the messages and numbered streams the tests send and check.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use nnp::net::{
    CloseCause, ConnId, Engine, EngineConfig, EngineHandle, NetError, NetEvent, ReceivedFrame,
    Receiver,
};
use nnp::session::SessionConfig;
use nnp::wire::{Message, SyncMode, WeightSync};

/// A threaded engine (two event loops) named `name`, with a 5 s connect timeout.
pub(crate) fn config(name: &str) -> EngineConfig {
    EngineConfig::default()
        .threads(2)
        .session(SessionConfig {
            node_id: 7,
            name: name.into(),
            layer_sizes: vec![8, 4],
            ..SessionConfig::default()
        })
        .connect_timeout(Duration::from_secs(5))
}

/// Starts an engine from `cfg` listening on a free loopback port; returns it with its address.
pub(crate) fn start(cfg: EngineConfig) -> (Engine, EngineHandle, Receiver, SocketAddr) {
    let (engine, handle, receiver) = Engine::start(cfg).unwrap();
    let addr = handle.listen("127.0.0.1:0").unwrap();
    (engine, handle, receiver, addr)
}

/// Echoes every data frame back to its sender until `stop` frames were echoed or the engine
/// ends; returns the connections that closed and why.
pub(crate) fn echo_server(
    handle: EngineHandle,
    mut receiver: Receiver,
    stop: usize,
) -> thread::JoinHandle<Vec<(ConnId, CloseCause)>> {
    thread::spawn(move || {
        let mut echoed = 0;
        let mut closed = Vec::new();
        while echoed < stop {
            match receiver.recv_timeout(Duration::from_secs(20)) {
                Some(NetEvent::Frame(frame)) => {
                    let msg = frame.message().unwrap();
                    match handle.send(frame.conn(), &msg, Duration::from_secs(10)) {
                        // A hostile peer may be gone before its valid frames are echoed.
                        Ok(()) | Err(NetError::UnknownConnection(_) | NetError::Closed(_)) => {}
                        Err(e) => panic!("echo failed: {e}"),
                    }
                    echoed += 1;
                }
                Some(NetEvent::Disconnected { conn, cause }) => closed.push((conn, cause)),
                Some(_) => {}
                None => break,
            }
        }
        closed
    })
}

/// A WeightSync (Replace) of `values` on layer 3, 1023 columns plus a bias a row.
pub(crate) fn weight_sync(values: &[f32]) -> Message<'_> {
    let cols = 1023u32;
    let rows = (values.len() as u32) / (cols + 1);
    Message::WeightSync(WeightSync {
        layer_id: 3,
        mode: SyncMode::Replace,
        rows,
        cols,
        offset: 0,
        sample_count: 1,
        values: Cow::Borrowed(values),
    })
}

/// Asserts that `f` is frame number `k` of the stream [`stream_frame`] describes.
pub(crate) fn assert_is_stream_frame(f: &ReceivedFrame, k: usize) {
    let (layer_id, data) = stream_frame(k);
    assert_eq!(
        f.message().unwrap(),
        Message::ForwardData {
            layer_id,
            data: Cow::Borrowed(&data)
        }
    );
}

/// The i-th frame of a batched stream: a length and values that depend on `i`, so that any
/// lost, repeated, reordered or corrupted frame is caught.
pub(crate) fn stream_frame(i: usize) -> (u16, Vec<f32>) {
    // Runs of 2,000 frames of one length (a Sender numbers a block of those without walking
    // its headers) alternate with runs of varied lengths.
    let n = if (i / 2000) % 2 == 0 {
        100
    } else {
        1 + (i * 7919) % 300
    };
    let data = (0..n).map(|k| (i * 1_000 + k) as f32 * 0.25).collect();
    ((i % 60_000) as u16, data)
}

/// A ForwardData of `values` on `layer_id`.
pub(crate) fn forward(layer_id: u16, values: &[f32]) -> Message<'_> {
    Message::ForwardData {
        layer_id,
        data: Cow::Borrowed(values),
    }
}

/// [`config`] with no event loop thread: the engine runs on the application's threads.
pub(crate) fn inline_config(name: &str, busy_poll: bool) -> EngineConfig {
    config(name).inline().busy_poll(busy_poll)
}
