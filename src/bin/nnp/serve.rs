//! `nnp serve`: a node that listens, applies what peers send, and answers ForwardData with its
//! output, until SIGINT or SIGTERM.
//!
//! A daemon's life: the options are checked before anything listens (a `--save` that could
//! not be written fails now, not after hours of learning); one line says where it listens;
//! on SIGINT or SIGTERM it stops taking messages, says goodbye to every peer (a Disconnect
//! SHUTDOWN, after the frames already queued), writes `--save`, prints a summary and exits 0.
//! A second signal while it stops ends the process at once (exit status 1).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nnp::nn::HebbianLearningMode;
use serde_json::json;

use crate::{explain, CliResult};

/// How long the loop waits for an event before it looks at the signal flag again.
const POLL: Duration = Duration::from_millis(100);

/// `nnp serve`'s options.
pub(crate) struct ServeArgs<'a> {
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) layers: &'a [usize],
    pub(crate) mode: HebbianLearningMode,
    pub(crate) learning_rate: f32,
    /// Capability bits offered.
    pub(crate) capabilities: u32,
    pub(crate) name: &'a str,
    pub(crate) max_messages: Option<usize>,
    pub(crate) weights: Option<&'a Path>,
    pub(crate) save: Option<&'a Path>,
    /// Where to serve the metrics, if anywhere.
    pub(crate) metrics: Option<&'a str>,
    /// What peers may cost the node.
    pub(crate) limits: &'a crate::limits::LimitArgs,
    /// Peer authentication, if asked for.
    pub(crate) auth: Option<std::sync::Arc<nnp::auth::AuthConfig>>,
    /// TLS for the connections accepted.
    pub(crate) tls: &'a crate::tls::TlsServerArgs,
}

/// SIGINT and SIGTERM, as flags the serve loop reads.
struct Signals {
    /// The last stop signal received (0: none yet).
    which: Arc<AtomicUsize>,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::flag;
        let which = Arc::new(AtomicUsize::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM] {
            // The first signal sets the flags; a second one, with the flags set, exits at once
            // (registered first, so that it sees the flags as they were before this signal).
            flag::register_conditional_shutdown(signal, 1, Arc::clone(&stopping))?;
            flag::register(signal, Arc::clone(&stopping))?;
            flag::register_usize(signal, Arc::clone(&which), signal as usize)?;
        }
        Ok(Signals { which })
    }

    /// The signal's name once one has come.
    fn received(&self) -> Option<&'static str> {
        match self.which.load(Ordering::SeqCst) {
            0 => None,
            s if s == signal_hook::consts::SIGINT as usize => Some("SIGINT"),
            s if s == signal_hook::consts::SIGTERM as usize => Some("SIGTERM"),
            _ => Some("a signal"),
        }
    }
}

/// Fails, naming the path, unless a file can be written at `path`: its directory exists and
/// takes a new file (one is created beside it and removed), and `path` itself, if it exists, is
/// a file that can be opened for writing (it is not truncated here).
fn check_writable(path: &Path) -> Result<(), String> {
    let p = path.display();
    if path.is_dir() {
        return Err(format!(
            "--save {p}: is a directory; give the path of a file to write"
        ));
    }
    let Some(name) = path.file_name() else {
        return Err(format!("--save {p}: names no file"));
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "--save {p}: the directory {} does not exist",
            dir.display()
        ));
    }
    let probe = dir.join(format!(
        ".{}.nnp-serve-{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| {
            format!(
                "--save {p}: cannot create a file in {}: {}",
                dir.display(),
                explain::io(&e)
            )
        })?;
    let _ = std::fs::remove_file(&probe);
    if path.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| format!("--save {p}: cannot write it: {}", explain::io(&e)))?;
    }
    Ok(())
}

/// What the server did, for the summary.
#[derive(Default)]
struct Tally {
    peers_seen: usize,
    data_messages: usize,
    refused: usize,
    answers_sent: usize,
}

/// The capability names in `caps`, as the command line spells them.
fn capability_names(caps: u32) -> Vec<String> {
    nnp::wire::capabilities::names(caps)
        .map(|n| n.to_ascii_lowercase().replace('_', "-"))
        .collect()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub(crate) fn serve(as_json: bool, args: ServeArgs<'_>) -> CliResult {
    use nnp::nn::{Activation, NeuralNetwork};
    use nnp::node::{BatchConfig, Batcher, DistributedNetwork, NodeConfig, NodeEvent, Served};
    if let Some(path) = args.save {
        check_writable(path)?;
    }
    let network = match args.weights {
        Some(path) => {
            let mut network = NeuralNetwork::load_weights(path)
                .map_err(|e| format!("--weights: {}", explain::weights_file(path, &e)))?;
            network.set_learning_rate(args.learning_rate);
            network.set_mode(args.mode);
            network
        }
        None => {
            if args.layers.len() < 2 || args.layers.contains(&0) {
                let given: Vec<String> = args.layers.iter().map(|n| n.to_string()).collect();
                return Err(format!(
                    "--layers {}: need at least two sizes, none zero, e.g. 64,32,10",
                    given.join(",")
                )
                .into());
            }
            // A classifier's shape: sigmoid hidden layers, a softmax output.
            NeuralNetwork::builder(args.layers)
                .learning_rate(args.learning_rate)
                .mode(args.mode)
                .output_activation(Activation::Softmax)
                .build()?
        }
    };
    let sizes = network.layer_sizes().to_vec();
    let defaults = NodeConfig::default();
    let mut config = NodeConfig {
        capabilities: args.capabilities,
        engine: args
            .tls
            .apply(args.limits.apply(defaults.engine.clone())?)?,
        ..defaults
    };
    config.engine.session.auth = args.auth.clone();
    let signals = Signals::install()
        .map_err(|e| format!("could not handle SIGINT and SIGTERM: {}", explain::io(&e)))?;
    let (node, mut rx) =
        DistributedNetwork::with_config(args.name, args.host, args.port, network, config)?;
    let addr = node.start_server().map_err(|e| {
        format!(
            "could not listen on {}:{}: {}",
            args.host,
            args.port,
            explain::node(&e)
        )
    })?;
    let metrics = match args.metrics {
        Some(at) => Some(
            nnp::net::MetricsEndpoint::start(at, node.engine().clone())
                .map_err(|e| format!("--metrics {at}: could not listen: {}", explain::net(&e)))?,
        ),
        None => None,
    };
    let offered = capability_names(args.capabilities);
    let layers_text: Vec<String> = sizes.iter().map(|n| n.to_string()).collect();
    if as_json {
        println!(
            "{}",
            json!({
                "listening": addr.to_string(),
                "name": args.name,
                "layers": sizes,
                "mode": args.mode.name(),
                "capabilities": offered,
                "metrics": metrics.as_ref().map(|m| format!("http://{}/metrics", m.local_addr())),
            })
        );
    } else {
        println!(
            "listening on {addr} as {}: layers {}, Hebbian rule {}, offering {}",
            args.name,
            layers_text.join(","),
            args.mode.name(),
            if offered.is_empty() {
                "no capabilities".to_owned()
            } else {
                offered.join(", ")
            }
        );
    }
    if let (false, Some(m)) = (as_json, &metrics) {
        println!("metrics at http://{}/metrics", m.local_addr());
    }
    use std::io::Write as _;
    std::io::stdout().flush()?;

    let mut tally = Tally::default();
    // ForwardData requests that wait together are answered by one batched pass.
    let mut batcher = Batcher::new(BatchConfig::default());
    let stopped = loop {
        if let Some(signal) = signals.received() {
            break signal;
        }
        if let Some(max) = args.max_messages {
            batcher.set_config(BatchConfig {
                max_batch: max.saturating_sub(tally.data_messages),
                ..batcher.config()
            });
        }
        let Some(served) = node.serve(&mut rx, &mut batcher, POLL) else {
            continue;
        };
        match served {
            Served::Event(NodeEvent::PeerConnected { peer, info }) => {
                tally.peers_seen += 1;
                log::info!("peer {peer} ({}) connected", info.name)
            }
            Served::Event(NodeEvent::PeerDisconnected { peer, cause }) => {
                log::info!("peer {peer} left: {cause}")
            }
            Served::Event(NodeEvent::Refused { peer, reason, .. }) => {
                log::warn!("peer {peer} refused our answer: {reason}")
            }
            // Answers never wait: a peer that does not read them is disconnected as a slow
            // consumer rather than stalling everyone else.
            Served::Answered(report) => {
                tally.data_messages += report.requests;
                tally.answers_sent += report.answered;
                tally.refused += report.refused.len();
                for failure in &report.refused {
                    log::warn!(
                        "ForwardData from {} refused: {}",
                        failure.peer,
                        failure.error
                    )
                }
                // A peer that is gone was logged when it left (a flood cut off leaves
                // hundreds of answers behind it): not once per answer.
                for failure in report.unsent.iter().filter(|f| {
                    !matches!(
                        f.error,
                        nnp::node::NodeError::Net(nnp::net::NetError::UnknownConnection(_))
                    )
                }) {
                    log::warn!("could not answer {}: {}", failure.peer, failure.error)
                }
            }
            Served::Applied { message, outcome } => {
                let (peer, msg_type) = (message.peer(), message.msg_type());
                tally.data_messages += 1;
                match outcome {
                    Ok(outcome) => log::info!("{msg_type:?} from {peer}: {outcome:?}"),
                    Err(e) => {
                        tally.refused += 1;
                        log::warn!("{msg_type:?} from {peer} refused: {e}")
                    }
                }
            }
            _ => {}
        }
        if args.max_messages.is_some_and(|m| tally.data_messages >= m) {
            break "max-messages";
        }
    };
    log::info!("stopping ({stopped}): telling every peer, flushing what is queued");
    node.shutdown();
    let saved = match args.save {
        Some(path) => match node.network().save_weights(path) {
            Ok(()) => Ok(Some(path)),
            Err(e) => Err(format!(
                "--save: could not write {}: {}",
                path.display(),
                match &e {
                    nnp::nn::NnError::Io(e) => explain::io(e),
                    other => other.to_string(),
                }
            )),
        },
        None => Ok(None),
    };
    let saved_to = saved.as_ref().ok().copied().flatten();
    if as_json {
        println!(
            "{}",
            json!({
                "stopped": stopped,
                "peers_seen": tally.peers_seen,
                "data_messages": tally.data_messages,
                "applied": tally.data_messages - tally.refused,
                "refused": tally.refused,
                "answers_sent": tally.answers_sent,
                "saved": saved_to.map(|p| p.display().to_string()),
            })
        );
    } else {
        let stopped = match stopped {
            "max-messages" => "after --max-messages".to_owned(),
            signal => format!("on {signal}"),
        };
        println!(
            "stopped {stopped}: {} seen, {} ({} applied, {} refused), {} sent{}",
            plural(tally.peers_seen, "peer", "peers"),
            plural(tally.data_messages, "data message", "data messages"),
            tally.data_messages - tally.refused,
            tally.refused,
            plural(tally.answers_sent, "answer", "answers"),
            match saved_to {
                Some(path) => format!("; weights saved to {}", path.display()),
                None => String::new(),
            }
        );
    }
    saved?;
    Ok(())
}
