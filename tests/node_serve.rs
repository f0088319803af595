//! `DistributedNetwork::serve`: ForwardData requests from several peers answered by one
//! batched pass, each peer's answers in order and equal (within the stated tolerance) to
//! answering each request alone; refusals in the middle of a batch; other messages applied
//! in the order they came; a lone request answered without waiting for the batching bound.

use std::time::Duration;

use nnp::nn::{Activation, NeuralNetwork};
use nnp::node::{
    BatchConfig, Batcher, DistributedNetwork, ForwardReport, Model, NodeEvent, NodeReceiver,
    PeerId, Served,
};
use nnp::wire::Message;

const LAYERS: [usize; 3] = [784, 128, 10];
const WAIT: Duration = Duration::from_secs(10);

fn net() -> NeuralNetwork {
    NeuralNetwork::builder(&LAYERS)
        .output_activation(Activation::Softmax)
        .seed(5)
        .build()
        .unwrap()
}

type Node = DistributedNetwork<NeuralNetwork>;

/// `rows` rows entering weight layer `layer`, different for each `k`.
fn rows(layer: usize, rows: usize, k: usize) -> Vec<f32> {
    (0..rows * LAYERS[layer])
        .map(|i| ((i * 31 + k * 17) % 97) as f32 / 48.5 - 1.0)
        .collect()
}

/// What answering the request alone gives: the node's own path for one message.
fn alone(layer: usize, data: &[f32]) -> Vec<f32> {
    net().forward_from(layer, data).unwrap()
}

/// The batched kernels sum in another order than the single-sample ones: each value is
/// within 1e-5 of its magnitude plus one of the value answered alone.
fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
            "{what}: value {i} is {g}, alone {w}"
        );
    }
}

struct Server {
    node: Node,
    rx: NodeReceiver,
    port: u16,
}

fn server() -> Server {
    let (node, rx) = DistributedNetwork::new("server", "127.0.0.1", 0, net()).unwrap();
    let port = node.start_server().unwrap().port();
    Server { node, rx, port }
}

fn client(server: &Server, name: &str) -> (Node, NodeReceiver, PeerId) {
    let (node, rx) = DistributedNetwork::new(name, "127.0.0.1", 0, net()).unwrap();
    let peer = node.connect_to("127.0.0.1", server.port).unwrap();
    (node, rx, peer)
}

/// Frames the server's connections have read, in all.
fn frames_in(server: &Server) -> u64 {
    server
        .node
        .peers()
        .iter()
        .map(|p| p.traffic.frames_in)
        .sum()
}

/// Waits until the server's connections have read `frames` more frames than `base`, so that
/// what the clients sent is waiting in its receive rings.
fn wait_received(server: &Server, base: u64, frames: u64) {
    let deadline = std::time::Instant::now() + WAIT;
    while frames_in(server) < base + frames {
        assert!(
            std::time::Instant::now() < deadline,
            "the requests arrive within 10 s"
        );
        std::thread::yield_now();
    }
}

/// Serves until `requests` ForwardData requests were answered or refused; returns the
/// batches' reports (connection events and other messages are skipped).
fn serve_requests(
    server: &mut Server,
    batcher: &mut Batcher,
    requests: usize,
) -> Vec<ForwardReport> {
    let mut reports = Vec::new();
    let mut done = 0;
    while done < requests {
        match server.node.serve(&mut server.rx, batcher, WAIT) {
            Some(Served::Answered(report)) => {
                done += report.requests;
                reports.push(report);
            }
            Some(_) => {}
            None => panic!("only {done} of {requests} requests came within 10 s"),
        }
    }
    reports
}

/// The next answer (or refusal) a client receives: `Ok(values)` or `Err(reason)`.
fn next_answer(rx: &mut NodeReceiver) -> Result<Vec<f32>, String> {
    loop {
        match rx.recv_timeout(WAIT).expect("an answer within 10 s") {
            NodeEvent::Message(m) => {
                let Message::ForwardData { layer_id, data } = m.message() else {
                    panic!("a ForwardData answer, got {:?}", m.msg_type())
                };
                assert_eq!(
                    layer_id as usize,
                    LAYERS.len() - 1,
                    "answers are the output layer"
                );
                return Ok(data.into_owned());
            }
            NodeEvent::Refused { reason, .. } => return Err(reason),
            NodeEvent::PeerDisconnected { cause, .. } => panic!("disconnected: {cause}"),
            _ => {}
        }
    }
}

#[test]
fn a_batch_from_many_peers_answers_each_in_order_as_if_alone() {
    let mut server = server();
    // Four peers, three requests each: one row, several rows, and a row entering layer 1.
    let plans: Vec<Vec<(usize, Vec<f32>)>> = (0..4)
        .map(|p| {
            vec![
                (0, rows(0, 1, p * 10)),
                (0, rows(0, 3, p * 10 + 1)),
                (1, rows(1, 1, p * 10 + 2)),
            ]
        })
        .collect();
    let mut clients: Vec<_> = (0..plans.len())
        .map(|p| client(&server, &format!("peer{p}")))
        .collect();
    let base = frames_in(&server);
    for ((node, _, peer), plan) in clients.iter().zip(&plans) {
        for (layer, data) in plan {
            node.send_forward_data(*peer, *layer as u16, data).unwrap();
        }
    }
    wait_received(&server, base, 12);
    let mut batcher = Batcher::new(BatchConfig::default());
    let reports = serve_requests(&mut server, &mut batcher, 12);
    let passes: usize = reports.iter().map(|r| r.passes).sum();
    let answered: usize = reports.iter().map(|r| r.answered).sum();
    assert_eq!(answered, 12);
    assert!(
        passes < 12,
        "requests waiting together share passes: {passes} passes for 12 requests"
    );
    for ((_, rx, _), plan) in clients.iter_mut().zip(&plans) {
        for (k, (layer, data)) in plan.iter().enumerate() {
            let got = next_answer(rx).expect("answered");
            assert_close(&got, &alone(*layer, data), &format!("request {k}"));
        }
    }
}

#[test]
fn a_refusal_in_the_middle_of_a_batch_holds_up_no_one() {
    let mut server = server();
    let mut nan = rows(0, 1, 2);
    nan[4] = f32::NAN;
    let requests = [
        rows(0, 1, 1),
        nan,
        rows(0, 1, 3)[..100].to_vec(), // not a whole row
        rows(0, 2, 4),
    ];
    let (node, mut rx, peer) = client(&server, "client");
    let (other, mut other_rx, other_peer) = client(&server, "other");
    let base = frames_in(&server);
    for data in &requests {
        node.send_forward_data(peer, 0, data).unwrap();
        other
            .send_forward_data(other_peer, 0, &rows(0, 1, 9))
            .unwrap();
    }
    wait_received(&server, base, 8);
    let mut batcher = Batcher::new(BatchConfig::default());
    let reports = serve_requests(&mut server, &mut batcher, 8);
    let refused: Vec<String> = reports
        .iter()
        .flat_map(|r| &r.refused)
        .map(|f| f.error.to_string())
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(reports.iter().map(|r| r.answered).sum::<usize>(), 6);

    // The client's answers and refusals come in the order of its requests, each refusal
    // naming what the request alone would be refused for.
    let got: Vec<_> = (0..requests.len()).map(|_| next_answer(&mut rx)).collect();
    assert_close(
        got[0].as_ref().unwrap(),
        &alone(0, &requests[0]),
        "request 0",
    );
    let reason = got[1].as_ref().unwrap_err();
    assert!(
        reason.contains("index 4"),
        "the NaN's index in its own data: {reason}"
    );
    let reason = got[2].as_ref().unwrap_err();
    assert!(reason.contains("784 inputs"), "{reason}");
    assert_close(
        got[3].as_ref().unwrap(),
        &alone(0, &requests[3]),
        "request 3",
    );
    assert_eq!(refused[0], *got[1].as_ref().unwrap_err());
    for k in 0..requests.len() {
        let answer = next_answer(&mut other_rx).expect("the other peer is answered");
        assert_close(&answer, &alone(0, &rows(0, 1, 9)), &format!("other's {k}"));
    }
}

#[test]
fn learning_messages_take_effect_in_the_order_they_came() {
    let mut server = server();
    let (node, mut rx, peer) = client(&server, "client");
    // A request, a gradient that changes the answer, the same request again: sent back to
    // back, so the second request may already wait behind the gradient.
    let x = rows(0, 1, 1);
    let gradient: Vec<f32> = (0..LAYERS[2] * LAYERS[1] + LAYERS[2])
        .map(|i| (i % 7) as f32 - 3.0)
        .collect();
    node.send_forward_data(peer, 0, &x).unwrap();
    node.send_backward_data(peer, 1, &gradient).unwrap();
    node.send_forward_data(peer, 0, &x).unwrap();
    let mut batcher = Batcher::new(BatchConfig::default());
    let mut served = Vec::new();
    while served.len() < 3 {
        match server.node.serve(&mut server.rx, &mut batcher, WAIT) {
            Some(Served::Answered(report)) => served.push(format!("answered {}", report.answered)),
            Some(Served::Applied { message, outcome }) => {
                outcome.unwrap();
                served.push(format!("applied {:?}", message.msg_type()));
            }
            Some(_) => {}
            None => panic!("only {served:?} within 10 s"),
        }
    }
    assert_eq!(served, ["answered 1", "applied BackwardData", "answered 1"]);
    let mut after = net();
    Model::apply_gradient(&mut after, 1, &gradient).unwrap();
    let want_after = after.forward_from(0, &x).unwrap();
    assert_close(
        &next_answer(&mut rx).unwrap(),
        &alone(0, &x),
        "before the gradient",
    );
    let got_after = next_answer(&mut rx).unwrap();
    assert_close(&got_after, &want_after, "after the gradient");
    assert_ne!(got_after, alone(0, &x), "the gradient changed the answer");
}

#[test]
fn a_lone_request_is_answered_without_waiting_for_the_batching_bound() {
    let server = server();
    let (node, mut rx, peer) = client(&server, "client");
    let Server {
        node: serving,
        rx: mut serving_rx,
        ..
    } = server;
    let serving = std::sync::Arc::new(serving);
    let serve = {
        let serving = std::sync::Arc::clone(&serving);
        std::thread::spawn(move || {
            // Far longer than the client waits for its answer.
            let mut batcher = Batcher::new(BatchConfig {
                max_wait: Duration::from_secs(3600),
                ..BatchConfig::default()
            });
            loop {
                match serving.serve(&mut serving_rx, &mut batcher, WAIT) {
                    Some(Served::Answered(report)) => return report,
                    Some(_) => {}
                    None => panic!("no request within 10 s"),
                }
            }
        })
    };
    let x = rows(0, 1, 7);
    node.send_forward_data(peer, 0, &x).unwrap();
    let answer = next_answer(&mut rx).expect("answered at once, not after the 1 h bound");
    assert_eq!(
        answer,
        alone(0, &x),
        "a lone request takes the single-sample path"
    );
    let report = serve.join().unwrap();
    assert_eq!((report.requests, report.passes, report.answered), (1, 1, 1));
    serving.shutdown();
}
