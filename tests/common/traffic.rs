//! Real NNP traffic for the observation tests: a node (a `DistributedNetwork` answering and
//! refusing as `nnp serve` does) on loopback, and hand-driven clients that send every message
//! type and keep every byte that went each way, frame by frame.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use nnp::net::EngineHandle;
use nnp::nn::{HebbianLearningMode, NeuralNetwork};
use nnp::node::{DistributedNetwork, HandleOutcome, NodeEvent};
use nnp::wire::{
    capabilities, decode_frame, encode_frame, frame_len, DisconnectReason, ErrorCode, Hello,
    Message, MsgType, SyncMode, WeightSync, HEADER_LEN,
};

/// The node's layers: 4 inputs, 3 hidden, 2 outputs.
pub(crate) const LAYERS: [usize; 3] = [4, 3, 2];

/// A node on loopback, its message loop on a thread, until dropped.
pub(crate) struct TestNode {
    pub(crate) addr: SocketAddr,
    pub(crate) engine: EngineHandle,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestNode {
    pub(crate) fn start() -> TestNode {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let network =
                NeuralNetwork::with_layers_and_mode(&LAYERS, 0.1, HebbianLearningMode::Classic);
            let (node, mut events) =
                DistributedNetwork::new("observed", "127.0.0.1", 0, network).unwrap();
            let addr = node.start_server().unwrap();
            tx.send((addr, node.engine().clone())).unwrap();
            while !stopping.load(Ordering::Acquire) {
                let Some(NodeEvent::Message(message)) =
                    events.recv_timeout(Duration::from_millis(20))
                else {
                    continue;
                };
                // A refusal is sent by handle_message itself.
                if let Ok(HandleOutcome::Output(output)) = node.handle_message(&message) {
                    node.reply(&message, &output).unwrap();
                }
            }
            node.shutdown();
        });
        let (addr, engine) = rx.recv().unwrap();
        TestNode {
            addr,
            engine,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One connection's bytes, frame by frame, each way.
pub(crate) struct Recorded {
    pub(crate) client: SocketAddrV4,
    pub(crate) server: SocketAddrV4,
    /// The client's frames, as written.
    pub(crate) sent: Vec<Vec<u8>>,
    /// The node's frames, as read (whole frames; a partial tail at the close is dropped).
    pub(crate) received: Vec<Vec<u8>>,
}

/// The client's side of one connection.
struct Client {
    stream: TcpStream,
    seq: u64,
    rx: Vec<u8>,
    rec: Recorded,
}

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("the tests listen on 127.0.0.1"),
    }
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let client = v4(stream.local_addr().unwrap());
        Client {
            stream,
            seq: 0,
            rx: Vec::new(),
            rec: Recorded {
                client,
                server: v4(addr),
                sent: Vec::new(),
                received: Vec::new(),
            },
        }
    }

    fn encode(&mut self, message: &Message<'_>) -> Vec<u8> {
        let mut frame = Vec::with_capacity(frame_len(message).unwrap());
        encode_frame(message, self.seq, &mut frame).unwrap();
        self.seq += 1;
        frame
    }

    fn send_bytes(&mut self, frame: Vec<u8>) {
        self.stream.write_all(&frame).unwrap();
        self.rec.sent.push(frame);
    }

    fn send(&mut self, message: &Message<'_>) {
        let frame = self.encode(message);
        self.send_bytes(frame);
    }

    /// The node's next frame, or None at the end of the stream.
    fn next(&mut self) -> Option<Message<'static>> {
        loop {
            if let Some((frame, used)) = decode_frame(&self.rx, u32::MAX).unwrap() {
                let message = frame.message.into_owned();
                self.rec.received.push(self.rx[..used].to_vec());
                self.rx.drain(..used);
                return Some(message);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.rx.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn until_closed(mut self) -> Recorded {
        while self.next().is_some() {}
        self.rec
    }
}

fn hello() -> Message<'static> {
    Message::Handshake(Hello {
        node_id: 0x0102_0304_0506_0708,
        min_version: 1,
        max_version: 1,
        capabilities: capabilities::ALL,
        layer_sizes: Cow::Owned(vec![4, 2]),
        name: Cow::Borrowed("observer"),
    })
}

fn values(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 - 2.0) * scale).collect()
}

/// The client's data frames after the handshake, in order: ForwardData (answered),
/// BackwardData, HebbianData, WeightSync, a Heartbeat (echoed), a ForwardData of the wrong
/// size (refused).
pub(crate) const DATA_FRAMES: usize = 6;

/// A session with every message type: the client sends Handshake, the data frames of
/// [`DATA_FRAMES`], and after the node's answer, heartbeat reply and refusal have come, a
/// Disconnect; the node sends HandshakeAck, ForwardData, Heartbeat and Error.
pub(crate) fn every_type(addr: SocketAddr) -> Recorded {
    let mut c = Client::connect(addr);
    c.send(&hello());
    assert!(matches!(c.next(), Some(Message::HandshakeAck(_))));
    let (inputs, hidden) = (LAYERS[0] as u32, LAYERS[1] as u32);
    c.send(&Message::ForwardData {
        layer_id: 0,
        data: Cow::Owned(values(LAYERS[0], 0.5)),
    });
    c.send(&Message::BackwardData {
        layer_id: 0,
        data: Cow::Owned(values((inputs * hidden + hidden) as usize, 0.125)),
    });
    c.send(&Message::HebbianData {
        layer_id: 0,
        learning_rate: 0.5,
        rows: hidden,
        cols: inputs,
        correlations: Cow::Owned(values((hidden * inputs) as usize, 0.25)),
    });
    c.send(&Message::WeightSync(WeightSync {
        layer_id: 0,
        mode: SyncMode::Average,
        rows: hidden,
        cols: inputs,
        offset: 0,
        sample_count: 10,
        values: Cow::Owned(values((inputs * hidden + hidden) as usize, 0.0625)),
    }));
    c.send(&Message::Heartbeat {
        timestamp_ns: 123_456_789,
        reply: false,
    });
    c.send(&Message::ForwardData {
        layer_id: 0,
        data: Cow::Owned(values(3, 1.0)),
    });
    let (mut answered, mut echoed, mut refused) = (false, false, false);
    while !(answered && echoed && refused) {
        match c.next().expect("the node answers before it closes") {
            Message::ForwardData { .. } => answered = true,
            Message::Heartbeat { reply: true, .. } => echoed = true,
            Message::Error { code, message } => {
                assert_eq!(code, ErrorCode::APPLICATION, "{message}");
                assert!(message.starts_with("refused frame 6:"), "{message}");
                refused = true;
            }
            _ => {}
        }
    }
    c.send(&Message::Disconnect {
        reason: DisconnectReason::NORMAL,
        message: Cow::Borrowed("bye"),
    });
    let rec = c.until_closed();
    assert_eq!(rec.sent.len(), 2 + DATA_FRAMES);
    rec
}

/// A session whose second frame, a ForwardData, has one payload byte changed after its CRC
/// was computed: the node reports CHECKSUM_MISMATCH and closes.
pub(crate) fn bad_checksum(addr: SocketAddr) -> Recorded {
    let mut c = Client::connect(addr);
    c.send(&hello());
    assert!(matches!(c.next(), Some(Message::HandshakeAck(_))));
    let mut frame = c.encode(&Message::ForwardData {
        layer_id: 0,
        data: Cow::Owned(values(LAYERS[0], 0.5)),
    });
    frame[HEADER_LEN + 3] ^= 0x40;
    c.send_bytes(frame);
    let rec = c.until_closed();
    let codes: Vec<MsgType> = rec
        .received
        .iter()
        .map(|f| MsgType::from_u8(f[5]).unwrap())
        .collect();
    assert!(codes.contains(&MsgType::Error), "{codes:?}");
    rec
}

/// A client that completes its handshake and stays connected, saying nothing more.
pub(crate) fn open_session(addr: SocketAddr) -> TcpStream {
    let mut c = Client::connect(addr);
    c.send(&hello());
    assert!(matches!(c.next(), Some(Message::HandshakeAck(_))));
    c.stream
}

/// Frames and bytes per type in `frames`.
pub(crate) fn count_by_type(frames: &[Vec<u8>]) -> Vec<(MsgType, u64, u64)> {
    MsgType::ALL
        .into_iter()
        .map(|t| {
            let of: Vec<&Vec<u8>> = frames.iter().filter(|f| f[5] == t as u8).collect();
            (t, of.len() as u64, of.iter().map(|f| f.len() as u64).sum())
        })
        .collect()
}
