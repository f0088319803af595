//! `nnp pipeline stage|driver`: one network's layers in separate processes, trained on the
//! digits.
//!
//! Every stage builds the same network from `--layers` and `--seed` and keeps the weight
//! layers `--range A..B` of it; the driver holds the data (the training three quarters of
//! the digits; the held-out quarter it evaluates on), connects to the stages in order and runs
//! the steps. With `--compare-local` it also trains the whole network in its own process on
//! the same batches and reports the largest difference between the two sets of weights.

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nnp::nn::{one_hot, Loss, Sgd};
use nnp::patterns::pipeline::{
    Driver, DriverConfig, PipelineError, Schedule, Stage, StageConfig, StepReport,
};
use serde_json::json;

use crate::federated::{digits, network};
use crate::report::report;
use crate::{explain, CliResult};

/// The seed of the held-out split, shared with `nnp federated`.
const SPLIT_SEED: u64 = 0;
/// The share of the data held out for evaluation.
const HELD_OUT: f64 = 0.25;

/// What `nnp pipeline stage` was asked.
pub(crate) struct StageArgs<'a> {
    pub(crate) listen: &'a str,
    pub(crate) layers: &'a [usize],
    pub(crate) range: Range<usize>,
    pub(crate) seed: u64,
    pub(crate) learning_rate: f32,
    pub(crate) momentum: f32,
    /// Peer authentication, if asked for.
    pub(crate) auth: Option<std::sync::Arc<nnp::auth::AuthConfig>>,
    /// TLS for the connections accepted.
    pub(crate) tls: &'a crate::tls::TlsServerArgs,
}

/// What `nnp pipeline driver` was asked.
pub(crate) struct DriverArgs<'a> {
    pub(crate) stages: &'a [String],
    pub(crate) layers: &'a [usize],
    pub(crate) seed: u64,
    pub(crate) epochs: usize,
    pub(crate) steps: Option<u64>,
    pub(crate) batch: usize,
    pub(crate) micro_batches: usize,
    pub(crate) schedule: Schedule,
    pub(crate) learning_rate: f32,
    pub(crate) momentum: f32,
    pub(crate) compare_local: bool,
    pub(crate) resume_timeout: Duration,
    pub(crate) data: Option<&'a Path>,
    /// Peer authentication, if asked for.
    pub(crate) auth: Option<std::sync::Arc<nnp::auth::AuthConfig>>,
    /// TLS to the stages, if asked for.
    pub(crate) tls: &'a crate::tls::TlsClientArgs,
}

/// `--range A..B`: weight layers A (from 0) up to B, not included.
pub(crate) fn parse_range(s: &str) -> Result<Range<usize>, String> {
    let bad = || format!("{s:?}: expected A..B with A < B, e.g. 1..2 (weight layers, from 0)");
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let (a, b): (usize, usize) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a >= b {
        return Err(bad());
    }
    Ok(a..b)
}

/// `nnp pipeline stage`: serves drivers until killed.
pub(crate) fn stage(as_json: bool, args: &StageArgs<'_>) -> CliResult {
    let net = network(args.layers, args.seed)?;
    let mut config = StageConfig {
        learning_rate: args.learning_rate,
        momentum: args.momentum,
        ..StageConfig::default()
    };
    config.node.engine = args.tls.apply(config.node.engine.clone())?;
    config.node.engine.session.auth = args.auth.clone();
    let addr = explain::address("--listen", args.listen)?;
    let mut stage = Stage::bind(&addr.to_string(), &net, args.range.clone(), config)?;
    let bound = stage.local_addr();
    if as_json {
        report!(
            "{}",
            json!({"event": "listening", "addr": bound.to_string(),
                   "layers": [args.range.start, args.range.end]})
        );
    } else {
        report!(
            "stage with weight layers {}..{} of {:?} listening on {bound}",
            args.range.start,
            args.range.end,
            args.layers
        );
    }
    stage.run()?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What a driver run measured.
pub(crate) struct DriverSummary {
    pub(crate) accuracy: f32,
    pub(crate) epochs: usize,
    pub(crate) steps: u64,
    pub(crate) samples: u64,
    pub(crate) elapsed: Duration,
    pub(crate) bubble: f64,
    pub(crate) ideal_bubble: f64,
    pub(crate) step_us: Histogram<u64>,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) frames_out: u64,
    pub(crate) frames_in: u64,
    pub(crate) max_abs_diff: Option<f32>,
    pub(crate) stage_failures: usize,
    /// Heartbeat round trips to the stages: p50, p99 (microseconds) and how many.
    pub(crate) rtt_us: (f64, f64, u64),
}

/// What the driver prints as it goes: one line per epoch, and each stage failure.
pub(crate) enum Progress {
    Epoch {
        epoch: usize,
        accuracy: f32,
        loss: f32,
        bubble: f64,
        step_ms: f64,
    },
    StageLost {
        error: PipelineError,
    },
    Resumed {
        step: u64,
        waited: Duration,
    },
}

/// Trains over the stages at `stages`, reporting through `progress`.
pub(crate) fn train(
    args: &DriverArgs<'_>,
    stages: &[std::net::SocketAddr],
    progress: &mut dyn FnMut(&Progress),
) -> Result<DriverSummary, Box<dyn std::error::Error>> {
    let (train, test) = digits(args.data)?.split(HELD_OUT, SPLIT_SEED);
    let targets = one_hot(&train.labels, 10)?;
    let mut config = DriverConfig {
        micro_batches: args.micro_batches,
        schedule: args.schedule,
        connect_timeout: args.resume_timeout,
        ..DriverConfig::default()
    };
    config.engine = args.tls.apply(config.engine.clone())?;
    config.engine.session.auth = args.auth.clone();
    let mut driver = Driver::connect(stages, config)?;
    let mut evaluated = network(args.layers, args.seed)?;
    let mut local = args
        .compare_local
        .then(|| {
            network(args.layers, args.seed)
                .map(|n| (n, Sgd::new(args.learning_rate, args.momentum)))
        })
        .transpose()?;
    let mut step_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut bubble, mut ideal_bubble, mut stage_failures) = (0.0, 0.0, 0);
    let started = Instant::now();
    let n = train.labels.len();
    let (mut epochs, mut samples, mut accuracy) = (0, 0u64, 0.0);
    'epochs: for epoch in 1..=args.epochs {
        let (mut loss, mut epoch_bubble, mut epoch_ideal, mut epoch_steps) = (0.0f64, 0.0, 0.0, 0);
        let epoch_started = Instant::now();
        for start in (0..n).step_by(args.batch) {
            if args.steps.is_some_and(|s| driver.steps() >= s) {
                break 'epochs;
            }
            let end = (start + args.batch).min(n);
            let (x, t) = (
                &train.inputs[start * 64..end * 64],
                &targets[start * 10..end * 10],
            );
            let report: StepReport = loop {
                match driver.step(x, t) {
                    Ok(report) => break report,
                    Err(error) if error.stage().is_some() => {
                        stage_failures += 1;
                        progress(&Progress::StageLost { error });
                        let waiting = Instant::now();
                        driver.resume()?;
                        progress(&Progress::Resumed {
                            step: driver.steps(),
                            waited: waiting.elapsed(),
                        });
                    }
                    Err(error) => return Err(error.into()),
                }
            };
            if let Some((net, sgd)) = &mut local {
                net.train_epoch(x, t, args.batch, Loss::CrossEntropy, false, sgd)?;
            }
            step_us.saturating_record(report.duration.as_micros() as u64);
            loss += report.loss as f64 * report.samples as f64;
            epoch_bubble += report.bubble;
            epoch_ideal += report.ideal_bubble;
            epoch_steps += 1;
            samples += report.samples as u64;
        }
        epochs = epoch;
        driver.weights_into(&mut evaluated)?;
        accuracy = evaluated.accuracy(&test.inputs, &test.labels)?;
        bubble = epoch_bubble / epoch_steps.max(1) as f64;
        ideal_bubble = epoch_ideal / epoch_steps.max(1) as f64;
        progress(&Progress::Epoch {
            epoch,
            accuracy,
            loss: (loss / n as f64) as f32,
            bubble,
            step_ms: ms(epoch_started.elapsed()) / epoch_steps.max(1) as f64,
        });
    }
    let elapsed = started.elapsed();
    driver.weights_into(&mut evaluated)?;
    accuracy = evaluated
        .accuracy(&test.inputs, &test.labels)
        .unwrap_or(accuracy);
    let max_abs_diff = local.map(|(net, _)| {
        (0..net.layer_count())
            .flat_map(|l| {
                net.layer_params(l)
                    .iter()
                    .zip(evaluated.layer_params(l))
                    .map(|(a, b)| (a - b).abs())
                    .collect::<Vec<_>>()
            })
            .fold(0.0f32, f32::max)
    });
    let metrics = driver.node().metrics();
    let traffic = metrics.traffic;
    let rtt = &metrics.rtt_ns;
    let rtt_us = (
        rtt.value_at_quantile(0.5) as f64 / 1e3,
        rtt.value_at_quantile(0.99) as f64 / 1e3,
        rtt.len(),
    );
    let steps = driver.steps();
    driver.shutdown();
    Ok(DriverSummary {
        accuracy,
        epochs,
        steps,
        samples,
        elapsed,
        bubble,
        ideal_bubble,
        step_us,
        bytes_out: traffic.bytes_out,
        bytes_in: traffic.bytes_in,
        frames_out: traffic.frames_out,
        frames_in: traffic.frames_in,
        max_abs_diff,
        stage_failures,
        rtt_us,
    })
}

/// `nnp pipeline driver`: trains, printing a line per epoch and a closing table (with
/// --json, a JSON object per line and nothing else).
pub(crate) fn driver(as_json: bool, args: &DriverArgs<'_>) -> CliResult {
    let stages = args
        .stages
        .iter()
        .map(|s| explain::address("--stages", s))
        .collect::<Result<Vec<_>, _>>()?;
    let summary = train(args, &stages, &mut |p| print_progress(as_json, p))?;
    print_summary(as_json, args, &summary);
    Ok(())
}

pub(crate) fn print_progress(as_json: bool, progress: &Progress) {
    match progress {
        Progress::Epoch {
            epoch,
            accuracy,
            loss,
            bubble,
            step_ms,
        } => {
            if as_json {
                report!(
                    "{}",
                    json!({"event": "epoch", "epoch": epoch, "accuracy": accuracy, "loss": loss,
                           "bubble": bubble, "step_ms": step_ms})
                );
            } else {
                report!(
                    "epoch {epoch:>3}  loss {loss:.4}  accuracy {accuracy:.3}  bubble {bubble:.2}  {step_ms:.2} ms/step"
                );
            }
        }
        Progress::StageLost { error } => {
            if as_json {
                let (stage, step) = match error {
                    PipelineError::StageLost { stage, step, .. }
                    | PipelineError::StageSilent { stage, step, .. }
                    | PipelineError::Refused { stage, step, .. } => (Some(*stage), Some(*step)),
                    _ => (error.stage(), None),
                };
                report!(
                    "{}",
                    json!({"event": "stage_lost", "stage": stage, "step": step,
                           "error": error.to_string()})
                );
            } else {
                report!("{error}: waiting for it to come back");
            }
        }
        Progress::Resumed { step, waited } => {
            if as_json {
                report!(
                    "{}",
                    json!({"event": "resumed", "step": step, "waited_ms": ms(*waited)})
                );
            } else {
                report!("resumed from step {step} after {:.0} ms", ms(*waited));
            }
        }
    }
}

pub(crate) fn print_summary(as_json: bool, args: &DriverArgs<'_>, s: &DriverSummary) {
    let q = |p: f64| s.step_us.value_at_quantile(p) as f64 / 1e3;
    let rate = s.samples as f64 / s.elapsed.as_secs_f64().max(1e-9);
    if as_json {
        report!(
            "{}",
            json!({
                "event": "summary", "accuracy": s.accuracy, "epochs": s.epochs, "steps": s.steps,
                "schedule": args.schedule.name(), "micro_batches": args.micro_batches,
                "stages": args.stages.len(),
                "bubble": s.bubble, "ideal_bubble": s.ideal_bubble,
                "samples_per_s": rate,
                "step_p50_ms": q(0.5), "step_p99_ms": q(0.99), "step_max_ms": q(1.0),
                "bytes_out": s.bytes_out, "bytes_in": s.bytes_in,
                "frames_out": s.frames_out, "frames_in": s.frames_in,
                "max_abs_diff": s.max_abs_diff, "stage_failures": s.stage_failures,
                "rtt_p50_us": s.rtt_us.0, "rtt_p99_us": s.rtt_us.1,
                "elapsed_ms": ms(s.elapsed),
            })
        );
        return;
    }
    report!(
        "pipeline over {} stages, {} ({} micro-batches of a {}-sample batch):",
        args.stages.len(),
        args.schedule.name(),
        args.micro_batches,
        args.batch
    );
    report!("  held-out accuracy    {:.3}", s.accuracy);
    report!("  steps                {} ({} epochs)", s.steps, s.epochs);
    report!(
        "  bubble               {:.3} measured, {:.3} ideal (S-1)/(M+S-1)",
        s.bubble,
        s.ideal_bubble
    );
    report!(
        "  step time            p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        q(0.5),
        q(0.99),
        q(1.0)
    );
    report!(
        "  bytes on the wire    {} out / {} in ({} / {} frames)",
        s.bytes_out,
        s.bytes_in,
        s.frames_out,
        s.frames_in
    );
    if s.rtt_us.2 > 0 {
        report!(
            "  heartbeat round trip p50 {:.1} us, p99 {:.1} us ({} samples)",
            s.rtt_us.0,
            s.rtt_us.1,
            s.rtt_us.2
        );
    }
    report!("  samples/s            {rate:.0}");
    if let Some(d) = s.max_abs_diff {
        report!("  max |pipeline - local weights| {d:e}");
    }
    if s.stage_failures > 0 {
        report!("  stage failures       {} (resumed)", s.stage_failures);
    }
}
