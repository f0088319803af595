//! Packet captures written by tests: TCP conversations as Ethernet/IPv4/TCP packets (with
//! real sequence numbers, acknowledgements and checksums) in pcap or pcapng files, carrying
//! exactly the bytes given and cut into segments where the test says.

use std::io::Write as _;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

use etherparse::PacketBuilder;

/// Which way a segment goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    ToServer,
    ToClient,
}

/// One TCP connection: a handshake, the segments in the order given, and a close.
pub(crate) struct Conversation {
    pub(crate) client: SocketAddrV4,
    pub(crate) server: SocketAddrV4,
    pub(crate) segments: Vec<(Dir, Vec<u8>)>,
}

impl Conversation {
    pub(crate) fn new(client: SocketAddrV4, server: SocketAddrV4) -> Self {
        Conversation {
            client,
            server,
            segments: Vec::new(),
        }
    }

    /// Appends one segment carrying `bytes`.
    pub(crate) fn segment(&mut self, dir: Dir, bytes: &[u8]) -> &mut Self {
        self.segments.push((dir, bytes.to_vec()));
        self
    }

    /// The conversation's Ethernet frames: SYN, SYN-ACK, ACK, the segments, FIN both ways.
    pub(crate) fn packets(&self) -> Vec<Vec<u8>> {
        let (c, s) = (self.client, self.server);
        let mut seq = [1_000_000u32, 3_000_000u32];
        let mut out = Vec::new();
        let mut push = |dir: Dir, seq: &mut [u32; 2], flags: &str, payload: &[u8]| {
            let (me, other, from, to) = match dir {
                Dir::ToServer => (0, 1, c, s),
                Dir::ToClient => (1, 0, s, c),
            };
            let mac = |a: &SocketAddrV4| {
                let o = a.ip().octets();
                [2, 0, o[0], o[1], o[2], o[3]]
            };
            let mut tcp = PacketBuilder::ethernet2(mac(&from), mac(&to))
                .ipv4(from.ip().octets(), to.ip().octets(), 64)
                .tcp(from.port(), to.port(), seq[me], 65535);
            if flags.contains('S') {
                tcp = tcp.syn();
            }
            if flags.contains('A') {
                tcp = tcp.ack(seq[other]);
            }
            if flags.contains('P') {
                tcp = tcp.psh();
            }
            if flags.contains('F') {
                tcp = tcp.fin();
            }
            let mut packet = Vec::with_capacity(tcp.size(payload.len()));
            tcp.write(&mut packet, payload).unwrap();
            seq[me] = seq[me]
                .wrapping_add(payload.len() as u32)
                .wrapping_add(u32::from(flags.contains('S') || flags.contains('F')));
            out.push(packet);
        };
        push(Dir::ToServer, &mut seq, "S", &[]);
        push(Dir::ToClient, &mut seq, "SA", &[]);
        push(Dir::ToServer, &mut seq, "A", &[]);
        for (dir, bytes) in &self.segments {
            push(*dir, &mut seq, "PA", bytes);
        }
        push(Dir::ToServer, &mut seq, "FA", &[]);
        push(Dir::ToClient, &mut seq, "FA", &[]);
        push(Dir::ToServer, &mut seq, "A", &[]);
        out
    }
}

/// A pcap file (microsecond timestamps, Ethernet) of `packets`, 1 ms apart.
pub(crate) fn pcap(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(0xa1b2_c3d4u32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend(0i32.to_le_bytes());
    out.extend(0u32.to_le_bytes());
    out.extend(262_144u32.to_le_bytes());
    out.extend(1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for (i, p) in packets.iter().enumerate() {
        let usec = 1_000 * i as u64;
        out.extend((1_700_000_000 + (usec / 1_000_000) as u32).to_le_bytes());
        out.extend(((usec % 1_000_000) as u32).to_le_bytes());
        out.extend((p.len() as u32).to_le_bytes());
        out.extend((p.len() as u32).to_le_bytes());
        out.extend(p);
    }
    out
}

/// A pcapng file (one Ethernet interface, microsecond timestamps) of `packets`.
pub(crate) fn pcapng(packets: &[Vec<u8>]) -> Vec<u8> {
    fn block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
        let padded = body.len().div_ceil(4) * 4;
        let total = (12 + padded) as u32;
        out.extend(kind.to_le_bytes());
        out.extend(total.to_le_bytes());
        out.extend(body);
        out.extend(std::iter::repeat_n(0u8, padded - body.len()));
        out.extend(total.to_le_bytes());
    }
    let mut out = Vec::new();
    let mut shb = Vec::new();
    shb.extend(0x1a2b_3c4du32.to_le_bytes());
    shb.extend(1u16.to_le_bytes());
    shb.extend(0u16.to_le_bytes());
    shb.extend((-1i64).to_le_bytes());
    block(&mut out, 0x0a0d_0d0a, &shb);
    let mut idb = Vec::new();
    idb.extend(1u16.to_le_bytes()); // LINKTYPE_ETHERNET
    idb.extend(0u16.to_le_bytes());
    idb.extend(262_144u32.to_le_bytes());
    block(&mut out, 1, &idb);
    for (i, p) in packets.iter().enumerate() {
        let usec = 1_700_000_000_000_000u64 + 1_000 * i as u64;
        let mut epb = Vec::new();
        epb.extend(0u32.to_le_bytes());
        epb.extend(((usec >> 32) as u32).to_le_bytes());
        epb.extend((usec as u32).to_le_bytes());
        epb.extend((p.len() as u32).to_le_bytes());
        epb.extend((p.len() as u32).to_le_bytes());
        epb.extend(p);
        block(&mut out, 6, &epb);
    }
    out
}

/// A fresh directory for a test's files under the target directory.
pub(crate) fn scratch_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The path of `tool` if it is installed. Without it a test skips, saying why, except under
/// CI (the CI variable set), where .ci/run installs it and its absence is a failure.
pub(crate) fn required_tool(tool: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is not installed; CI must install it (apt-get install {package})");
        }
        // Straight to stderr, past the test harness's capture, so that a passing run shows it.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {tool} is not installed (apt-get install {package}); this check did not run"
        );
    }
    found
}
