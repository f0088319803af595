//! Packet captures (pcap and pcapng) to TCP byte streams: the packets are read with
//! `pcap-parser`, their Ethernet/IP/TCP headers with `etherparse`, and each connection's two
//! directions are put back in sequence order, retransmitted bytes once.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_parser::pcapng::Block;
use pcap_parser::{Linktype, PcapCapture, PcapNGCapture};

/// Whether `bytes` start like a pcap or pcapng file.
pub(crate) fn is_capture(bytes: &[u8]) -> bool {
    const MAGICS: [[u8; 4]; 5] = [
        [0xd4, 0xc3, 0xb2, 0xa1],
        [0xa1, 0xb2, 0xc3, 0xd4],
        [0x4d, 0x3c, 0xb2, 0xa1],
        [0xa1, 0xb2, 0x3c, 0x4d],
        [0x0a, 0x0d, 0x0d, 0x0a],
    ];
    bytes.len() >= 4 && MAGICS.iter().any(|m| bytes[..4] == *m)
}

/// One direction of a connection: its bytes in order, and where the capture missed some.
#[derive(Debug, Default)]
pub(crate) struct Direction {
    pub(crate) from: Option<SocketAddr>,
    pub(crate) bytes: Vec<u8>,
    /// For each stretch of `bytes` that came in one packet: its end offset and the packet's
    /// time in seconds.
    arrivals: Vec<(usize, f64)>,
    /// Offsets in `bytes` where the capture lost bytes, and how many.
    pub(crate) holes: Vec<(usize, u64)>,
}

impl Direction {
    /// The time of the packet that brought the byte before `end` (a frame ending there was
    /// whole from then on).
    pub(crate) fn time_at(&self, end: usize) -> f64 {
        let i = self.arrivals.partition_point(|&(e, _)| e < end);
        self.arrivals
            .get(i)
            .or(self.arrivals.last())
            .map_or(0.0, |&(_, t)| t)
    }
}

/// A TCP connection seen in the capture.
#[derive(Debug)]
pub(crate) struct Connection {
    /// The side that sent the SYN (or the first packet, if the capture missed the SYN).
    pub(crate) client: SocketAddr,
    pub(crate) server: SocketAddr,
    /// Client to server, then server to client.
    pub(crate) directions: [Direction; 2],
}

/// A TCP segment with its payload.
struct Segment {
    time: f64,
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    syn: bool,
    ack: bool,
    payload: Vec<u8>,
}

/// Reads a capture and returns its TCP connections in the order they first appear; packets
/// that are not TCP over IP are skipped. Fails on a file that is not a capture.
pub(crate) fn tcp_connections(file: &[u8]) -> Result<Vec<Connection>, String> {
    let segments = segments(file)?;
    Ok(reassemble(segments))
}

fn segments(file: &[u8]) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    if file.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let capture = PcapNGCapture::from_file(file)
            .map_err(|e| format!("not a readable pcapng file: {e:?}"))?;
        for section in &capture.sections {
            // Each interface's link type and clock, in the order they are declared.
            let mut interfaces: Vec<(Linktype, u64, i64)> = Vec::new();
            for block in &section.blocks {
                match block {
                    Block::InterfaceDescription(idb) => interfaces.push((
                        idb.linktype,
                        idb.ts_resolution().unwrap_or(1_000_000),
                        idb.ts_offset(),
                    )),
                    Block::EnhancedPacket(epb) => {
                        let Some(&(linktype, resolution, offset)) =
                            interfaces.get(epb.if_id as usize)
                        else {
                            continue;
                        };
                        let time = epb.decode_ts_f64(offset.max(0) as u64, resolution);
                        let data = &epb.data[..(epb.caplen as usize).min(epb.data.len())];
                        out.extend(segment(linktype, time, data));
                    }
                    Block::SimplePacket(spb) => {
                        let Some(&(linktype, _, _)) = interfaces.first() else {
                            continue;
                        };
                        out.extend(segment(linktype, 0.0, spb.data));
                    }
                    _ => {}
                }
            }
        }
    } else {
        let capture =
            PcapCapture::from_file(file).map_err(|e| format!("not a readable pcap file: {e:?}"))?;
        let nanos = capture.header.is_nanosecond_precision();
        for block in &capture.blocks {
            let fraction = if nanos { 1e-9 } else { 1e-6 };
            let time = f64::from(block.ts_sec) + f64::from(block.ts_usec) * fraction;
            out.extend(segment(capture.header.network, time, block.data));
        }
    }
    Ok(out)
}

/// The TCP segment in one captured packet of link type `linktype`, if there is one.
fn segment(linktype: Linktype, time: f64, data: &[u8]) -> Option<Segment> {
    let packet = match linktype {
        Linktype::ETHERNET => SlicedPacket::from_ethernet(data).ok()?,
        Linktype::RAW | Linktype::IPV4 | Linktype::IPV6 => SlicedPacket::from_ip(data).ok()?,
        Linktype::LINUX_SLL => SlicedPacket::from_linux_sll(data).ok()?,
        // BSD loopback: a 4-byte address family, then IP.
        Linktype::NULL | Linktype::LOOP => SlicedPacket::from_ip(data.get(4..)?).ok()?,
        _ => return None,
    };
    let (src_ip, dst_ip): (IpAddr, IpAddr) = match packet.net? {
        NetSlice::Ipv4(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        _ => return None,
    };
    let TransportSlice::Tcp(tcp) = packet.transport? else {
        return None;
    };
    Some(Segment {
        time,
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        seq: tcp.sequence_number(),
        syn: tcp.syn(),
        ack: tcp.ack(),
        payload: tcp.payload().to_vec(),
    })
}

/// One direction's segments as they arrive, before they are put in order.
#[derive(Default)]
struct Pending {
    from: Option<SocketAddr>,
    /// The sequence number of the first payload byte (after the SYN, if seen).
    start: Option<u32>,
    /// Payloads by offset from `start`, with their time; a retransmission keeps the first.
    pieces: BTreeMap<u64, (Vec<u8>, f64)>,
}

fn reassemble(segments: Vec<Segment>) -> Vec<Connection> {
    let key = |s: &Segment| {
        if s.src <= s.dst {
            (s.src, s.dst)
        } else {
            (s.dst, s.src)
        }
    };
    // The client: the sender of a SYN without ACK, else whoever spoke first.
    let mut order: Vec<(SocketAddr, SocketAddr)> = Vec::new();
    let mut clients: BTreeMap<(SocketAddr, SocketAddr), SocketAddr> = BTreeMap::new();
    for s in &segments {
        let k = key(s);
        if let std::collections::btree_map::Entry::Vacant(e) = clients.entry(k) {
            order.push(k);
            e.insert(s.src);
        }
        if s.syn && !s.ack {
            clients.insert(k, s.src);
        }
    }
    let mut pending: BTreeMap<(SocketAddr, SocketAddr), Pending> = BTreeMap::new();
    for s in segments {
        let p = pending.entry((s.src, s.dst)).or_default();
        p.from = Some(s.src);
        let first = s.seq.wrapping_add(u32::from(s.syn));
        let start = *p.start.get_or_insert(first);
        if s.payload.is_empty() {
            continue;
        }
        let offset = u64::from(first.wrapping_sub(start));
        p.pieces.entry(offset).or_insert((s.payload, s.time));
    }
    order
        .into_iter()
        .map(|k| {
            let client = clients[&k];
            let server = if k.0 == client { k.1 } else { k.0 };
            let mut take = |from, to| {
                let mut d = pending
                    .remove(&(from, to))
                    .map(in_order)
                    .unwrap_or_default();
                d.from.get_or_insert(from);
                d
            };
            let to_server = take(client, server);
            let to_client = take(server, client);
            Connection {
                client,
                server,
                directions: [to_server, to_client],
            }
        })
        .collect()
}

/// The bytes of one direction in order: overlaps taken once, holes noted.
fn in_order(p: Pending) -> Direction {
    let mut d = Direction {
        from: p.from,
        ..Direction::default()
    };
    let mut next = 0u64;
    for (offset, (payload, time)) in p.pieces {
        let end = offset + payload.len() as u64;
        if end <= next {
            continue;
        }
        if offset > next {
            d.holes.push((d.bytes.len(), offset - next));
            next = offset;
        }
        let skip = (next - offset) as usize;
        d.bytes.extend_from_slice(&payload[skip..]);
        d.arrivals.push((d.bytes.len(), time));
        next = end;
    }
    d
}
