//! The `nnp` command line: run nodes, send messages, measure, and read NNP bytes.

use std::borrow::Cow;
use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use nnp::cli::inspect::{from_hex, scan, to_hex, to_json, Found};
use nnp::net::{new_rtt_histogram, Engine, EngineConfig, EngineHandle, NetEvent};
use nnp::nn::HebbianLearningMode;
use nnp::wire::{
    encode_frame, frame_len, DisconnectReason, ErrorCode, Message, SyncMode, WeightSync,
    DEFAULT_MAX_PAYLOAD,
};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "nnp",
    version,
    about = "NNP: the Neural Network Protocol engine"
)]
struct Cli {
    /// Log filter (env_logger syntax, e.g. `debug` or `nnp=trace`); RUST_LOG also works.
    #[arg(long, global = true)]
    log: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode raw NNP bytes (a file or standard input) and print every frame.
    Decode {
        /// File to read; standard input if absent.
        file: Option<std::path::PathBuf>,
        /// The input is hex text rather than raw bytes.
        #[arg(long)]
        hex: bool,
        /// Largest payload to accept.
        #[arg(long, default_value_t = DEFAULT_MAX_PAYLOAD)]
        max_payload: u32,
    },
    /// Build one frame from arguments and print it as hex.
    Encode {
        #[command(flatten)]
        message: MessageArgs,
        /// Sequence number.
        #[arg(long, default_value_t = 0)]
        sequence: u64,
    },
    /// Run a node: listen, apply what peers send, answer ForwardData with the output.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port (0: any free port; the chosen one is printed).
        #[arg(long, default_value_t = 7878)]
        port: u16,
        /// Neuron counts, input first.
        #[arg(long, value_delimiter = ',', default_values_t = vec![64usize, 32, 10])]
        layers: Vec<usize>,
        /// Hebbian rule.
        #[arg(long, default_value = "oja", value_parser = clap::value_parser!(HebbianLearningMode))]
        mode: HebbianLearningMode,
        /// Learning rate.
        #[arg(long, default_value_t = 0.1)]
        learning_rate: f32,
        /// Capabilities offered (names, comma-separated, or `all`).
        #[arg(long, value_delimiter = ',', default_values_t = vec![String::from("all")])]
        capabilities: Vec<String>,
        /// Node name.
        #[arg(long, default_value = "nnp-serve")]
        name: String,
        /// Exit after handling this many data messages.
        #[arg(long)]
        max_messages: Option<usize>,
        /// Start from this weights file (docs/WEIGHTS.md) instead of a fresh network; its
        /// layer sizes replace `--layers`.
        #[arg(long)]
        weights: Option<std::path::PathBuf>,
        /// Write the network to this weights file when the server stops.
        #[arg(long)]
        save: Option<std::path::PathBuf>,
    },
    /// Connect to a node, send one message, and print the reply (ForwardData gets one).
    Send {
        /// The node, host:port.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        message: MessageArgs,
        /// Seconds to wait for a reply.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Three nodes on loopback learn the digits together over NNP, and report the traffic.
    Demo {
        /// A short run (CI uses it).
        #[arg(long)]
        quick: bool,
        /// Federated rounds (default 10, or 3 with --quick).
        #[arg(long)]
        rounds: Option<usize>,
    },
    /// Measure round trips or throughput over loopback (against a self-spawned echo node).
    Bench {
        /// What to measure.
        #[arg(value_enum)]
        what: BenchKind,
        /// Messages to send.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// f32 values per ForwardData.
        #[arg(long, default_value_t = 100)]
        values: usize,
        /// Spin instead of sleeping while waiting.
        #[arg(long)]
        busy_poll: bool,
        /// Measure against a running node (host:port) that answers ForwardData, such as
        /// `nnp serve`, instead of a self-spawned echo node; `--values` must match its input.
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchKind {
    /// Ping-pong latency percentiles.
    Rtt,
    /// One-way messages per second.
    Throughput,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Kind {
    Forward,
    Backward,
    Hebbian,
    WeightSync,
    Heartbeat,
    Disconnect,
    Error,
}

/// A message described on the command line.
#[derive(clap::Args, Clone)]
struct MessageArgs {
    /// Message type.
    #[arg(long = "type", value_enum)]
    kind: Kind,
    /// Layer id.
    #[arg(long, default_value_t = 0)]
    layer: u16,
    /// f32 values, comma-separated.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    data: Vec<f32>,
    /// Rows (HebbianData, WeightSync).
    #[arg(long, default_value_t = 0)]
    rows: u32,
    /// Columns (HebbianData, WeightSync).
    #[arg(long, default_value_t = 0)]
    cols: u32,
    /// Learning rate (HebbianData).
    #[arg(long, default_value_t = 0.01)]
    learning_rate: f32,
    /// First parameter carried (WeightSync).
    #[arg(long, default_value_t = 0)]
    offset: u32,
    /// Average instead of replace (WeightSync).
    #[arg(long)]
    average: bool,
    /// Sample count (WeightSync).
    #[arg(long, default_value_t = 1)]
    samples: u32,
    /// Timestamp (Heartbeat).
    #[arg(long, default_value_t = 0)]
    timestamp: u64,
    /// Code (Error) or reason (Disconnect).
    #[arg(long, default_value_t = 0)]
    code: u16,
    /// Text (Error, Disconnect).
    #[arg(long, default_value = "")]
    text: String,
}

impl MessageArgs {
    fn message(&self) -> Message<'_> {
        let data = Cow::Borrowed(&self.data[..]);
        match self.kind {
            Kind::Forward => Message::ForwardData {
                layer_id: self.layer,
                data,
            },
            Kind::Backward => Message::BackwardData {
                layer_id: self.layer,
                data,
            },
            Kind::Hebbian => Message::HebbianData {
                layer_id: self.layer,
                learning_rate: self.learning_rate,
                rows: self.rows,
                cols: self.cols,
                correlations: data,
            },
            Kind::WeightSync => Message::WeightSync(WeightSync {
                layer_id: self.layer,
                mode: if self.average {
                    SyncMode::Average
                } else {
                    SyncMode::Replace
                },
                rows: self.rows,
                cols: self.cols,
                offset: self.offset,
                sample_count: self.samples,
                values: data,
            }),
            Kind::Heartbeat => Message::Heartbeat {
                timestamp_ns: self.timestamp,
                reply: false,
            },
            Kind::Disconnect => Message::Disconnect {
                reason: DisconnectReason(self.code),
                message: Cow::Borrowed(&self.text),
            },
            Kind::Error => Message::Error {
                code: ErrorCode(self.code),
                message: Cow::Borrowed(&self.text),
            },
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"));
    if let Some(filter) = &cli.log {
        logger.parse_filters(filter);
    }
    logger.init();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nnp: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn run(cli: &Cli) -> CliResult {
    match &cli.command {
        Command::Decode {
            file,
            hex,
            max_payload,
        } => decode(cli.json, file.as_deref(), *hex, *max_payload),
        Command::Encode { message, sequence } => {
            let msg = message.message();
            let mut out = Vec::with_capacity(frame_len(&msg)?);
            encode_frame(&msg, *sequence, &mut out)?;
            if cli.json {
                println!("{}", json!({ "hex": to_hex(&out), "frame": to_json(&msg) }));
            } else {
                println!("{}", to_hex(&out));
            }
            Ok(())
        }
        Command::Bench {
            what,
            count,
            values,
            busy_poll,
            to,
        } => bench(cli.json, *what, *count, *values, *busy_poll, to.as_deref()),
        Command::Serve {
            host,
            port,
            layers,
            mode,
            learning_rate,
            capabilities,
            name,
            max_messages,
            weights,
            save,
        } => serve(
            cli.json,
            ServeArgs {
                host,
                port: *port,
                layers,
                mode: *mode,
                learning_rate: *learning_rate,
                capabilities,
                name,
                max_messages: *max_messages,
                weights: weights.as_deref(),
                save: save.as_deref(),
            },
        ),
        Command::Send {
            to,
            message,
            timeout,
        } => send(cli.json, to, message, Duration::from_secs_f64(*timeout)),
        Command::Demo { quick, rounds } => {
            let options = nnp::cli::demo::DemoOptions {
                rounds: rounds.unwrap_or(if *quick { 3 } else { 10 }),
                epochs_per_round: if *quick { 1 } else { 2 },
                progress: !cli.json && !*quick,
            };
            let report = nnp::cli::demo::run(options)?;
            if cli.json {
                println!(
                    "{}",
                    json!({
                        "accuracy_per_round": report.accuracy_per_round,
                        "remote_accuracy": report.remote_accuracy,
                        "remote_matches_local": report.remote_matches_local,
                        "frames_out": report.frames_out, "frames_in": report.frames_in,
                        "bytes_out": report.bytes_out, "bytes_in": report.bytes_in,
                        "rtt_p50_us": report.rtt_p50_us, "rtt_p99_us": report.rtt_p99_us,
                    })
                );
            }
            Ok(())
        }
    }
}

fn decode(as_json: bool, file: Option<&std::path::Path>, hex: bool, max_payload: u32) -> CliResult {
    let mut raw = Vec::new();
    match file {
        Some(path) => raw = std::fs::read(path)?,
        None => {
            std::io::stdin().read_to_end(&mut raw)?;
        }
    }
    let bytes = if hex {
        from_hex(std::str::from_utf8(&raw)?)?
    } else {
        raw
    };
    let found = scan(&bytes, max_payload);
    let mut bad = 0;
    for item in &found {
        match item {
            Found::Frame {
                offset,
                len,
                sequence,
                summary,
                json,
            } => {
                if as_json {
                    println!(
                        "{}",
                        json!({ "offset": offset, "length": len, "sequence": sequence, "message": json })
                    );
                } else {
                    println!("@{offset:<8} {len:>8} B  seq {sequence:<6} {summary}");
                }
            }
            Found::Garbage { offset, len, error } => {
                bad += 1;
                if as_json {
                    println!(
                        "{}",
                        json!({ "offset": offset, "garbage": len, "error": error })
                    );
                } else {
                    println!("@{offset:<8} {len:>8} B  GARBAGE: {error}");
                }
            }
            Found::Truncated { offset, have } => {
                bad += 1;
                if as_json {
                    println!("{}", json!({ "offset": offset, "truncated": have }));
                } else {
                    println!("@{offset:<8} {have:>8} B  TRUNCATED frame at the end of the input");
                }
            }
        }
    }
    let frames = found.len() - bad;
    if !as_json {
        println!("{frames} frames, {bad} bad regions, {} bytes", bytes.len());
    }
    Ok(())
}

/// An in-process echo node: every data frame goes back to its sender.
fn echo_node(
    busy_poll: bool,
) -> Result<(Engine, std::net::SocketAddr, std::thread::JoinHandle<()>), Box<dyn std::error::Error>>
{
    let config = EngineConfig {
        event_loops: 1,
        busy_poll,
        ..EngineConfig::default()
    };
    let (engine, handle, mut rx) = Engine::start(config)?;
    let addr = handle.listen("127.0.0.1:0")?;
    let echo = std::thread::spawn(move || {
        while let Some(event) = rx.recv() {
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
) -> Result<(Engine, EngineHandle, nnp::net::Receiver, nnp::net::ConnId), Box<dyn std::error::Error>>
{
    let config = EngineConfig {
        event_loops: 1,
        busy_poll,
        ..EngineConfig::default()
    };
    let (engine, handle, rx) = Engine::start(config)?;
    let conn = handle.connect(addr)?;
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

fn bench(
    as_json: bool,
    what: BenchKind,
    count: usize,
    values: usize,
    busy_poll: bool,
    to: Option<&str>,
) -> CliResult {
    let (server, addr, echo) = match to {
        Some(to) => {
            use std::net::ToSocketAddrs;
            let addr = to
                .to_socket_addrs()?
                .next()
                .ok_or("--to names no address")?;
            (None, addr, None)
        }
        None => {
            let (engine, addr, echo) = echo_node(busy_poll)?;
            (Some(engine), addr, Some(echo))
        }
    };
    let (client_engine, handle, mut rx, conn) = client(addr, busy_poll)?;
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
            let start = Instant::now();
            let sender = {
                let handle = handle.clone();
                let data = data.clone();
                std::thread::spawn(move || -> Result<(), String> {
                    let msg = Message::ForwardData {
                        layer_id: 0,
                        data: Cow::Borrowed(&data),
                    };
                    for _ in 0..count {
                        handle
                            .send(conn, &msg, Duration::from_secs(10))
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            };
            let mut got = 0;
            while got < count {
                match rx.recv_timeout(Duration::from_secs(10)) {
                    Some(NetEvent::Frame(_)) => got += 1,
                    Some(_) => {}
                    None => return Err(format!("only {got} of {count} echoes arrived").into()),
                }
            }
            sender.join().map_err(|_| "sender panicked")??;
            let secs = start.elapsed().as_secs_f64();
            let rate = count as f64 / secs;
            if as_json {
                println!(
                    "{}",
                    json!({ "bench": "throughput", "frame_bytes": len, "messages": count, "messages_per_s": rate, "gb_per_s": rate * len as f64 / 1e9 })
                );
            } else {
                println!(
                    "{count} ForwardData of {len} bytes echoed in {secs:.3} s: {rate:.0} messages/s each way, {:.3} GB/s",
                    rate * len as f64 / 1e9
                );
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

struct ServeArgs<'a> {
    host: &'a str,
    port: u16,
    layers: &'a [usize],
    mode: HebbianLearningMode,
    learning_rate: f32,
    capabilities: &'a [String],
    name: &'a str,
    max_messages: Option<usize>,
    weights: Option<&'a std::path::Path>,
    save: Option<&'a std::path::Path>,
}

fn parse_capabilities(names: &[String]) -> Result<u32, String> {
    let mut caps = 0;
    for name in names {
        let n = name.trim().to_ascii_uppercase().replace('-', "_");
        if n == "ALL" {
            caps |= nnp::wire::capabilities::ALL;
            continue;
        }
        let bit = (0..8)
            .map(|i| 1u32 << i)
            .find(|&b| nnp::wire::capabilities::names(b).next() == Some(n.as_str()))
            .ok_or_else(|| format!("unknown capability {name:?}"))?;
        caps |= bit;
    }
    Ok(caps)
}

fn serve(as_json: bool, args: ServeArgs<'_>) -> CliResult {
    use nnp::nn::{Activation, NeuralNetwork};
    use nnp::node::{DistributedNetwork, HandleOutcome, MessagePayload, NodeConfig};
    if args.layers.len() < 2 || args.layers.contains(&0) {
        return Err("--layers needs at least two non-zero sizes, e.g. 64,32,10".into());
    }
    let network = match args.weights {
        Some(path) => {
            let mut network = NeuralNetwork::load_weights(path)
                .map_err(|e| format!("--weights {}: {e}", path.display()))?;
            network.set_learning_rate(args.learning_rate);
            network.set_mode(args.mode);
            network
        }
        // A classifier's shape: sigmoid hidden layers, a softmax output.
        None => NeuralNetwork::builder(args.layers)
            .learning_rate(args.learning_rate)
            .mode(args.mode)
            .output_activation(Activation::Softmax)
            .build()?,
    };
    let output_layer = network.layer_count() as u16;
    let config = NodeConfig {
        capabilities: parse_capabilities(args.capabilities)?,
        ..NodeConfig::default()
    };
    let (node, rx) =
        DistributedNetwork::with_config(args.name, args.host, args.port, network, config)?;
    let addr = node.start_server()?;
    if as_json {
        println!("{}", json!({ "listening": addr.to_string() }));
    } else {
        println!("listening on {addr}");
    }
    use std::io::Write as _;
    std::io::stdout().flush()?;
    let mut handled = 0;
    for message in rx {
        match &message.payload {
            MessagePayload::PeerConnected(info) => {
                log::info!("peer {} ({}) connected", message.peer, info.name)
            }
            MessagePayload::PeerDisconnected(cause) => {
                log::info!("peer {} left: {cause}", message.peer)
            }
            _ => {
                match node.handle_message(&message) {
                    Ok(HandleOutcome::Output(output)) => {
                        if let Err(e) = node.send_forward_data(message.peer, output_layer, &output)
                        {
                            log::warn!("could not answer {}: {e}", message.peer);
                        }
                    }
                    Ok(outcome) => {
                        log::info!("{:?} from {}: {outcome:?}", message.msg_type, message.peer)
                    }
                    Err(e) => {
                        log::warn!("{:?} from {} refused: {e}", message.msg_type, message.peer)
                    }
                }
                handled += 1;
                if args.max_messages.is_some_and(|m| handled >= m) {
                    break;
                }
            }
        }
    }
    node.shutdown();
    if let Some(path) = args.save {
        node.network()
            .save_weights(path)
            .map_err(|e| format!("--save {}: {e}", path.display()))?;
        log::info!("weights written to {}", path.display());
    }
    Ok(())
}

fn send(as_json: bool, to: &str, args: &MessageArgs, timeout: Duration) -> CliResult {
    let msg = args.message();
    if msg.msg_type().required_capability().is_none() {
        return Err("only data messages (forward, backward, hebbian, weight-sync) can be sent to a node; the session sends the others itself".into());
    }
    let config = EngineConfig {
        event_loops: 1,
        ..EngineConfig::default()
    };
    let (engine, handle, mut rx) = Engine::start(config)?;
    let conn = handle.connect(to)?;
    handle.send(conn, &msg, timeout)?;
    let reply = if matches!(args.kind, Kind::Forward) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Some(NetEvent::Frame(f)) => break Some(f),
                Some(NetEvent::Disconnected { cause, .. }) => {
                    return Err(format!("the node closed the connection: {cause}").into())
                }
                Some(NetEvent::Connected { .. }) => continue,
                None => return Err("no reply before the timeout".into()),
            }
        }
    } else {
        None
    };
    match (&reply, as_json) {
        (Some(frame), true) => println!(
            "{}",
            json!({ "sent": to_json(&msg), "reply": to_json(&frame.message()?) })
        ),
        (Some(frame), false) => {
            println!("reply: {}", nnp::cli::inspect::summarize(&frame.message()?))
        }
        (None, true) => println!("{}", json!({ "sent": to_json(&msg) })),
        (None, false) => println!("sent {:?} to {to}", msg.msg_type()),
    }
    handle.close(conn, DisconnectReason::NORMAL, "nnp send done");
    std::thread::sleep(Duration::from_millis(20));
    engine.shutdown();
    Ok(())
}
