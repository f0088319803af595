//! The `nnp` command line: run nodes, send messages, measure, and read NNP bytes.
//!
//! A client of the `nnp` library, built with its `cli` feature. This file parses the arguments,
//! sets up logging and dispatches; each command lives in the module of its name.

mod bench;
mod capture;
mod dataset;
mod decode;
mod decode_capture;
mod demo;
mod demo_ensemble;
mod demo_federated;
mod demo_pipeline;
mod describe;
mod encode;
mod ensemble;
mod explain;
mod federated;
mod hebbian;
mod hex;
mod keys;
mod limits;
mod pipeline;
mod report;
mod send;
mod serve;
mod stats;
mod tls;

use std::borrow::Cow;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser as _};
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
    /// it found garbage or a truncated frame. A packet capture (pcap or pcapng, e.g. from
    /// tcpdump or Wireshark) is read per TCP connection: the frames of both directions, with
    /// sequence gaps, replays, checksum errors and lost bytes flagged (exit status 1 if any),
    /// and the capabilities each handshake agreed.
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
        /// Message type.
        #[arg(long = "type", value_enum)]
        kind: Kind,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        control: ControlArgs,
        /// Sequence number.
        #[arg(long, default_value_t = 0)]
        sequence: u64,
    },
    /// Run a node: listen, apply what peers send, answer ForwardData with the output. Runs
    /// until SIGINT or SIGTERM (a second one stops at once), then says goodbye to every peer,
    /// writes --save and prints a summary.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port (0: any free port; the chosen one is printed).
        #[arg(long, default_value_t = 7878)]
        port: u16,
        /// Neuron counts, input first, comma-separated (at least two, none zero).
        #[arg(
            long,
            value_name = "N,N,...",
            value_delimiter = ',',
            default_value = "64,32,10"
        )]
        layers: Vec<usize>,
        /// Hebbian rule applied to HebbianData.
        #[arg(long, default_value = "oja", ignore_case = true, value_parser = mode_parser())]
        mode: HebbianLearningMode,
        /// Learning rate.
        #[arg(long, default_value_t = 0.1)]
        learning_rate: f32,
        /// Capabilities offered to peers, comma-separated (a session agrees on what both
        /// offer).
        #[arg(long, value_name = "NAME,...", value_delimiter = ',', default_value = "all",
              ignore_case = true, value_parser = capability_parser())]
        capabilities: Vec<u32>,
        /// Node name.
        #[arg(long, default_value = "nnp-serve")]
        name: String,
        /// Exit after handling this many data messages.
        #[arg(long)]
        max_messages: Option<usize>,
        /// Start from this weights file (docs/WEIGHTS.md) instead of a fresh network; its
        /// layer sizes replace `--layers`.
        #[arg(long, value_name = "PATH")]
        weights: Option<std::path::PathBuf>,
        /// Write the network to this weights file when the server stops (checked at start:
        /// its directory must exist and be writable).
        #[arg(long, value_name = "PATH")]
        save: Option<std::path::PathBuf>,
        /// Serve the node's metrics in Prometheus' text format at http://ADDR/metrics (e.g.
        /// 127.0.0.1:9100; port 0 picks one, printed at start). Off unless given.
        #[arg(long, value_name = "HOST:PORT")]
        metrics: Option<String>,
        #[command(flatten)]
        limits: limits::LimitArgs,
        #[command(flatten)]
        auth: keys::AuthArgs,
        #[command(flatten)]
        tls: tls::TlsServerArgs,
    },
    /// Read a node's metrics (`nnp serve --metrics ADDR`) and print them as tables: traffic by
    /// message type, errors, refusals, connections, round trips, and each peer.
    Stats {
        /// The metrics endpoint: HOST:PORT, or a URL (http://HOST:PORT/metrics).
        addr: String,
        /// Seconds to wait for the endpoint.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Connect to a node, send one data message, and report what came of it: ForwardData waits
    /// for the answer; the others wait up to 1 s (or --timeout if less) for a refusal. Exits
    /// non-zero if the node refused the message.
    Send {
        /// The node, host:port.
        #[arg(long, value_name = "HOST:PORT")]
        to: String,
        /// Message type (the session sends the control messages itself).
        #[arg(long = "type", value_enum)]
        kind: DataKind,
        #[command(flatten)]
        data: DataArgs,
        /// Seconds to wait for the connection, for ForwardData's answer, and (1 s at most) for
        /// a refusal of the other types.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
        #[command(flatten)]
        auth: keys::AuthArgs,
        #[command(flatten)]
        tls: tls::TlsClientArgs,
    },
    /// Three nodes on loopback learn the digits together over NNP, and report the traffic
    /// (with --json, the report goes to standard error and a JSON summary to standard output).
    Demo {
        /// One pattern alone, with progress and a closing table: federated (a coordinator
        /// and three workers), pipeline (three stages holding one layer each) or ensemble
        /// (three members asked together). --rounds sets its rounds or epochs.
        #[arg(value_enum)]
        pattern: Option<DemoPattern>,
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
    /// Federated learning on the digits, one role per process: a coordinator holding the
    /// held-out images and N workers, each training on its own shard and sending only weights.
    Federated {
        #[command(subcommand)]
        role: FederatedRole,
    },
    /// One peer of a federated Hebbian mesh on the digits: holds the digits of --classes,
    /// shares the Hebbian correlations of its shard with --peers others each round (never a
    /// sample), and prints how close its layer came to the first principal component of all
    /// the digits, beside its shard alone (with --json, a JSON object per line).
    Hebbian {
        /// Address to listen on (port 0: any free port, printed at start).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
        listen: String,
        /// Peers started before this one, to connect to (repeatable).
        #[arg(long, value_name = "HOST:PORT")]
        connect: Vec<String>,
        /// Other peers in the mesh: rounds start once this many are connected.
        #[arg(long, default_value_t = 2)]
        peers: usize,
        /// The digit classes this peer holds.
        #[arg(long, value_name = "N,N,...", value_delimiter = ',', required = true)]
        classes: Vec<usize>,
        /// Units in the layer (Oja for one, Sanger for more).
        #[arg(long, default_value_t = 1)]
        units: usize,
        /// Rounds of exchange.
        #[arg(long, default_value_t = 150)]
        rounds: usize,
        /// The base learning rate every peer shares.
        #[arg(long, default_value_t = 0.5)]
        learning_rate: f32,
        /// This peer's share of all the peers' samples [default: its digits / all digits].
        #[arg(long)]
        share: Option<f32>,
        /// The digits data [default: data/digits.csv.gz].
        #[arg(long, value_name = "PATH")]
        data: Option<std::path::PathBuf>,
        #[command(flatten)]
        auth: keys::AuthArgs,
    },
    /// A pipeline on the digits, one role per process: stages each holding some of the
    /// network's layers, and a driver holding the data that runs the training steps.
    Pipeline {
        #[command(subcommand)]
        role: PipelineRole,
    },
    /// Ask member nodes (`nnp serve --weights FILE`) to classify the held-out digits, combine
    /// their answers, and print the ensemble's accuracy beside each member's (with --json, a
    /// JSON object per line). `nnp ensemble train` makes a member's weights file.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Ensemble {
        #[command(subcommand)]
        train: Option<EnsembleTrain>,
        /// The members, HOST:PORT, comma-separated.
        #[arg(
            long,
            value_name = "HOST:PORT,...",
            value_delimiter = ',',
            required = true
        )]
        members: Vec<String>,
        /// A request's deadline: a member whose answer is not in by then is left out of it.
        #[arg(long, default_value_t = 500)]
        deadline_ms: u64,
        /// How the answers are combined: mean (of probabilities) or vote (majority).
        #[arg(long, default_value = "mean", value_parser = ["mean", "vote"])]
        combine: String,
        /// Rows per request.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// The share of the data evaluated (seeded, stratified, as `nnp ensemble train` holds
        /// it out; 1: every row).
        #[arg(long, default_value_t = 0.25)]
        held_out: f64,
        /// The digits data [default: data/digits.csv.gz].
        #[arg(long, value_name = "PATH")]
        data: Option<std::path::PathBuf>,
        #[command(flatten)]
        auth: keys::AuthArgs,
        #[command(flatten)]
        tls: tls::TlsClientArgs,
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
        #[arg(long, value_name = "HOST:PORT")]
        to: Option<String>,
        #[command(flatten)]
        auth: keys::AuthArgs,
        #[command(flatten)]
        tls: tls::TlsClientArgs,
    },
    /// Make a node key for peer authentication: writes an Ed25519 private key (PKCS#8 PEM,
    /// readable by its owner only) to --out and its public key to OUT.pub, and prints the
    /// public key, the line peers put in their --allowed-peers files. With --psk, a key the
    /// whole cluster shares (--psk-file) instead.
    Keygen {
        /// Where to write the private key (an existing file is not overwritten).
        #[arg(long, value_name = "PATH")]
        out: std::path::PathBuf,
        /// Make a shared key (64 hex digits) instead of a key pair.
        #[arg(long)]
        psk: bool,
    },
}

#[derive(Subcommand)]
enum EnsembleTrain {
    /// Trains a member on its shard of the digits (the held-out quarter `nnp ensemble`
    /// evaluates on is never used) and writes its weights file, for `nnp serve --weights`.
    Train {
        /// This member's shard of the training data, K of N (from 1).
        #[arg(long, value_name = "K/N", value_parser = federated::parse_shard)]
        shard: (usize, usize),
        /// Where to write the weights.
        #[arg(long, value_name = "PATH")]
        save: std::path::PathBuf,
        /// Training epochs.
        #[arg(long, default_value_t = 20)]
        epochs: usize,
        /// The initial weights' seed [default: 100 + K].
        #[arg(long)]
        seed: Option<u64>,
        /// Neuron counts, input first (64 inputs and 10 outputs for the digits).
        #[arg(
            long,
            value_name = "N,N,...",
            value_delimiter = ',',
            default_value = "64,32,10"
        )]
        layers: Vec<usize>,
        /// The digits data [default: data/digits.csv.gz].
        #[arg(long, value_name = "PATH")]
        data: Option<std::path::PathBuf>,
    },
}

/// The patterns `nnp demo` can run alone.
#[derive(Clone, Copy, ValueEnum)]
enum DemoPattern {
    /// A coordinator and three workers on label-skewed shards.
    Federated,
    /// Three stages on loopback, one layer each, trained by a driver.
    Pipeline,
    /// Three members trained on their own thirds, asked together.
    Ensemble,
}

#[derive(Subcommand)]
enum PipelineRole {
    /// Holds weight layers --range of the network and serves drivers until killed.
    Stage {
        /// Address to listen on (port 0: any free port, printed at start).
        #[arg(long, value_name = "HOST:PORT")]
        listen: String,
        /// The weight layers this stage holds, A..B (from 0, B not included).
        #[arg(long, value_name = "A..B", value_parser = pipeline::parse_range)]
        range: std::ops::Range<usize>,
        /// Neuron counts of the whole network, input first.
        #[arg(
            long,
            value_name = "N,N,...",
            value_delimiter = ',',
            default_value = "64,32,16,10"
        )]
        layers: Vec<usize>,
        /// The initial weights' seed (the same in every stage and the driver).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// SGD's step size.
        #[arg(long, default_value_t = 0.05)]
        learning_rate: f32,
        /// SGD's momentum.
        #[arg(long, default_value_t = 0.9)]
        momentum: f32,
        #[command(flatten)]
        auth: keys::AuthArgs,
        #[command(flatten)]
        tls: tls::TlsServerArgs,
    },
    /// Connects to the stages in order and trains on the digits, printing a line per epoch
    /// and a closing table (with --json, only JSON lines). A stage that dies is reported with
    /// the step it failed, and training resumes once it is back.
    Driver {
        /// The stages, HOST:PORT, comma-separated, first stage first.
        #[arg(
            long,
            value_name = "HOST:PORT,...",
            value_delimiter = ',',
            required = true
        )]
        stages: Vec<String>,
        /// Neuron counts of the whole network, input first (as the stages were given).
        #[arg(
            long,
            value_name = "N,N,...",
            value_delimiter = ',',
            default_value = "64,32,16,10"
        )]
        layers: Vec<usize>,
        /// The initial weights' seed (as the stages were given).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Passes over the training data.
        #[arg(long, default_value_t = 20)]
        epochs: usize,
        /// Stop after this many steps.
        #[arg(long)]
        steps: Option<u64>,
        /// Samples per step.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Micro-batches per step.
        #[arg(long, default_value_t = 4)]
        micro_batches: usize,
        /// gpipe or 1f1b.
        #[arg(long, default_value = "1f1b", value_parser = ["gpipe", "1f1b"])]
        schedule: String,
        /// SGD's step size, for --compare-local (as the stages were given).
        #[arg(long, default_value_t = 0.05)]
        learning_rate: f32,
        /// SGD's momentum, for --compare-local (as the stages were given).
        #[arg(long, default_value_t = 0.9)]
        momentum: f32,
        /// Also train the whole network in this process on the same batches and report the
        /// largest difference between the two sets of weights.
        #[arg(long)]
        compare_local: bool,
        /// How long to wait for a lost stage to come back.
        #[arg(long, default_value_t = 30_000)]
        resume_timeout_ms: u64,
        /// The digits data [default: data/digits.csv.gz].
        #[arg(long, value_name = "PATH")]
        data: Option<std::path::PathBuf>,
        #[command(flatten)]
        auth: keys::AuthArgs,
        #[command(flatten)]
        tls: tls::TlsClientArgs,
    },
}

#[derive(Subcommand)]
enum FederatedRole {
    /// Waits for --workers, runs --rounds, evaluates the model on held-out digits after each
    /// round, and prints a closing table (with --json, only JSON lines).
    Coordinator {
        /// Address to listen on (port 0: any free port, printed at start).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7979")]
        listen: String,
        /// Workers to wait for before the first round.
        #[arg(long, default_value_t = 3)]
        workers: usize,
        /// Workers a round needs; with fewer answers in time the weights are kept.
        #[arg(long, default_value_t = 1)]
        min_workers: usize,
        /// The share of the connected workers asked each round (at least --min-workers);
        /// the workers take turns.
        #[arg(long, default_value_t = 1.0, value_parser = federated::parse_fraction)]
        fraction: f64,
        /// Rounds to run.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// A round's deadline: a worker whose weights are not in by then is left out of it.
        #[arg(long, default_value_t = 10_000)]
        deadline_ms: u64,
        /// Pause between rounds (gives restarted workers time to rejoin).
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
        /// How the workers' weights are combined.
        #[arg(long, default_value = "fedavg", value_parser = ["fedavg", "median", "trimmed-mean", "krum"])]
        aggregator: String,
        /// Neuron counts, input first (64 inputs and 10 outputs for the digits).
        #[arg(
            long,
            value_name = "N,N,...",
            value_delimiter = ',',
            default_value = "64,32,10"
        )]
        layers: Vec<usize>,
        /// The digits data [default: data/digits.csv.gz].
        #[arg(long, value_name = "PATH")]
        data: Option<std::path::PathBuf>,
        #[command(flatten)]
        auth: keys::AuthArgs,
    },
    /// Connects to the coordinator and trains on its shard every round, until the coordinator
    /// leaves.
    Worker {
        /// The coordinator, host:port.
        #[arg(long, value_name = "HOST:PORT")]
        connect: String,
        /// This worker's shard of the training data, K of N (from 1).
        #[arg(long, value_name = "K/N", value_parser = federated::parse_shard)]
        shard: (usize, usize),
        /// Deal the data by label: each shard holds mostly its own classes.
        #[arg(long)]
        noniid: bool,
        /// Local epochs per round.
        #[arg(long, default_value_t = 2)]
        epochs: usize,
        /// FedProx's proximal term: keeps local training near the round's global weights
        /// (0: plain local training).
        #[arg(long, default_value_t = 0.0)]
        proximal_mu: f32,
        /// Send garbage instead of the trained weights: `scale` (x -4) or `random`.
        #[arg(long, value_name = "KIND", value_parser = federated::parse_poison)]
        poison: Option<nnp::patterns::federated::Poison>,
        /// Neuron counts, as the coordinator's.
        #[arg(
            long,
            value_name = "N,N,...",
            value_delimiter = ',',
            default_value = "64,32,10"
        )]
        layers: Vec<usize>,
        /// The digits data [default: data/digits.csv.gz].
        #[arg(long, value_name = "PATH")]
        data: Option<std::path::PathBuf>,
        #[command(flatten)]
        auth: keys::AuthArgs,
        #[command(flatten)]
        tls: tls::TlsClientArgs,
    },
}

/// `--mode`: the library's Hebbian rules by name, so the help lists exactly what is accepted.
fn mode_parser() -> impl clap::builder::TypedValueParser<Value = HebbianLearningMode> {
    let values = HebbianLearningMode::ALL.map(|mode| {
        let help = match mode {
            HebbianLearningMode::Classic => "plain Hebb with row normalisation",
            HebbianLearningMode::Oja => "Oja's rule: rows tend to the first principal component",
            HebbianLearningMode::Sanger => "Sanger's rule: rows tend to the principal components",
            HebbianLearningMode::Bcm => "Bienenstock-Cooper-Munro, with a sliding threshold",
            HebbianLearningMode::Competitive => "winner-take-all: rows become cluster prototypes",
            HebbianLearningMode::AntiHebbian => "decorrelates the outputs",
            _ => "",
        };
        PossibleValue::new(mode.name()).help(help)
    });
    PossibleValuesParser::new(values).map(|name| {
        name.parse::<HebbianLearningMode>()
            .expect("the parser only lets the rules' own names through")
    })
}

/// The capabilities of protocol version 1: the command line's name, the protocol's, and what
/// offering it means.
const CAPABILITIES: [(&str, &str, &str); 8] = [
    (
        "forward-propagation",
        "FORWARD_PROPAGATION",
        "runs ForwardData through the network",
    ),
    (
        "backpropagation",
        "BACKPROPAGATION",
        "applies BackwardData gradients",
    ),
    (
        "hebbian-learning",
        "HEBBIAN_LEARNING",
        "integrates HebbianData correlations",
    ),
    ("weight-sync", "WEIGHT_SYNC", "takes WeightSync parameters"),
    (
        "correlation-analysis",
        "CORRELATION_ANALYSIS",
        "analyses correlations between layers",
    ),
    ("multi-layer", "MULTI_LAYER", "holds more than one layer"),
    ("real-time", "REAL_TIME", "answers within real-time bounds"),
    (
        "compression",
        "COMPRESSION",
        "understands compressed payloads",
    ),
];

/// `--capabilities`: each name (lower case with dashes, or the protocol's UPPER_CASE) becomes its
/// bit; `all` is every capability of protocol version 1.
fn capability_parser() -> impl clap::builder::TypedValueParser<Value = u32> {
    use nnp::wire::capabilities::{names, ALL};
    let mut values: Vec<PossibleValue> = CAPABILITIES
        .iter()
        .map(|&(name, protocol, help)| PossibleValue::new(name).alias(protocol).help(help))
        .collect();
    values.push(PossibleValue::new("all").help("every capability above"));
    PossibleValuesParser::new(values).map(|name| {
        let wanted = name.to_ascii_uppercase().replace('-', "_");
        if wanted == "ALL" {
            return ALL;
        }
        (0..32)
            .map(|i| 1u32 << i)
            .find(|&bit| names(bit).next() == Some(wanted.as_str()))
            .expect("the parser only lets capability names through")
    })
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum BenchKind {
    /// Ping-pong latency percentiles.
    Rtt,
    /// One-way messages per second.
    Throughput,
}

/// Every message type `nnp encode` builds.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Kind {
    /// ForwardData: activations entering --layer (--data).
    Forward,
    /// BackwardData: a layer's flat gradient (--data).
    Backward,
    /// HebbianData: a --rows x --cols correlation matrix (--data).
    Hebbian,
    /// WeightSync: --rows x --cols parameters from --offset (--data).
    WeightSync,
    /// Heartbeat (--timestamp).
    Heartbeat,
    /// Disconnect (--code is the reason, --text).
    Disconnect,
    /// Error (--code, --text).
    Error,
}

/// The data messages, the only ones `nnp send` sends (the session sends the others itself).
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum DataKind {
    /// ForwardData: activations entering --layer (--data); waits for the node's answer.
    Forward,
    /// BackwardData: a layer's flat gradient, weights then biases (--data).
    Backward,
    /// HebbianData: a --rows x --cols correlation matrix (--data).
    Hebbian,
    /// WeightSync: --rows x --cols parameters from --offset (--data).
    WeightSync,
}

impl From<DataKind> for Kind {
    fn from(kind: DataKind) -> Kind {
        match kind {
            DataKind::Forward => Kind::Forward,
            DataKind::Backward => Kind::Backward,
            DataKind::Hebbian => Kind::Hebbian,
            DataKind::WeightSync => Kind::WeightSync,
        }
    }
}

/// The fields of a data message given on the command line.
#[derive(clap::Args, Clone)]
pub(crate) struct DataArgs {
    /// Layer id.
    #[arg(long, default_value_t = 0)]
    layer: u16,
    /// f32 values, comma-separated.
    #[arg(
        long,
        value_name = "X,X,...",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
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
}

/// The fields of a control message given on the command line (`nnp encode` only).
#[derive(clap::Args, Clone, Default)]
pub(crate) struct ControlArgs {
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

/// The message that `kind` and the fields describe.
pub(crate) fn message<'a>(kind: Kind, args: &'a DataArgs, control: &'a ControlArgs) -> Message<'a> {
    let data = Cow::Borrowed(&args.data[..]);
    match kind {
        Kind::Forward => Message::ForwardData {
            layer_id: args.layer,
            data,
        },
        Kind::Backward => Message::BackwardData {
            layer_id: args.layer,
            data,
        },
        Kind::Hebbian => Message::HebbianData {
            layer_id: args.layer,
            learning_rate: args.learning_rate,
            rows: args.rows,
            cols: args.cols,
            correlations: data,
        },
        Kind::WeightSync => Message::WeightSync(WeightSync {
            layer_id: args.layer,
            mode: if args.average {
                SyncMode::Average
            } else {
                SyncMode::Replace
            },
            rows: args.rows,
            cols: args.cols,
            offset: args.offset,
            sample_count: args.samples,
            values: data,
        }),
        Kind::Heartbeat => Message::Heartbeat {
            timestamp_ns: control.timestamp,
            reply: false,
        },
        Kind::Disconnect => Message::Disconnect {
            reason: DisconnectReason(control.code),
            message: Cow::Borrowed(&control.text),
        },
        Kind::Error => Message::Error {
            code: ErrorCode(control.code),
            message: Cow::Borrowed(&control.text),
        },
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
        Command::Encode {
            kind,
            data,
            control,
            sequence,
        } => encode::encode(cli.json, &message(*kind, data, control), *sequence),
        Command::Bench {
            what,
            count,
            values,
            busy_poll,
            to,
            auth,
            tls,
        } => bench::bench(
            cli.json,
            *what,
            *count,
            *values,
            *busy_poll,
            to.as_deref(),
            bench::ClientSecurity {
                auth: auth.config()?,
                tls,
            },
        ),
        Command::Keygen { out, psk } => keys::keygen(cli.json, out, *psk),
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
            metrics,
            limits,
            auth,
            tls,
        } => serve::serve(
            cli.json,
            serve::ServeArgs {
                host,
                port: *port,
                layers,
                mode: *mode,
                learning_rate: *learning_rate,
                capabilities: capabilities.iter().fold(0, |all, bit| all | bit),
                name,
                max_messages: *max_messages,
                weights: weights.as_deref(),
                save: save.as_deref(),
                metrics: metrics.as_deref(),
                limits,
                auth: auth.config()?,
                tls,
            },
        ),
        Command::Stats { addr, timeout } => {
            let timeout = Duration::try_from_secs_f64(*timeout)
                .map_err(|_| format!("--timeout {timeout}: not a number of seconds >= 0"))?;
            stats::stats(cli.json, addr, timeout)
        }
        Command::Send {
            to,
            kind,
            data,
            timeout,
            auth,
            tls,
        } => {
            let timeout = Duration::try_from_secs_f64(*timeout)
                .map_err(|_| format!("--timeout {timeout}: not a number of seconds >= 0"))?;
            send::send(cli.json, to, *kind, data, timeout, auth.config()?, tls)
        }
        Command::Demo {
            pattern,
            quick,
            rounds,
            data,
        } => {
            // Each pattern's own run, longer unless --quick; without one, all of them briefly.
            let rounds_or = |quick_rounds, full_rounds| {
                rounds.unwrap_or(if *quick { quick_rounds } else { full_rounds })
            };
            let data = data.as_deref();
            match pattern {
                Some(DemoPattern::Pipeline) => {
                    demo_pipeline::demo_pipeline(cli.json, rounds_or(3, 20), data)
                }
                Some(DemoPattern::Federated) => {
                    demo_federated::demo_federated(cli.json, rounds_or(3, 10), data)
                }
                Some(DemoPattern::Ensemble) => {
                    demo_ensemble::demo_ensemble(cli.json, rounds_or(5, 20), data)
                }
                None => demo::demo(cli.json, *quick, *rounds, data),
            }
        }
        Command::Ensemble {
            train:
                Some(EnsembleTrain::Train {
                    shard,
                    save,
                    epochs,
                    seed,
                    layers,
                    data,
                }),
            ..
        } => ensemble::train(
            cli.json,
            &ensemble::TrainArgs {
                shard: *shard,
                save,
                epochs: *epochs,
                seed: *seed,
                layers,
                data: data.as_deref(),
            },
        ),
        Command::Ensemble {
            train: None,
            members,
            deadline_ms,
            combine,
            batch,
            held_out,
            data,
            auth,
            tls,
        } => ensemble::ensemble(
            cli.json,
            &ensemble::EnsembleArgs {
                members,
                deadline: Duration::from_millis(*deadline_ms),
                combine: combine.parse()?,
                batch: *batch,
                held_out: *held_out,
                data: data.as_deref(),
                auth: auth.config()?,
                tls,
            },
        ),
        Command::Hebbian {
            listen,
            connect,
            peers,
            classes,
            units,
            rounds,
            learning_rate,
            share,
            data,
            auth,
        } => hebbian::run(
            cli.json,
            &hebbian::HebbianArgs {
                listen,
                connect,
                peers: *peers,
                classes,
                units: *units,
                rounds: *rounds,
                learning_rate: *learning_rate,
                share: *share,
                data: data.as_deref(),
                auth: auth.config()?,
            },
        ),
        Command::Pipeline { role } => match role {
            PipelineRole::Stage {
                listen,
                range,
                layers,
                seed,
                learning_rate,
                momentum,
                auth,
                tls,
            } => pipeline::stage(
                cli.json,
                &pipeline::StageArgs {
                    listen,
                    layers,
                    range: range.clone(),
                    seed: *seed,
                    learning_rate: *learning_rate,
                    momentum: *momentum,
                    auth: auth.config()?,
                    tls,
                },
            ),
            PipelineRole::Driver {
                stages,
                layers,
                seed,
                epochs,
                steps,
                batch,
                micro_batches,
                schedule,
                learning_rate,
                momentum,
                compare_local,
                resume_timeout_ms,
                data,
                auth,
                tls,
            } => pipeline::driver(
                cli.json,
                &pipeline::DriverArgs {
                    stages,
                    layers,
                    seed: *seed,
                    epochs: *epochs,
                    steps: *steps,
                    batch: *batch,
                    micro_batches: *micro_batches,
                    schedule: schedule.parse()?,
                    learning_rate: *learning_rate,
                    momentum: *momentum,
                    compare_local: *compare_local,
                    resume_timeout: Duration::from_millis(*resume_timeout_ms),
                    data: data.as_deref(),
                    auth: auth.config()?,
                    tls,
                },
            ),
        },
        Command::Federated { role } => match role {
            FederatedRole::Coordinator {
                listen,
                workers,
                min_workers,
                fraction,
                rounds,
                deadline_ms,
                pause_ms,
                aggregator,
                layers,
                data,
                auth,
            } => federated::coordinator(
                cli.json,
                &federated::CoordinatorArgs {
                    listen,
                    workers: *workers,
                    min_workers: *min_workers,
                    fraction: *fraction,
                    rounds: *rounds,
                    deadline: Duration::from_millis(*deadline_ms),
                    pause: Duration::from_millis(*pause_ms),
                    aggregator: aggregator.parse()?,
                    layers,
                    data: data.as_deref(),
                    auth: auth.config()?,
                },
            ),
            FederatedRole::Worker {
                connect,
                shard,
                noniid,
                epochs,
                proximal_mu,
                poison,
                layers,
                data,
                auth,
                tls,
            } => federated::worker(
                cli.json,
                &federated::WorkerArgs {
                    connect,
                    shard: *shard,
                    noniid: *noniid,
                    epochs: *epochs,
                    proximal_mu: *proximal_mu,
                    poison: *poison,
                    layers,
                    data: data.as_deref(),
                    auth: auth.config()?,
                    tls,
                },
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line's capability names are the protocol's, each for its own bit.
    #[test]
    fn capability_names_match_the_protocol() {
        for (i, (name, protocol, _)) in CAPABILITIES.iter().enumerate() {
            let bit = 1u32 << i;
            assert_eq!(nnp::wire::capabilities::names(bit).next(), Some(*protocol));
            assert_eq!(protocol.to_ascii_lowercase().replace('_', "-"), *name);
        }
        let every = CAPABILITIES.len() as u32;
        assert_eq!(nnp::wire::capabilities::ALL, (1 << every) - 1);
    }
}
