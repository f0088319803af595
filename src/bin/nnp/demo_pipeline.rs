//! `nnp demo pipeline`: three stages on loopback, each holding one layer of a 64-32-16-10
//! network, trained on the digits by a driver; the same as `nnp pipeline stage|driver` in
//! separate processes, here on threads of one.

use std::path::Path;
use std::time::Duration;

use nnp::patterns::pipeline::{Schedule, Stage, StageConfig};

use crate::federated::network;
use crate::pipeline::{print_progress, print_summary, train, DriverArgs, DriverSummary};
use crate::report::report;
use crate::CliResult;

const LAYERS: [usize; 4] = [64, 32, 16, 10];

/// Runs the pipeline demo for `epochs`, printing a line per epoch and the closing table.
pub(crate) fn demo_pipeline(as_json: bool, epochs: usize, data: Option<&Path>) -> CliResult {
    run(as_json, epochs, data, &mut |p| print_progress(as_json, p))?;
    Ok(())
}

/// Starts the stages, trains, prints the table; returns what was measured.
pub(crate) fn run(
    as_json: bool,
    epochs: usize,
    data: Option<&Path>,
    progress: &mut dyn FnMut(&crate::pipeline::Progress),
) -> Result<DriverSummary, Box<dyn std::error::Error>> {
    let net = network(&LAYERS, 1)?;
    let config = StageConfig::default();
    let mut addrs = Vec::new();
    let mut threads = Vec::new();
    for layers in [0..1, 1..2, 2..3] {
        let mut stage = Stage::bind("127.0.0.1:0", &net, layers.clone(), config.clone())?;
        addrs.push(stage.local_addr());
        threads.push(std::thread::spawn(move || stage.serve_driver().map(|_| ())));
        if !as_json {
            report!(
                "stage {} on {}: weight layer {} ({}->{})",
                threads.len() - 1,
                addrs[addrs.len() - 1],
                layers.start,
                LAYERS[layers.start],
                LAYERS[layers.end]
            );
        }
    }
    let stages: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let plain = crate::tls::TlsClientArgs::default();
    let args = DriverArgs {
        stages: &stages,
        layers: &LAYERS,
        seed: 1,
        epochs,
        steps: None,
        batch: 32,
        micro_batches: 4,
        schedule: Schedule::OneFOneB,
        learning_rate: config.learning_rate,
        momentum: config.momentum,
        compare_local: true,
        resume_timeout: Duration::from_secs(5),
        data,
        auth: None,
        tls: &plain,
    };
    let summary = train(&args, &addrs, progress)?;
    for thread in threads {
        thread.join().map_err(|_| "a stage thread panicked")??;
    }
    print_summary(as_json, &args, &summary);
    Ok(summary)
}
