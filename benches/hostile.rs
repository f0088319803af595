//! A well-behaved client's round trip to a live `nnp serve` process, quiet and while hostile
//! clients attack the same server with its limits on: a flooder above the rate limit
//! (reconnecting whenever it is cut off), waves of 1,000 silent connections held past the
//! handshake deadline, garbage writers, and readers that never read, each from a loopback
//! address of its own (127.0.0.2-5; the client is 127.0.0.1), as from other hosts. Same
//! process, same client, quiet figures first as the baseline.
//!
//! `cargo bench --bench hostile` (NNP_BENCH_SECONDS: the attack's length, 10 by default;
//! NNP_BENCH_ITERS: the quiet round trips, 5,000 by default; NNP_BENCH_ATTACK: the attacks to
//! run, of flood, silent, garbage and unread, all by default; NNP_BENCH_ATTACK_NICE: the
//! attacker threads' nice value, 19 by default).
//!
//! The attackers stand for other hosts, but here they share the server's two cores: their
//! threads run at nice 19, so that their own work (connecting, writing; on loopback also the
//! kernel's receive path for what they send) takes the cores the server and the client leave
//! idle rather than theirs. `NNP_BENCH_ATTACK_NICE=0` runs them as equals.

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "common/measure.rs"]
mod measure;

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::process::Processes;
use common::raw_peer::RawPeer;
use measure::{env_or, histogram, line};
use nnp::wire::{encode_frame, Header, Message};

fn request() -> Message<'static> {
    Message::ForwardData {
        layer_id: 0,
        data: Cow::Owned(vec![0.5; 64]),
    }
}

/// One round trip, then a pause that keeps the client below the rate limit.
fn round_trip(peer: &mut RawPeer) -> u64 {
    let start = Instant::now();
    peer.send(&request());
    peer.read_frame()
        .expect("the well-behaved client is answered");
    let ns = start.elapsed().as_nanos().max(1) as u64;
    thread::sleep(Duration::from_micros(600));
    ns
}

/// Runs `attack` in a loop on its own thread until `stop`; counts its rounds. An attack not
/// named in `NNP_BENCH_ATTACK` (a comma-separated list; all when unset) does not run.
fn keep_on(
    name: &str,
    stop: &Arc<AtomicBool>,
    rounds: &Arc<AtomicUsize>,
    attack: impl Fn() + Send + 'static,
) -> thread::JoinHandle<()> {
    let chosen = std::env::var("NNP_BENCH_ATTACK").unwrap_or_default();
    let wanted = chosen.is_empty() || chosen.split(',').any(|c| c == name);
    let (stop, rounds) = (Arc::clone(stop), Arc::clone(rounds));
    let nice = env_or("NNP_BENCH_ATTACK_NICE", 19);
    thread::spawn(move || {
        // On Linux the nice value is the thread's own.
        if let Err(e) = rustix::process::setpriority_process(None, nice) {
            eprintln!("attacker priority not lowered: {e}");
        }
        while wanted && !stop.load(Ordering::Relaxed) {
            attack();
            rounds.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// A connection from `ip` (127.0.0.x: every loopback address is this machine), so that each
/// attack comes from an address of its own, as from another host.
fn connect_from(ip: [u8; 4], to: SocketAddr) -> Option<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket.bind(&SocketAddr::from((ip, 0)).into()).ok()?;
    socket.connect(&to.into()).ok()?;
    Some(socket.into())
}

/// Requests as fast as the socket takes them, never read, until the server cuts it off.
fn flood(addr: SocketAddr, stop: &AtomicBool) {
    let Some(mut socket) = connect_from([127, 0, 0, 2], addr) else {
        return;
    };
    let _ = socket.set_write_timeout(Some(Duration::from_millis(100)));
    let mut hello = Vec::new();
    encode_frame(&RawPeer::hello(), 0, &mut hello).unwrap();
    let mut burst = Vec::new();
    for k in 0..256u64 {
        encode_frame(&request(), 1 + k, &mut burst).unwrap();
    }
    let frame = burst.len() / 256;
    if socket.write_all(&hello).is_err() {
        return;
    }
    let mut sequence = 1;
    while !stop.load(Ordering::Relaxed) {
        for piece in burst.chunks_mut(frame) {
            Header::mut_from_buf(piece).unwrap().set_sequence(sequence);
            sequence += 1;
        }
        if socket.write_all(&burst).is_err() {
            return;
        }
    }
}

fn main() {
    let attack_for = Duration::from_secs_f64(env_or("NNP_BENCH_SECONDS", 10.0));
    let quiet_iters: usize = env_or("NNP_BENCH_ITERS", 5_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_nnp"))
        .args([
            "serve", "--port", "0", "--layers", "64,32,10", "--log", "off",
        ])
        .args(["--handshake-timeout", "1", "--slow-consumer-timeout", "1"])
        .args(["--rate-frames", "2000", "--rate-burst", "0.05"])
        .args(["--rate-close-after", "200"])
        .args(["--max-connections-per-address", "5000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let listening = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let _server = Processes(vec![child]);
    let addr: SocketAddr = listening
        .strip_prefix("listening on ")
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();

    let mut good = RawPeer::handshake(addr);
    good.stream.set_nodelay(true).unwrap();
    for _ in 0..quiet_iters / 10 {
        round_trip(&mut good);
    }
    let mut quiet = histogram();
    for _ in 0..quiet_iters {
        quiet.record(round_trip(&mut good)).unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let counts: Vec<Arc<AtomicUsize>> = (0..4).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let flooding = Arc::clone(&stop);
    let attackers = vec![
        keep_on("flood", &stop, &counts[0], move || flood(addr, &flooding)),
        keep_on("silent", &stop, &counts[1], move || {
            let silent: Vec<_> = (0..1000)
                .filter_map(|_| connect_from([127, 0, 0, 3], addr))
                .collect();
            thread::sleep(Duration::from_millis(1500));
            drop(silent);
        }),
        keep_on("garbage", &stop, &counts[2], move || {
            if let Some(mut s) = connect_from([127, 0, 0, 4], addr) {
                let _ = s.write_all(&[0xAB; 4096]);
            }
            thread::sleep(Duration::from_millis(5));
        }),
        keep_on("unread", &stop, &counts[3], move || {
            let Some(mut s) = connect_from([127, 0, 0, 5], addr) else {
                return;
            };
            let mut bytes = Vec::new();
            encode_frame(&RawPeer::hello(), 0, &mut bytes).unwrap();
            for k in 0..2000u64 {
                encode_frame(&request(), 1 + k, &mut bytes).unwrap();
            }
            let _ = s.write_all(&bytes);
            thread::sleep(Duration::from_millis(2500));
        }),
    ];
    let mut attacked = histogram();
    let started = Instant::now();
    while started.elapsed() < attack_for {
        attacked.record(round_trip(&mut good)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        let _ = attacker.join();
    }

    println!(
        "# `nnp serve` (64,32,10; handshake deadline 1 s, slow consumers cut after 1 s, 2,000 frames/s per peer with 50 ms of burst, closed past 200 refusals) answering a well-behaved client, quiet and under attack for {:.0} s",
        attack_for.as_secs_f64()
    );
    line("round trip, quiet", 36, &quiet);
    line("round trip, under attack", 36, &attacked);
    println!(
        "attack / quiet: p50 {:.2}x  p99 {:.2}x  (target p99 <= 2x)   floods {}, silent waves of 1,000: {}, garbage connections {}, never-readers {}",
        attacked.value_at_quantile(0.5) as f64 / quiet.value_at_quantile(0.5) as f64,
        attacked.value_at_quantile(0.99) as f64 / quiet.value_at_quantile(0.99) as f64,
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
        counts[2].load(Ordering::Relaxed),
        counts[3].load(Ordering::Relaxed),
    );
}
