//! Dropping, in the kernel, the connections of the addresses under the rate penalty.
//!
//! An address whose connection was closed for keeping on over its rate limit is turned away
//! for the rest of that second ([`super::admission`]). Turned away after `accept`, each of
//! its connections still costs the loop an `accept4`, a write and a `close`, tens of
//! microseconds of kernel time, and a flooder that reconnects at once makes thousands a
//! second. So while addresses are under the penalty, the listening sockets carry a classic
//! BPF socket filter (`SO_ATTACH_FILTER`) that drops every packet from them. TCP runs a
//! listener's filter on each segment addressed to it (`tcp_filter` in `tcp_v4_rcv` and
//! `tcp_v6_rcv`, before a SYN reaches `tcp_conn_request` and before the handshake's last
//! ACK creates the child socket), so a penalized address's SYN is dropped as if lost: its
//! `connect` waits for the SYN's retransmission (a second, then more) and costs the node
//! nothing. Established connections are matched to their own sockets and never see it.
//!
//! The filter names [`MAX_FILTERED`] addresses at most (its program grows by 2 instructions
//! per IPv4 address and 9 per IPv6 one, within the kernel's 4,096); addresses beyond them
//! are turned away after `accept` as before. Which addresses, and the program for them, are
//! decided here without sockets ([`Penalties`], [`program`]); the event loop attaches the
//! program ([`apply`]) when the set changes, and detaches it when the set is empty.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::time::Instant;

/// Addresses the listeners' filter names at the most.
pub(crate) const MAX_FILTERED: usize = 256;

/// The addresses under the rate penalty that the filter names, with when each penalty ends.
#[derive(Debug, Default)]
pub(crate) struct Penalties {
    until: HashMap<IpAddr, Instant>,
}

impl Penalties {
    /// Puts `ip` under the penalty until `until` (or later, if it already is). True if the
    /// set of addresses changed: `ip` is new and there was room for it.
    pub(crate) fn enter(&mut self, ip: IpAddr, until: Instant) -> bool {
        if let Some(end) = self.until.get_mut(&ip) {
            *end = (*end).max(until);
            return false;
        }
        if self.until.len() >= MAX_FILTERED {
            return false;
        }
        self.until.insert(ip, until);
        true
    }

    /// Ends the penalties due by `now`. True if the set of addresses changed.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let before = self.until.len();
        self.until.retain(|_, until| *until > now);
        self.until.len() != before
    }

    /// The addresses, in order.
    pub(crate) fn addresses(&self) -> Vec<IpAddr> {
        let mut addresses: Vec<IpAddr> = self.until.keys().copied().collect();
        addresses.sort_unstable();
        addresses
    }
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub(crate) code: u16,
    pub(crate) jt: u8,
    pub(crate) jf: u8,
    pub(crate) k: u32,
}

// The classic BPF opcodes the program uses (linux/filter.h, linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
const LD_MEM: u16 = 0x60; // BPF_LD | BPF_MEM: A = M[k]
const ST: u16 = 0x02; // BPF_ST: M[k] = A
const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// `SKF_NET_OFF`: absolute loads from here on read the network header. A TCP socket's
/// filter runs with the packet's data at the TCP header, so the IP header is only reachable
/// this way.
const NET: u32 = 0xFFF0_0000;
/// What a filter returns to drop the packet, and to keep it whole.
const DROP: u32 = 0;
const ACCEPT: u32 = u32::MAX;
/// The kernel's limit on a classic program's length (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

const fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// `if A == k` then skip `jt` instructions, else `jf`.
const fn jeq(k: u32, jt: u8, jf: u8) -> Insn {
    Insn {
        code: JEQ_K,
        jt,
        jf,
        k,
    }
}

/// The filter that drops the packets from `addresses` (an IPv4-mapped IPv6 address stands
/// for its IPv4 one: a dual-stack listener receives IPv4 packets from such peers) and keeps
/// every other; `None` for no address, when the listeners carry no filter. At most
/// [`MAX_FILTERED`] addresses are taken.
///
/// The IP version picks a block: IPv4 loads the source address once and compares it with
/// each address (`jeq a, 0, 1; ret 0`: a match falls onto the drop); IPv6 loads the four
/// words of the source address once into scratch memory and compares them with each
/// address's, a mismatch jumping to the next address. Every conditional jump is thus short
/// (jump offsets are 8 bits); the one long jump, over the IPv4 block, is a `ja`, whose offset
/// is 32 bits. The kernel translates the program into about 10 eBPF instructions per IPv6
/// address, 2 per IPv4 one, and charges them to the socket's option memory: 256 IPv6
/// addresses take about 20 KiB of it (`net.core.optmem_max` is 128 KiB on recent kernels,
/// 20 KiB on older ones, which may refuse such a program: the node then turns those
/// addresses away after `accept`, as without a filter).
pub(crate) fn program(addresses: &[IpAddr]) -> Option<Vec<Insn>> {
    if addresses.is_empty() {
        return None;
    }
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for ip in addresses.iter().take(MAX_FILTERED) {
        match ip.to_canonical() {
            IpAddr::V4(ip) => v4.push(u32::from(ip)),
            IpAddr::V6(ip) => v6.push(ip.octets()),
        }
    }
    let mut p = Vec::with_capacity(8 + 2 * v4.len() + 9 * v6.len());
    // The version, in the high nibble of the header's first byte.
    p.push(stmt(LD_B_ABS, NET));
    p.push(stmt(AND_K, 0xF0));
    p.push(jeq(0x40, 1, 0));
    let over_v4 = p.len();
    p.push(stmt(JA, 0)); // to the IPv6 block, set below
    p.push(stmt(LD_W_ABS, NET + 12));
    for a in v4 {
        p.push(jeq(a, 0, 1));
        p.push(stmt(RET_K, DROP));
    }
    p.push(stmt(RET_K, ACCEPT));
    p[over_v4].k = (p.len() - over_v4 - 1) as u32;
    p.push(jeq(0x60, 1, 0));
    p.push(stmt(RET_K, ACCEPT));
    if !v6.is_empty() {
        // The source address is at bytes 8..24 of the IPv6 header.
        for i in 0..4 {
            p.push(stmt(LD_W_ABS, NET + 8 + 4 * i));
            p.push(stmt(ST, i));
        }
    }
    for octets in v6 {
        for (i, word) in octets.chunks_exact(4).enumerate() {
            let word = u32::from_be_bytes(word.try_into().expect("four bytes"));
            // A mismatch skips the rest of this address's comparisons and its drop: 7, 5,
            // 3, then 1 instruction.
            p.push(stmt(LD_MEM, i as u32));
            p.push(jeq(word, 0, 7 - 2 * i as u8));
        }
        p.push(stmt(RET_K, DROP));
    }
    p.push(stmt(RET_K, ACCEPT));
    debug_assert!(p.len() <= MAX_INSNS);
    Some(p)
}

/// Attaches `program` to `socket` in place of its filter, or detaches its filter (`None`).
pub(crate) fn apply(socket: &impl AsFd, program: Option<&[Insn]>) -> io::Result<()> {
    let socket = socket2::SockRef::from(socket);
    match program {
        Some(program) => {
            let filter: Vec<socket2::SockFilter> = program
                .iter()
                .map(|i| socket2::SockFilter::new(i.code, i.jt, i.jf, i.k))
                .collect();
            socket.attach_filter(&filter)
        }
        None => detach(&socket),
    }
}

/// Detaches the filter an accepted socket inherited from its listener, if any.
pub(crate) fn detach_inherited(socket: &impl AsFd) -> io::Result<()> {
    detach(&socket2::SockRef::from(socket))
}

fn detach(socket: &socket2::SockRef<'_>) -> io::Result<()> {
    match socket.detach_filter() {
        // ENOENT: there was none.
        Err(e) if e.raw_os_error() == Some(2) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
    use std::time::Duration;

    /// Runs `program` as the kernel would on a packet whose network header is `header`: a
    /// load outside the packet ends the program with 0 (drop), as in the kernel.
    fn run(program: &[Insn], header: &[u8]) -> u32 {
        let load = |k: u32, len: usize| -> Option<u32> {
            let at = k.checked_sub(NET)? as usize;
            let bytes = header.get(at..at + len)?;
            Some(bytes.iter().fold(0, |v, &b| (v << 8) | u32::from(b)))
        };
        let (mut a, mut pc, mut m) = (0u32, 0usize, [None::<u32>; 16]);
        loop {
            let i = program[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => match load(i.k, 4) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_B_ABS => match load(i.k, 1) {
                    Some(v) => a = v,
                    None => return 0,
                },
                ST => m[i.k as usize] = Some(a),
                LD_MEM => a = m[i.k as usize].expect("scratch memory loaded before it is stored"),
                AND_K => a &= i.k,
                JA => pc += i.k as usize,
                JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                RET_K => return i.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    /// What the kernel checks before it takes a classic program (bpf_check_classic):
    /// its length, jumps that land inside it, and a return at its end.
    fn assert_valid(program: &[Insn]) {
        assert!(!program.is_empty() && program.len() <= MAX_INSNS);
        for (pc, i) in program.iter().enumerate() {
            let next = pc + 1;
            match i.code {
                JA => assert!(next + (i.k as usize) < program.len(), "ja at {pc}"),
                JEQ_K => {
                    assert!(
                        next + usize::from(i.jt.max(i.jf)) < program.len(),
                        "jeq at {pc}"
                    )
                }
                _ => {}
            }
        }
        assert_eq!(program.last().unwrap().code, RET_K);
    }

    fn ipv4_header(source: Ipv4Addr) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0] = 0x45;
        h[9] = 6;
        h[12..16].copy_from_slice(&source.octets());
        h[16..20].copy_from_slice(&[127, 0, 0, 1]);
        h
    }

    fn ipv6_header(source: Ipv6Addr) -> Vec<u8> {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[6] = 6;
        h[8..24].copy_from_slice(&source.octets());
        h[24..40].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        h
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn without_ipv6_addresses_the_program_has_no_ipv6_comparisons() {
        let p = program(&[v4(127, 0, 0, 2)]).unwrap();
        assert_eq!(p.len(), 11);
        assert!(!p.iter().any(|i| i.code == ST || i.code == LD_MEM));
    }

    #[test]
    fn no_address_no_filter() {
        assert!(program(&[]).is_none());
    }

    #[test]
    fn ipv4_sources_named_are_dropped_and_their_neighbours_kept() {
        let p = program(&[v4(127, 0, 0, 2), v4(10, 1, 2, 3)]).unwrap();
        assert_valid(&p);
        for dropped in [[127, 0, 0, 2], [10, 1, 2, 3]] {
            assert_eq!(run(&p, &ipv4_header(dropped.into())), DROP);
        }
        for kept in [
            [127, 0, 0, 1],
            [127, 0, 0, 6],
            [127, 0, 0, 3],
            [2, 0, 0, 127],
        ] {
            assert_eq!(run(&p, &ipv4_header(kept.into())), ACCEPT, "{kept:?}");
        }
        // An IPv6 packet whose words happen to hold the IPv4 address is not it.
        let look_alike: Ipv6Addr = "7f00:2::7f00:2".parse().unwrap();
        assert_eq!(run(&p, &ipv6_header(look_alike)), ACCEPT);
    }

    #[test]
    fn ipv6_sources_named_are_dropped_and_those_differing_in_any_word_kept() {
        let named: Ipv6Addr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let p = program(&[IpAddr::V6(named), IpAddr::V6(Ipv6Addr::LOCALHOST)]).unwrap();
        assert_valid(&p);
        assert_eq!(run(&p, &ipv6_header(named)), DROP);
        assert_eq!(run(&p, &ipv6_header(Ipv6Addr::LOCALHOST)), DROP);
        for word in 0..4 {
            let mut octets = named.octets();
            octets[4 * word + 3] ^= 1;
            let other = Ipv6Addr::from(octets);
            assert_eq!(run(&p, &ipv6_header(other)), ACCEPT, "{other}");
        }
        assert_eq!(run(&p, &ipv4_header([127, 0, 0, 1].into())), ACCEPT);
    }

    #[test]
    fn an_ipv4_mapped_address_is_filtered_as_the_ipv4_packets_it_stands_for() {
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped());
        let p = program(&[mapped]).unwrap();
        assert_eq!(run(&p, &ipv4_header([127, 0, 0, 2].into())), DROP);
        assert_eq!(run(&p, &ipv4_header([127, 0, 0, 1].into())), ACCEPT);
    }

    #[test]
    fn the_most_addresses_of_both_families_fit_and_jump_right() {
        let v4s = (0..MAX_FILTERED as u32).map(|i| IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i)));
        let v6s = (0..MAX_FILTERED as u128)
            .map(|i| IpAddr::V6(Ipv6Addr::from((0x2001_u128 << 112) | (i << 64) | i)));
        for addresses in [
            v4s.clone().collect::<Vec<_>>(),
            v6s.clone().collect(),
            v4s.clone().take(100).chain(v6s.clone().take(156)).collect(),
        ] {
            let p = program(&addresses).unwrap();
            assert_valid(&p);
            for ip in &addresses {
                let header = match ip {
                    IpAddr::V4(ip) => ipv4_header(*ip),
                    IpAddr::V6(ip) => ipv6_header(*ip),
                };
                assert_eq!(run(&p, &header), DROP, "{ip}");
            }
            assert_eq!(run(&p, &ipv4_header([10, 0, 1, 0].into())), ACCEPT);
            assert_eq!(run(&p, &ipv6_header(Ipv6Addr::LOCALHOST)), ACCEPT);
        }
        // Past the most, the rest are not in the program.
        let more: Vec<IpAddr> = v4s.chain(std::iter::once(v4(11, 0, 0, 1))).collect();
        let p = program(&more).unwrap();
        assert_eq!(run(&p, &ipv4_header([11, 0, 0, 1].into())), ACCEPT);
    }

    #[test]
    fn penalties_change_the_set_when_an_address_enters_or_leaves_and_are_bounded() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = Penalties::default();
        assert!(p.enter(v4(127, 0, 0, 2), t0 + s));
        // A longer penalty for the same address changes nothing in the set.
        assert!(!p.enter(v4(127, 0, 0, 2), t0 + 2 * s));
        assert!(p.enter(v4(127, 0, 0, 3), t0 + s));
        assert_eq!(p.addresses(), [v4(127, 0, 0, 2), v4(127, 0, 0, 3)]);
        assert!(!p.expire(t0));
        assert!(p.expire(t0 + s));
        assert_eq!(p.addresses(), [v4(127, 0, 0, 2)]);
        assert!(p.expire(t0 + 2 * s));
        assert!(p.addresses().is_empty());
        for i in 0..MAX_FILTERED as u32 {
            assert!(p.enter(IpAddr::V4(Ipv4Addr::from(i)), t0 + s));
        }
        assert!(!p.enter(v4(127, 0, 0, 9), t0 + s));
        assert_eq!(p.addresses().len(), MAX_FILTERED);
    }

    /// Starts a connection from `from` to `to` without waiting for it.
    fn start_connect(from: IpAddr, to: SocketAddr) -> socket2::Socket {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(to),
            socket2::Type::STREAM,
            None,
        )
        .unwrap();
        socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
        socket.set_nonblocking(true).unwrap();
        match socket.connect(&to.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(115) => {} // EINPROGRESS
            Err(e) => panic!("connect from {from}: {e}"),
        }
        socket
    }

    /// Whether the connection completed within `wait` (a SYN dropped is retransmitted only
    /// a second later).
    fn completes(socket: &socket2::Socket, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if socket.peer_addr().is_ok() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_listener_with_the_filter_lets_no_syn_from_a_named_address_through() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let p = program(&[v4(127, 0, 0, 2)]).unwrap();
        if let Err(e) = apply(&listener, Some(&p)) {
            // Not every kernel lets a process filter its sockets; the node then turns the
            // addresses away after accept.
            eprintln!("no socket filter here ({e}): not tested");
            return;
        }
        let named = start_connect(v4(127, 0, 0, 2), to);
        let neighbours = [
            start_connect(v4(127, 0, 0, 1), to),
            start_connect(v4(127, 0, 0, 6), to),
        ];
        for socket in &neighbours {
            assert!(completes(socket, Duration::from_secs(10)));
        }
        assert!(!completes(&named, Duration::from_millis(300)));
        // Still trying, not refused.
        assert!(named.take_error().unwrap().is_none());
        // Accepted sockets inherit the listener's filter, until detached.
        let (child, _) = listener.accept().unwrap();
        socket2::SockRef::from(&child).detach_filter().unwrap();
        assert!(socket2::SockRef::from(&child).detach_filter().is_err());
        detach_inherited(&child).unwrap();
        // Without the filter, the SYN's retransmission gets through.
        apply(&listener, None).unwrap();
        assert!(completes(&named, Duration::from_secs(10)));
        apply(&listener, None).unwrap();
    }

    #[test]
    fn a_filter_on_a_dual_stack_or_ipv6_listener_reads_each_family_s_source() {
        let Ok(listener) = TcpListener::bind("[::]:0") else {
            eprintln!("no IPv6 here: not tested");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let dual_stack = !socket2::SockRef::from(&listener).only_v6().unwrap();
        let p = program(&[v4(127, 0, 0, 2), IpAddr::V6(Ipv6Addr::LOCALHOST)]).unwrap();
        if apply(&listener, Some(&p)).is_err() {
            return;
        }
        let v4_to = SocketAddr::from(([127, 0, 0, 1], port));
        let v6_to = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        let named_v6 = start_connect(IpAddr::V6(Ipv6Addr::LOCALHOST), v6_to);
        // On a dual-stack socket an IPv4 peer arrives as an IPv4 packet.
        if dual_stack {
            let kept = start_connect(v4(127, 0, 0, 1), v4_to);
            let named_v4 = start_connect(v4(127, 0, 0, 2), v4_to);
            assert!(completes(&kept, Duration::from_secs(10)));
            assert!(!completes(&named_v4, Duration::from_millis(300)));
            assert!(named_v4.take_error().unwrap().is_none());
        }
        assert!(!completes(&named_v6, Duration::from_millis(300)));
        assert!(named_v6.take_error().unwrap().is_none());
        // Another IPv6 filter: ::1 is not named, and gets through.
        let other = program(&["2001:db8::1".parse().unwrap()]).unwrap();
        apply(&listener, Some(&other)).unwrap();
        assert!(completes(
            &start_connect(IpAddr::V6(Ipv6Addr::LOCALHOST), v6_to),
            Duration::from_secs(10)
        ));
    }
}
