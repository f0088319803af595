//! DistributedNetwork over loopback: every public method, and each message type making the
//! same change in the receiving network as the operation done locally.

use std::borrow::Cow;
use std::time::Duration;

use nnp::net::{CloseCause, NetError};
use nnp::nn::{one_hot, HebbianLearningMode, Loss, NeuralNetwork};
use nnp::node::{
    DistributedNetwork, HandleOutcome, Model, ModelError, NetworkMessage, NodeConfig, NodeError,
    NodeEvent, NodeReceiver, PeerId,
};
use nnp::wire::{capabilities, DisconnectReason, Message, MsgType, ProtocolError, SyncMode};

const SIZES: [usize; 3] = [6, 5, 3];

fn net(seed: u64) -> NeuralNetwork {
    NeuralNetwork::with_layers_and_mode(&SIZES, 0.05, HebbianLearningMode::Oja).with_seed(seed)
}

fn node(
    name: &str,
    seed: u64,
    capabilities: u32,
    local_samples: u32,
) -> (DistributedNetwork<NeuralNetwork>, NodeReceiver) {
    let config = NodeConfig {
        capabilities,
        local_samples,
        ..NodeConfig::default()
    };
    DistributedNetwork::with_config(name, "127.0.0.1", 0, net(seed), config).unwrap()
}

/// The next data message (connection events skipped).
fn next_data(rx: &mut NodeReceiver) -> NetworkMessage {
    loop {
        let event = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a message arrives");
        match event {
            NodeEvent::Message(m) => return m,
            NodeEvent::PeerDisconnected { peer, cause } => panic!("peer {peer} left: {cause}"),
            _ => continue,
        }
    }
}

fn wait_connected(rx: &mut NodeReceiver, name: &str) -> PeerId {
    loop {
        let event = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the peer connects");
        if let NodeEvent::PeerConnected { peer, info } = event {
            if info.name == name {
                return peer;
            }
        }
    }
}

fn input(k: usize) -> Vec<f32> {
    (0..SIZES[0])
        .map(|i| ((i * 7 + k * 3) % 11) as f32 / 11.0 - 0.4)
        .collect()
}

#[test]
fn three_nodes_each_message_type_changes_the_receiver_as_local_operations_do() {
    let (hub, mut hub_rx) = node("hub", 1, capabilities::ALL, 10);
    let addr = hub.start_server().unwrap();
    let (left, mut left_rx) = node("left", 2, capabilities::ALL, 30);
    let (right, mut right_rx) = node("right", 3, capabilities::ALL, 30);
    let left_to_hub = left.connect_to("127.0.0.1", addr.port()).unwrap();
    let right_to_hub = right.connect_to("127.0.0.1", addr.port()).unwrap();
    let hub_to_left = wait_connected(&mut hub_rx, "left");
    let hub_to_right = wait_connected(&mut hub_rx, "right");

    // peers(): names, addresses, agreed capabilities.
    let peers = hub.peers();
    assert_eq!(peers.len(), 2);
    for p in &peers {
        let info = p.info.as_ref().expect("established");
        assert!(["left", "right"].contains(&info.name.as_str()));
        assert_eq!(info.capabilities, capabilities::ALL);
        assert_eq!(info.layer_sizes, vec![6, 5, 3]);
    }

    // ForwardData: the hub runs its network on the data; the output equals a local forward.
    let x = input(1);
    left.send_forward_data(left_to_hub, 0, &x).unwrap();
    let m = next_data(&mut hub_rx);
    assert_eq!(m.peer(), hub_to_left);
    assert_eq!(m.msg_type(), MsgType::ForwardData);
    let Message::ForwardData { data, .. } = m.message() else {
        panic!("{m:?} is not ForwardData")
    };
    assert_eq!(&*data, &x[..]);
    assert!(
        matches!(data, Cow::Borrowed(_)) || cfg!(target_endian = "big"),
        "the f32 data is read in place"
    );
    let expected = net(1).forward(&x).unwrap().1;
    assert_eq!(
        hub.handle_message(&m).unwrap(),
        HandleOutcome::Output(expected)
    );

    // ForwardData carrying a batch: three samples, one output row each, as run locally.
    let batch: Vec<f32> = (2..5).flat_map(input).collect();
    left.send_forward_data(left_to_hub, 0, &batch).unwrap();
    let m = next_data(&mut hub_rx);
    let HandleOutcome::Output(rows) = hub.handle_message(&m).unwrap() else {
        panic!("a forward batch gives outputs")
    };
    assert_eq!(rows.len(), 3 * 3);
    for (k, row) in (2..5).zip(rows.chunks(3)) {
        let one = net(1).forward(&input(k)).unwrap().1;
        for (a, b) in row.iter().zip(&one) {
            assert!((a - b).abs() < 1e-5, "batch row {k}: {row:?} vs {one:?}");
        }
    }
    // A length that is no multiple of the input width is refused, and says what fits.
    left.send_forward_data(left_to_hub, 0, &batch[..7]).unwrap();
    let m = next_data(&mut hub_rx);
    let refused = hub.handle_message(&m).unwrap_err().to_string();
    assert!(refused.contains("6 inputs"), "{refused}");

    // BackwardData: gradients computed on `left` and applied by the hub equal applying them
    // to the same network locally.
    let labels = [2usize];
    let (_, grads) = left
        .network()
        .batch_gradients(&x, &one_hot(&labels, 3).unwrap(), Loss::CrossEntropy)
        .unwrap();
    let grads = grads.layer_gradient_flat(1).to_vec();
    let mut local = hub.network().clone();
    local.apply_layer_gradient(1, &grads).unwrap();
    left.send_backward_data(left_to_hub, 1, &grads).unwrap();
    let m = next_data(&mut hub_rx);
    assert_eq!(
        hub.handle_message(&m).unwrap(),
        HandleOutcome::GradientApplied { layer: 1 }
    );
    assert_eq!(hub.network().layer_params(1), local.layer_params(1));
    assert_ne!(
        hub.network().layer_params(1),
        net(1).layer_params(1),
        "the gradient moved the weights"
    );

    // HebbianData: correlations learnt on `right`, integrated by the hub.
    for k in 0..50 {
        right.network().hebbian_update(&input(k)).unwrap();
    }
    let correlations = right.network().layer_correlations(0).to_vec();
    let mut local = hub.network().clone();
    local
        .integrate_correlations(0, &correlations, 0.02)
        .unwrap();
    right
        .send_hebbian_data(right_to_hub, 0, &correlations, 0.02)
        .unwrap();
    let m = next_data(&mut hub_rx);
    assert_eq!(m.peer(), hub_to_right);
    assert_eq!(
        hub.handle_message(&m).unwrap(),
        HandleOutcome::CorrelationsIntegrated { layer: 0 }
    );
    assert_eq!(hub.network().layer_params(0), local.layer_params(0));
    assert_eq!(
        hub.network().layer_correlations(0),
        local.layer_correlations(0)
    );

    // WeightSync, Replace: the hub's layer becomes left's layer.
    left.send_weight_sync(left_to_hub, 0, SyncMode::Replace)
        .unwrap();
    let m = next_data(&mut hub_rx);
    let count = left.network().layer_params(0).len();
    assert_eq!(
        hub.handle_message(&m).unwrap(),
        HandleOutcome::WeightsUpdated {
            layer: 0,
            offset: 0,
            count
        }
    );
    assert_eq!(
        hub.network().layer_params(0),
        left.network().layer_params(0)
    );

    // WeightSync, Average: weighted by sample counts (right says 30, the hub has 10).
    let before = hub.network().layer_params(1).to_vec();
    right
        .send_weight_sync(right_to_hub, 1, SyncMode::Average)
        .unwrap();
    let m = next_data(&mut hub_rx);
    hub.handle_message(&m).unwrap();
    let theirs = right.network().layer_params(1).to_vec();
    for ((got, mine), other) in hub
        .network()
        .layer_params(1)
        .iter()
        .zip(&before)
        .zip(&theirs)
    {
        let expected = mine + (other - mine) * 0.75;
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    }

    // broadcast_*: both workers receive.
    assert_eq!(hub.broadcast_forward_data(0, &x).unwrap(), 2);
    for rx in [&mut left_rx, &mut right_rx] {
        let m = next_data(rx);
        assert!(matches!(
            m.message(),
            Message::ForwardData { layer_id: 0, .. }
        ));
    }
    assert_eq!(hub.broadcast_weight_sync(1, SyncMode::Replace).unwrap(), 2);
    for (rx, worker) in [(&mut left_rx, &left), (&mut right_rx, &right)] {
        let m = next_data(rx);
        worker.handle_message(&m).unwrap();
        assert_eq!(
            worker.network().layer_params(1),
            hub.network().layer_params(1)
        );
    }
    let c = hub.network().layer_correlations(0).to_vec();
    assert_eq!(hub.broadcast_hebbian_data(0, &c, 0.01).unwrap(), 2);
    assert_eq!(hub.broadcast_backward_data(1, &grads).unwrap(), 2);
    for rx in [&mut left_rx, &mut right_rx] {
        assert_eq!(next_data(rx).msg_type(), MsgType::HebbianData);
        assert_eq!(next_data(rx).msg_type(), MsgType::BackwardData);
    }

    // A message that does not fit the network is refused with a clear error.
    left.send_forward_data(left_to_hub, 0, &[1.0, 2.0]).unwrap();
    let m = next_data(&mut hub_rx);
    let err = hub.handle_message(&m).unwrap_err();
    assert!(matches!(err, NodeError::Model(_)), "{err}");
    assert!(err.to_string().contains("6 inputs"), "{err}");

    // ping() measures a round trip; disconnect() closes and the hub hears of it.
    hub.ping(hub_to_left).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while hub
        .peers()
        .iter()
        .find(|p| p.conn == hub_to_left)
        .and_then(|p| p.rtt)
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no round trip measured"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    left.disconnect(left_to_hub);
    loop {
        let event = hub_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the close is reported");
        if let NodeEvent::PeerDisconnected { peer, .. } = event {
            assert_eq!(peer, hub_to_left);
            break;
        }
    }
    assert!(matches!(
        left.send_forward_data(left_to_hub, 0, &x),
        Err(NodeError::Net(
            NetError::UnknownConnection(_) | NetError::Closed(_)
        ))
    ));
    assert!(hub.metrics().traffic.frames_in >= 8);
}

#[test]
fn a_capability_the_peer_lacks_is_refused_locally() {
    let (server, _srx) = node("forward-only", 1, capabilities::FORWARD_PROPAGATION, 1);
    let addr = server.start_server().unwrap();
    let (client, _crx) = node("client", 2, capabilities::ALL, 1);
    let peer = client.connect_to("127.0.0.1", addr.port()).unwrap();
    let info = client.peers()[0].info.clone().unwrap();
    assert_eq!(info.capabilities, capabilities::FORWARD_PROPAGATION);
    client.send_forward_data(peer, 0, &input(0)).unwrap();
    let err = client
        .send_weight_sync(peer, 0, SyncMode::Replace)
        .unwrap_err();
    assert!(
        matches!(
            err,
            NodeError::Net(NetError::Protocol(
                ProtocolError::CapabilityNotAgreed { .. }
            ))
        ),
        "{err}"
    );
    assert!(err.to_string().contains("WEIGHT_SYNC"), "{err}");
    let c = vec![0.0; 30];
    assert!(client.send_hebbian_data(peer, 0, &c, 0.1).is_err());
}

#[test]
fn the_receiver_is_an_iterator() {
    let (server, rx) = node("s", 1, capabilities::ALL, 1);
    let addr = server.start_server().unwrap();
    let (client, _crx) = node("c", 2, capabilities::ALL, 1);
    let peer = client.connect_to("127.0.0.1", addr.port()).unwrap();
    for k in 0..5 {
        client.send_forward_data(peer, 0, &input(k)).unwrap();
    }
    let layers: Vec<u16> = rx
        .filter_map(|event| match event {
            NodeEvent::Message(m) => match m.message() {
                Message::ForwardData { layer_id, data } => Some(layer_id + data.len() as u16),
                _ => None,
            },
            _ => None,
        })
        .take(5)
        .collect();
    assert_eq!(layers, vec![6; 5]);
}

#[test]
fn peers_arriving_and_leaving_are_events_of_their_own() {
    let (server, mut srx) = node("s", 1, capabilities::ALL, 1);
    let addr = server.start_server().unwrap();
    let (client, mut crx) = node("c", 2, capabilities::ALL, 1);
    let client_to_server = client.connect_to("127.0.0.1", addr.port()).unwrap();

    // Each side hears of the other, under the id it uses for it.
    let Some(NodeEvent::PeerConnected { peer, info }) = srx.recv_timeout(Duration::from_secs(10))
    else {
        panic!("the server hears of the client first")
    };
    assert_eq!(info.name, "c");
    assert_eq!(info.layer_sizes, vec![6, 5, 3]);
    let server_to_client = peer;
    assert_eq!(server.peers()[0].conn, server_to_client);
    let Some(event) = crx.recv_timeout(Duration::from_secs(10)) else {
        panic!("the client hears of the server")
    };
    assert_eq!(event.peer(), client_to_server);
    let NodeEvent::PeerConnected { info, .. } = event else {
        panic!("{event:?} is not PeerConnected")
    };
    assert_eq!(info.name, "s");

    // A message in between is a Message, from the same peer.
    client
        .send_forward_data(client_to_server, 0, &input(0))
        .unwrap();
    let Some(NodeEvent::Message(m)) = srx.recv_timeout(Duration::from_secs(10)) else {
        panic!("the message arrives")
    };
    assert_eq!(
        (m.peer(), m.msg_type()),
        (server_to_client, MsgType::ForwardData)
    );

    // The client leaves: both sides hear of it, the server with the client's reason.
    client.disconnect(client_to_server);
    let Some(NodeEvent::PeerDisconnected { peer, cause }) =
        srx.recv_timeout(Duration::from_secs(10))
    else {
        panic!("the server hears of the close")
    };
    assert_eq!(peer, server_to_client);
    assert_eq!(cause, CloseCause::Disconnect(DisconnectReason::NORMAL));
    let Some(NodeEvent::PeerDisconnected { peer, .. }) = crx.recv_timeout(Duration::from_secs(10))
    else {
        panic!("the client hears of its close")
    };
    assert_eq!(peer, client_to_server);
    assert!(srx.recv_timeout(Duration::ZERO).is_none(), "nothing more");
}

#[test]
fn received_data_is_borrowed_from_the_receive_buffer() {
    let (server, mut srx) = node("s", 1, capabilities::ALL, 1);
    let addr = server.start_server().unwrap();
    let (client, _crx) = node("c", 2, capabilities::ALL, 1);
    let peer = client.connect_to("127.0.0.1", addr.port()).unwrap();
    let x = input(3);
    let grads = vec![0.25; 5 * 6 + 5];
    let correlations = vec![0.5; 5 * 6];
    client.send_forward_data(peer, 0, &x).unwrap();
    client.send_backward_data(peer, 0, &grads).unwrap();
    client
        .send_hebbian_data(peer, 0, &correlations, 0.1)
        .unwrap();
    client.send_weight_sync(peer, 0, SyncMode::Replace).unwrap();

    // On this little-endian host the values are read where they arrived: a borrow.
    let in_place = cfg!(target_endian = "little");
    let m = next_data(&mut srx);
    assert_eq!(
        matches!(
            m.message(),
            Message::ForwardData {
                layer_id: 0,
                data: Cow::Borrowed(_)
            }
        ),
        in_place,
        "zero-copy ForwardData"
    );
    assert_eq!(&**f32s(&m.message()), &x[..]);
    if in_place {
        // Every view, and every clone's, reads the same bytes: the frame's in the buffer.
        let clone = m.clone();
        let at = f32s(&m.message()).as_ptr();
        assert_eq!(f32s(&m.message()).as_ptr(), at);
        assert_eq!(f32s(&clone.message()).as_ptr(), at);
    }

    for expected in [
        MsgType::BackwardData,
        MsgType::HebbianData,
        MsgType::WeightSync,
    ] {
        let m = next_data(&mut srx);
        assert_eq!(m.msg_type(), expected);
        let message = m.message();
        let values = f32s(&message);
        assert!(!values.is_empty());
        assert_eq!(matches!(values, Cow::Borrowed(_)), in_place, "{expected:?}");
    }
}

/// A data message's f32 values.
fn f32s<'a>(message: &'a Message<'a>) -> &'a Cow<'a, [f32]> {
    match message {
        Message::ForwardData { data, .. } | Message::BackwardData { data, .. } => data,
        Message::HebbianData { correlations, .. } => correlations,
        Message::WeightSync(w) => &w.values,
        other => panic!("{other:?} carries no f32 data"),
    }
}

#[test]
fn a_message_the_network_cannot_take_is_refused_to_its_sender_and_both_carry_on() {
    let (server, mut server_rx) = node("server", 1, capabilities::ALL, 1);
    let addr = server.start_server().unwrap();
    let (client, mut client_rx) = node("client", 2, capabilities::ALL, 1);
    let peer = client.connect_to("127.0.0.1", addr.port()).unwrap();
    let wait = Duration::from_secs(5);
    let bad = [
        // 2 values for a 6-input layer; a layer the network does not have; a 3x2 matrix
        // for the 5x6 first layer; weights of a layer the network does not have.
        Message::ForwardData {
            layer_id: 0,
            data: Cow::Owned(vec![0.5; 2]),
        },
        Message::BackwardData {
            layer_id: 9,
            data: Cow::Owned(vec![0.5; 4]),
        },
        Message::HebbianData {
            layer_id: 0,
            learning_rate: 0.1,
            rows: 3,
            cols: 2,
            correlations: Cow::Owned(vec![0.5; 6]),
        },
        Message::WeightSync(nnp::wire::WeightSync {
            layer_id: 7,
            mode: SyncMode::Replace,
            rows: 1,
            cols: 1,
            offset: 0,
            sample_count: 1,
            values: Cow::Owned(vec![0.5; 2]),
        }),
    ];
    for message in &bad {
        client.engine().send(peer, message, wait).unwrap();
    }
    client.send_forward_data(peer, 0, &input(1)).unwrap();
    // Weight syncs travel behind small frames (they overtake bulk), so the answer to the good
    // message may come before the weight sync's refusal.
    let mut refused_here = Vec::new();
    let mut answered = false;
    while !answered || refused_here.len() < 4 {
        let message = next_data(&mut server_rx);
        match server.handle_message(&message) {
            Err(e) => refused_here.push((message.msg_type(), e.to_string())),
            Ok(HandleOutcome::Output(output)) => {
                server
                    .send_forward_data(message.peer(), 2, &output)
                    .unwrap();
                answered = true;
            }
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    refused_here.sort_by_key(|(t, _)| *t as u8);
    let types: Vec<MsgType> = refused_here.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        types,
        [
            MsgType::ForwardData,
            MsgType::BackwardData,
            MsgType::HebbianData,
            MsgType::WeightSync
        ]
    );
    // The sender learns of each with its sequence number (the handshake took 0), and gets
    // the answer to the good message: the connection stayed open.
    let mut seen = Vec::new();
    let mut answer = false;
    while !answer || seen.len() < 4 {
        match client_rx.recv_timeout(wait).expect("the refusals arrive") {
            NodeEvent::Refused {
                peer: from,
                sequence,
                reason,
            } => {
                assert_eq!(from, peer);
                seen.push((sequence, reason));
            }
            NodeEvent::Message(m) => {
                assert!(matches!(
                    m.message(),
                    Message::ForwardData { layer_id: 2, .. }
                ));
                answer = true;
            }
            NodeEvent::PeerDisconnected { cause, .. } => panic!("closed: {cause}"),
            _ => {}
        }
    }
    seen.sort();
    let sequences: Vec<Option<u64>> = seen.iter().map(|(s, _)| *s).collect();
    // The weight sync is 4, or 5 when the good ForwardData overtook it on the sending side.
    assert_eq!(sequences[..3], [Some(1), Some(2), Some(3)]);
    assert!(matches!(sequences[3], Some(4 | 5)), "{sequences:?}");
    for ((_, reason), (_, local)) in seen.iter().zip(&refused_here) {
        assert_eq!(reason, local, "the sender reads the receiver's own reason");
    }
    assert_eq!(server.metrics().refusals_sent, 4);
}

/// A coordinator with its own network and sample count averages in the weight syncs of
/// `members` (seeds and sample counts) and ends equal to `NeuralNetwork::average` of all.
fn averaging_matches_nn_average(members: &[(u64, u32)]) {
    let (coordinator, mut rx) = node("coordinator", 100, capabilities::ALL, 4);
    let addr = coordinator.start_server().unwrap();
    let mut workers = Vec::new();
    for (i, &(seed, samples)) in members.iter().enumerate() {
        let (worker, worker_rx) = node(&format!("w{i}"), seed, capabilities::ALL, 1);
        worker.set_sample_count(samples);
        let peer = worker.connect_to("127.0.0.1", addr.port()).unwrap();
        for layer in 0..SIZES.len() as u16 - 1 {
            worker
                .send_weight_sync(peer, layer, SyncMode::Average)
                .unwrap();
        }
        workers.push((worker, worker_rx));
    }
    let syncs = members.len() * (SIZES.len() - 1);
    for _ in 0..syncs {
        let message = next_data(&mut rx);
        coordinator.handle_message(&message).unwrap();
    }
    let own = net(100);
    let nets: Vec<NeuralNetwork> = members.iter().map(|&(seed, _)| net(seed)).collect();
    let mut weighted: Vec<(&NeuralNetwork, u32)> = vec![(&own, 4)];
    weighted.extend(nets.iter().zip(members).map(|(n, &(_, s))| (n, s)));
    let want = NeuralNetwork::average(&weighted).unwrap();
    let got = coordinator.network();
    for layer in 0..SIZES.len() - 1 {
        for (i, (g, w)) in got
            .layer_params(layer)
            .iter()
            .zip(want.layer_params(layer))
            .enumerate()
        {
            assert!((g - w).abs() < 1e-6, "layer {layer} param {i}: {g} vs {w}");
        }
    }
}

#[test]
fn weighted_averaging_of_three_members_equals_nn_average() {
    averaging_matches_nn_average(&[(1, 10), (2, 20), (3, 30)]);
}

#[test]
fn weighted_averaging_of_five_members_equals_nn_average() {
    averaging_matches_nn_average(&[(11, 1), (12, 1), (13, 1), (14, 1), (15, 7)]);
}

#[test]
fn non_finite_data_is_refused_naming_the_first_bad_value() {
    let (server, mut server_rx) = node("server", 1, capabilities::ALL, 1);
    let addr = server.start_server().unwrap();
    let (client, mut client_rx) = node("client", 2, capabilities::ALL, 1);
    let peer = client.connect_to("127.0.0.1", addr.port()).unwrap();
    let mut values = input(3);
    values[4] = f32::NAN;
    client.send_forward_data(peer, 0, &values).unwrap();
    let message = next_data(&mut server_rx);
    let refusal = server.handle_message(&message).unwrap_err().to_string();
    assert!(refusal.contains("index 4"), "{refusal}");
    loop {
        match client_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the refusal")
        {
            NodeEvent::Refused { reason, .. } => {
                assert_eq!(reason, refusal);
                break;
            }
            NodeEvent::Message(m) => panic!("answered NaN with {:?}", m.message()),
            _ => {}
        }
    }
}

/// A model that takes non-finite inputs, reading them as zero: what a user who wants NaN on
/// the wire does (the node's policy is its model's).
struct NanAsZero(NeuralNetwork);

impl Model for NanAsZero {
    fn layer_sizes(&self) -> Vec<usize> {
        Model::layer_sizes(&self.0)
    }
    fn forward_from(&mut self, layer: usize, input: &[f32]) -> Result<Vec<f32>, ModelError> {
        let cleaned: Vec<f32> = input
            .iter()
            .map(|&v| if v.is_finite() { v } else { 0.0 })
            .collect();
        Model::forward_from(&mut self.0, layer, &cleaned)
    }
    fn apply_gradient(&mut self, layer: usize, gradient: &[f32]) -> Result<(), ModelError> {
        Model::apply_gradient(&mut self.0, layer, gradient)
    }
    fn integrate_correlations(
        &mut self,
        layer: usize,
        correlations: &[f32],
        learning_rate: f32,
    ) -> Result<(), ModelError> {
        Model::integrate_correlations(&mut self.0, layer, correlations, learning_rate)
    }
    fn correlations(&self, layer: usize) -> Result<Vec<f32>, ModelError> {
        Model::correlations(&self.0, layer)
    }
    fn params(&self, layer: usize) -> Result<Vec<f32>, ModelError> {
        Model::params(&self.0, layer)
    }
    fn write_params(
        &mut self,
        layer: usize,
        offset: usize,
        values: &[f32],
    ) -> Result<(), ModelError> {
        Model::write_params(&mut self.0, layer, offset, values)
    }
}

/// NaN is refused by the default network, naming the index, and answered by a node whose
/// model takes it.
#[test]
fn non_finite_inputs_are_refused_by_default_and_taken_by_a_model_that_wants_them() {
    let mut with_nan = input(3);
    with_nan[5] = f32::NAN;
    let mut zeroed = with_nan.clone();
    zeroed[5] = 0.0;
    let expected = net(4).forward(&zeroed).unwrap().1;

    let (strict, mut strict_rx) = node("strict", 4, capabilities::ALL, 1);
    let (lenient, mut lenient_rx) =
        DistributedNetwork::new("lenient", "127.0.0.1", 0, NanAsZero(net(4))).unwrap();
    let (client, mut client_rx) = node("client", 9, capabilities::ALL, 1);
    let strict_addr = strict.start_server().unwrap();
    let lenient_addr = lenient.start_server().unwrap();
    let to_strict = client.connect_to("127.0.0.1", strict_addr.port()).unwrap();
    let to_lenient = client.connect_to("127.0.0.1", lenient_addr.port()).unwrap();

    client.send_forward_data(to_strict, 0, &with_nan).unwrap();
    let request = next_data(&mut strict_rx);
    let refused = strict.handle_message(&request).unwrap_err();
    assert!(refused.to_string().contains("index 5"), "{refused}");

    client.send_forward_data(to_lenient, 0, &with_nan).unwrap();
    let request = next_data(&mut lenient_rx);
    let HandleOutcome::Output(output) = lenient.handle_message(&request).unwrap() else {
        panic!("an output")
    };
    lenient.reply(&request, &output).unwrap();
    assert_eq!(output, expected);

    // The client hears of both: the refusal naming its frame, and the answer.
    let (mut refusals, mut answers) = (0, 0);
    while refusals + answers < 2 {
        match client_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("both peers answer")
        {
            NodeEvent::Refused { peer, reason, .. } => {
                assert_eq!(peer, to_strict);
                assert!(reason.contains("index 5"), "{reason}");
                refusals += 1;
            }
            NodeEvent::Message(m) => {
                assert_eq!(m.peer(), to_lenient);
                assert_eq!(f32s(&m.message()).as_ref(), expected.as_slice());
                answers += 1;
            }
            _ => {}
        }
    }
}
