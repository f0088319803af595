//! Codec throughput: encode and decode of ForwardData (100 values) and WeightSync (1 MiB and
//! 16 MiB of f32), each against crc32fast alone and memcpy over the same bytes in the same run;
//! header parse + validate in ns/op. Encode is measured into a `Vec` ("encode") and into a
//! plain slice ("to [u8]"), and for ForwardData through `encode_layer_frame` ("layer"), the
//! batching sender's path.
//!
//! `cargo bench --bench codec` (`-- --quick` for a short run). Frames are decoded from a 64-byte
//! aligned buffer, as the network layer's pooled buffers are, so decode takes the zero-copy
//! path (checked before timing).

use std::borrow::Cow;
use std::hint::black_box;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nnp::wire::{
    decode_frame, encode_frame, encode_layer_frame, Header, Message, MsgType, SyncMode, WeightSync,
    HEADER_LEN,
};

/// Bytes in a cache-line aligned buffer.
struct AlignedBuf {
    lines: Vec<[u64; 8]>,
    len: usize,
}

impl AlignedBuf {
    fn from_bytes(bytes: &[u8]) -> Self {
        let mut lines = vec![[0u64; 8]; bytes.len().div_ceil(64)];
        bytemuck::cast_slice_mut::<[u64; 8], u8>(&mut lines)[..bytes.len()].copy_from_slice(bytes);
        AlignedBuf {
            lines,
            len: bytes.len(),
        }
    }
    fn zeroed(len: usize) -> Self {
        AlignedBuf {
            lines: vec![[0u64; 8]; len.div_ceil(64)],
            len,
        }
    }
    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

/// Timing of one operation: per-op latencies (recorded in picoseconds, so that ns-scale
/// operations keep their fractions) and the overall rate.
struct Stats {
    hist: Histogram<u64>,
    ops: u64,
    elapsed: Duration,
}

impl Stats {
    fn p50_ns(&self) -> f64 {
        self.hist.value_at_quantile(0.5) as f64 / 1000.0
    }
    fn p99_ns(&self) -> f64 {
        self.hist.value_at_quantile(0.99) as f64 / 1000.0
    }
    fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `op` in samples of `batch` calls for about `budget`, after a short warm-up.
fn measure(batch: u64, budget: Duration, mut op: impl FnMut()) -> Stats {
    let warm = Instant::now();
    while warm.elapsed() < budget / 10 {
        op();
    }
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut ops = 0;
    let start = Instant::now();
    while start.elapsed() < budget {
        let t = Instant::now();
        for _ in 0..batch {
            op();
        }
        let ps = t.elapsed().as_nanos() as u64 * 1000 / batch;
        hist.record(ps.max(1)).unwrap();
        ops += batch;
    }
    Stats {
        hist,
        ops,
        elapsed: start.elapsed(),
    }
}

fn print_row(what: &str, s: &Stats, bytes: usize, crc: &Stats, memcpy: &Stats) {
    let gbs = s.ops_per_s() * bytes as f64 / 1e9;
    println!(
        "  {what:<8} {:>12.0} msg/s {:>7.2} GB/s  p50 {:>10.1} ns  p99 {:>10.1} ns  {:>5.2}x crc32fast  {:>5.2}x memcpy",
        s.ops_per_s(),
        gbs,
        s.p50_ns(),
        s.p99_ns(),
        crc.p50_ns() / s.p50_ns(),
        memcpy.p50_ns() / s.p50_ns(),
    );
}

fn bench_message(name: &str, message: &Message<'_>, budget: Duration) {
    let mut encoded = Vec::new();
    let frame_len = encode_frame(message, 7, &mut encoded).unwrap();
    let frame = AlignedBuf::from_bytes(&encoded);
    let max_payload = u32::MAX;

    // The zero-copy path is the one measured.
    let (decoded, _) = decode_frame(frame.bytes(), max_payload).unwrap().unwrap();
    let borrowed = match &decoded.message {
        Message::ForwardData { data, .. } => matches!(data, Cow::Borrowed(_)),
        Message::WeightSync(w) => matches!(w.values, Cow::Borrowed(_)),
        _ => true,
    };
    assert!(borrowed, "{name}: decode copied the values");

    let batch = (1_000_000 / frame_len as u64).clamp(1, 1000);
    let payload = &frame.bytes()[HEADER_LEN..];
    let crc = measure(batch, budget, || {
        black_box(crc32fast::hash(black_box(payload)));
    });
    let mut dst = AlignedBuf::zeroed(frame_len);
    let memcpy = measure(batch, budget, || {
        dst.bytes_mut().copy_from_slice(black_box(frame.bytes()));
        black_box(dst.bytes());
    });
    let mut out: Vec<u8> = Vec::with_capacity(frame_len);
    let encode = measure(batch, budget, || {
        out.clear();
        black_box(encode_frame(black_box(message), 7, &mut out).unwrap());
    });
    // Into a plain slice, as a batching sender encodes into its block: the generic encoder,
    // and for ForwardData the layer-frame encoder the sender uses.
    let mut block = AlignedBuf::zeroed(frame_len);
    let into_slice = measure(batch, budget, || {
        let mut dst = block.bytes_mut();
        black_box(encode_frame(black_box(message), 7, &mut dst).unwrap());
    });
    let layer = encode_layer_frame(message, 7, block.bytes_mut()).map(|_| {
        measure(batch, budget, || {
            black_box(encode_layer_frame(black_box(message), 7, block.bytes_mut()).unwrap());
        })
    });
    let decode = measure(batch, budget, || {
        let (frame, used) = decode_frame(black_box(frame.bytes()), max_payload)
            .unwrap()
            .unwrap();
        black_box((&frame, used));
    });

    println!("{name} ({frame_len} bytes a frame)");
    print_row("crc32", &crc, frame_len - HEADER_LEN, &crc, &memcpy);
    print_row("memcpy", &memcpy, frame_len, &crc, &memcpy);
    print_row("encode", &encode, frame_len, &crc, &memcpy);
    print_row("to [u8]", &into_slice, frame_len, &crc, &memcpy);
    if let Some(layer) = &layer {
        print_row("layer", layer, frame_len, &crc, &memcpy);
    }
    print_row("decode", &decode, frame_len, &crc, &memcpy);
}

fn weight_sync(values: &[f32]) -> Message<'_> {
    let rows = 1024u32;
    let cols = (values.len() as u32).div_ceil(rows);
    Message::WeightSync(WeightSync {
        layer_id: 1,
        mode: SyncMode::Average,
        rows,
        cols,
        offset: 0,
        sample_count: 1000,
        values: Cow::Borrowed(values),
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = Duration::from_millis(if quick { 150 } else { 1000 });

    println!("nnp codec bench ({})", if quick { "quick" } else { "full" });
    println!("ratios are p50 time of the baseline / p50 time of the row (higher is faster)");

    let forward: Vec<f32> = (0..100).map(|i| i as f32 * 0.01).collect();
    bench_message(
        "ForwardData, 100 f32",
        &Message::ForwardData {
            layer_id: 1,
            data: Cow::Borrowed(&forward),
        },
        budget,
    );
    let mib: Vec<f32> = (0..(1 << 20) / 4).map(|i| (i as f32).sin()).collect();
    bench_message("WeightSync, 1 MiB of f32", &weight_sync(&mib), budget);
    let mib16: Vec<f32> = (0..(16 << 20) / 4).map(|i| (i as f32).cos()).collect();
    bench_message(
        "WeightSync, 16 MiB of f32",
        &weight_sync(&mib16),
        budget * 2,
    );

    let mut header = Vec::new();
    encode_frame(
        &Message::Heartbeat {
            timestamp_ns: 1,
            reply: false,
        },
        0,
        &mut header,
    )
    .unwrap();
    let header = AlignedBuf::from_bytes(&header);
    let parse = measure(1000, budget, || {
        let h = Header::ref_from_buf(black_box(header.bytes())).unwrap();
        black_box(h.validate(black_box(16 << 20)).unwrap() == MsgType::Heartbeat);
    });
    println!(
        "Header parse + validate: p50 {:.2} ns/op, p99 {:.2} ns/op (batches of 1000; {:.0} M ops/s)",
        parse.p50_ns(),
        parse.p99_ns(),
        parse.ops_per_s() / 1e6
    );
}
