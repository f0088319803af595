//! A well-behaved client's round trip to a live `nnp serve` process, quiet and while hostile
//! clients attack the same server with its limits on: a flooder above the rate limit
//! (reconnecting whenever it is cut off), waves of 1,000 silent connections held past the
//! handshake deadline, garbage writers, and readers that never read. Same process, same
//! client, quiet figures first as the baseline.
//!
//! `cargo bench --bench hostile` (NNP_BENCH_SECONDS: the attack's length, 10 by default;
//! NNP_BENCH_ITERS: the quiet round trips, 5,000 by default).

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

/// Runs `attack` in a loop on its own thread until `stop`; counts its rounds.
fn keep_on(
    stop: &Arc<AtomicBool>,
    rounds: &Arc<AtomicUsize>,
    attack: impl Fn() + Send + 'static,
) -> thread::JoinHandle<()> {
    let (stop, rounds) = (Arc::clone(stop), Arc::clone(rounds));
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            attack();
            rounds.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Requests as fast as the socket takes them, never read, until the server cuts it off.
fn flood(addr: SocketAddr, stop: &AtomicBool) {
    let Ok(mut socket) = TcpStream::connect(addr) else {
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
        keep_on(&stop, &counts[0], move || flood(addr, &flooding)),
        keep_on(&stop, &counts[1], move || {
            let silent: Vec<_> = (0..1000)
                .filter_map(|_| TcpStream::connect(addr).ok())
                .collect();
            thread::sleep(Duration::from_millis(1500));
            drop(silent);
        }),
        keep_on(&stop, &counts[2], move || {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = s.write_all(&[0xAB; 4096]);
            }
            thread::sleep(Duration::from_millis(5));
        }),
        keep_on(&stop, &counts[3], move || {
            let Ok(mut s) = TcpStream::connect(addr) else {
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
