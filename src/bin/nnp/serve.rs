//! `nnp serve`: a node that listens, applies what peers send, and answers ForwardData with its
//! output.

use nnp::nn::HebbianLearningMode;
use serde_json::json;

use crate::{explain, CliResult};

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
    pub(crate) weights: Option<&'a std::path::Path>,
    pub(crate) save: Option<&'a std::path::Path>,
}

pub(crate) fn serve(as_json: bool, args: ServeArgs<'_>) -> CliResult {
    use nnp::nn::{Activation, NeuralNetwork};
    use nnp::node::{DistributedNetwork, HandleOutcome, NodeConfig, NodeEvent};
    if args.weights.is_none() && (args.layers.len() < 2 || args.layers.contains(&0)) {
        let given: Vec<String> = args.layers.iter().map(|n| n.to_string()).collect();
        return Err(format!(
            "--layers {}: need at least two sizes, none zero, e.g. 64,32,10",
            given.join(",")
        )
        .into());
    }
    let network = match args.weights {
        Some(path) => {
            let mut network = NeuralNetwork::load_weights(path)
                .map_err(|e| format!("--weights: {}", explain::weights_file(path, &e)))?;
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
        capabilities: args.capabilities,
        ..NodeConfig::default()
    };
    let (node, rx) =
        DistributedNetwork::with_config(args.name, args.host, args.port, network, config)?;
    let addr = node.start_server().map_err(|e| {
        format!(
            "could not listen on {}:{}: {}",
            args.host,
            args.port,
            explain::node(&e)
        )
    })?;
    if as_json {
        println!("{}", json!({ "listening": addr.to_string() }));
    } else {
        println!("listening on {addr}");
    }
    use std::io::Write as _;
    std::io::stdout().flush()?;
    let mut handled = 0;
    for event in rx {
        match event {
            NodeEvent::PeerConnected { peer, info } => {
                log::info!("peer {peer} ({}) connected", info.name)
            }
            NodeEvent::PeerDisconnected { peer, cause } => log::info!("peer {peer} left: {cause}"),
            NodeEvent::Message(message) => {
                let (peer, msg_type) = (message.peer(), message.msg_type());
                match node.handle_message(&message) {
                    Ok(HandleOutcome::Output(output)) => {
                        if let Err(e) = node.send_forward_data(peer, output_layer, &output) {
                            log::warn!("could not answer {peer}: {e}");
                        }
                    }
                    Ok(outcome) => log::info!("{msg_type:?} from {peer}: {outcome:?}"),
                    Err(e) => log::warn!("{msg_type:?} from {peer} refused: {e}"),
                }
                handled += 1;
                if args.max_messages.is_some_and(|m| handled >= m) {
                    break;
                }
            }
            _ => {}
        }
    }
    node.shutdown();
    if let Some(path) = args.save {
        node.network().save_weights(path).map_err(|e| {
            format!(
                "--save: could not write {}: {}",
                path.display(),
                match &e {
                    nnp::nn::NnError::Io(e) => explain::io(e),
                    other => other.to_string(),
                }
            )
        })?;
        log::info!("weights written to {}", path.display());
    }
    Ok(())
}
