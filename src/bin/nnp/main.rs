//! The `nnp` command line: run nodes, send messages, measure, and read NNP bytes.
//!
//! A client of the `nnp` library, built with its `cli` feature. This file parses the arguments,
//! sets up logging and dispatches; each command lives in the module of its name.

mod bench;
mod dataset;
mod decode;
mod demo;
mod describe;
mod encode;
mod explain;
mod hex;
mod send;
mod serve;

use std::borrow::Cow;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use nnp::nn::HebbianLearningMode;
use nnp::wire::{DisconnectReason, ErrorCode, Message, SyncMode, WeightSync, DEFAULT_MAX_PAYLOAD};

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
    /// Decode raw NNP bytes (a file or standard input) and print every frame; exits non-zero if
    /// it found garbage or a truncated frame.
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
        /// The digits data, a gzip-compressed CSV [default: data/digits.csv.gz in the current
        /// directory, else in the source tree nnp was built from].
        #[arg(long, value_name = "PATH")]
        data: Option<std::path::PathBuf>,
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
pub(crate) enum BenchKind {
    /// Ping-pong latency percentiles.
    Rtt,
    /// One-way messages per second.
    Throughput,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Kind {
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
pub(crate) struct MessageArgs {
    /// Message type.
    #[arg(long = "type", value_enum)]
    pub(crate) kind: Kind,
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
    pub(crate) fn message(&self) -> Message<'_> {
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

/// What a command returns; an error is printed as `nnp: {error}` and the exit status is 1.
pub(crate) type CliResult = Result<(), Box<dyn std::error::Error>>;

fn run(cli: &Cli) -> CliResult {
    match &cli.command {
        Command::Decode {
            file,
            hex,
            max_payload,
        } => decode::decode(cli.json, file.as_deref(), *hex, *max_payload),
        Command::Encode { message, sequence } => encode::encode(cli.json, message, *sequence),
        Command::Bench {
            what,
            count,
            values,
            busy_poll,
            to,
        } => bench::bench(cli.json, *what, *count, *values, *busy_poll, to.as_deref()),
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
        } => serve::serve(
            cli.json,
            serve::ServeArgs {
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
        } => send::send(cli.json, to, message, Duration::from_secs_f64(*timeout)),
        Command::Demo {
            quick,
            rounds,
            data,
        } => demo::demo(cli.json, *quick, *rounds, data.as_deref()),
    }
}
