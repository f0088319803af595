//! The `nnp` binary: encode, decode, and the two together; `serve` as a daemon (signals,
//! `--save`), `send` and its refusals, error texts, help texts, and `--json` output.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};

/// Runs `nnp args` with `stdin`: whether it succeeded, its stdout and its stderr.
fn run(args: &[&str], stdin: &[u8]) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nnp"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`run`] without stderr.
fn nnp(args: &[&str], stdin: &[u8]) -> (bool, String) {
    let (ok, out, _) = run(args, stdin);
    (ok, out)
}

/// The address in `nnp serve`'s first line, "listening on ADDR as NAME: …".
fn listening_addr(line: &str) -> String {
    line.strip_prefix("listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("not a listening line: {line:?}"))
        .to_owned()
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut full = vec!["encode"];
    full.extend_from_slice(args);
    let (ok, hex) = nnp(&full, b"");
    assert!(ok, "encode {args:?} failed");
    from_hex(hex.trim())
}

/// The bytes of `encode`'s hex output.
fn from_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len() % 2 == 0, "odd number of hex digits: {hex}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// `decode --json`'s lines; whether it exited 0 is checked by the caller.
fn decode_json(bytes: &[u8]) -> Vec<serde_json::Value> {
    let (_, out) = nnp(&["decode", "--json"], bytes);
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn encode_output_decodes_to_the_same_fields() {
    let cases: Vec<(Vec<&str>, serde_json::Value)> = vec![
        (
            vec!["--type", "forward", "--layer", "3", "--data", "1,-2.5,3"],
            serde_json::json!({"type": "ForwardData", "layer_id": 3, "data": [1.0, -2.5, 3.0]}),
        ),
        (
            vec![
                "--type",
                "hebbian",
                "--layer",
                "1",
                "--rows",
                "2",
                "--cols",
                "2",
                "--learning-rate",
                "0.5",
                "--data",
                "1,2,3,4",
            ],
            serde_json::json!({"type": "HebbianData", "layer_id": 1, "learning_rate": 0.5, "rows": 2, "cols": 2, "correlations": [1.0, 2.0, 3.0, 4.0]}),
        ),
        (
            vec![
                "--type",
                "weight-sync",
                "--layer",
                "2",
                "--rows",
                "1",
                "--cols",
                "2",
                "--offset",
                "1",
                "--average",
                "--samples",
                "7",
                "--data",
                "0.5,0.25",
            ],
            serde_json::json!({"type": "WeightSync", "layer_id": 2, "mode": "Average", "rows": 1, "cols": 2, "offset": 1, "sample_count": 7, "values": [0.5, 0.25]}),
        ),
        (
            vec!["--type", "error", "--code", "6", "--text", "bad layer"],
            serde_json::json!({"type": "Error", "code": 6, "message": "bad layer"}),
        ),
        (
            vec!["--type", "heartbeat", "--timestamp", "123456789"],
            serde_json::json!({"type": "Heartbeat", "timestamp_ns": 123456789, "reply": false}),
        ),
    ];
    for (args, expected) in cases {
        let bytes = encode(&args);
        assert_eq!(bytes.len() % 4, 0, "frames are padded to 4 bytes");
        let (ok, _) = nnp(&["decode"], &bytes);
        assert!(ok, "one good frame: decode exits 0 ({args:?})");
        let decoded = decode_json(&bytes);
        assert_eq!(decoded.len(), 1, "{args:?}");
        assert_eq!(decoded[0]["message"], expected, "{args:?}");
    }
}

#[test]
fn decode_reports_garbage_and_finds_every_frame() {
    let a = encode(&["--type", "forward", "--layer", "1", "--data", "1,2"]);
    let b = encode(&["--type", "backward", "--layer", "2", "--data", "3"]);
    let mut corrupt = encode(&["--type", "forward", "--layer", "9", "--data", "5"]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    let c = encode(&["--type", "disconnect", "--code", "1", "--text", "bye"]);
    let stream = [&b"junk!"[..], &a, b"NN", &b, &corrupt, &c, &a[..10]].concat();
    let items = decode_json(&stream);
    let frames: Vec<&serde_json::Value> = items
        .iter()
        .filter(|i| i.get("message").is_some())
        .collect();
    let types: Vec<&str> = frames
        .iter()
        .map(|f| f["message"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["ForwardData", "BackwardData", "Disconnect"]);
    let garbage: Vec<u64> = items
        .iter()
        .filter_map(|i| i["offset"].as_u64().filter(|_| i.get("garbage").is_some()))
        .collect();
    assert_eq!(
        garbage.len(),
        3,
        "junk, stray bytes, the corrupt frame: {items:?}"
    );
    assert_eq!(garbage[0], 0);
    assert!(items.last().unwrap().get("truncated").is_some());
    // Everything found is printed, and the exit status says that some of it was bad.
    let (ok, text, err) = run(&["decode"], &stream);
    assert!(!ok, "bad regions: decode exits non-zero");
    assert!(text.contains("checksum mismatch"), "{text}");
    assert!(text.contains("3 frames, 4 bad regions"), "{text}");
    assert!(
        err.contains("standard input") && err.contains("4 bad regions"),
        "{err}"
    );
    let (ok, out, _) = run(&["decode", "--json"], &stream);
    assert!(!ok);
    assert_eq!(json_lines(&out).len(), items.len());
}

#[test]
fn serve_and_send_in_two_processes() {
    let mut server = Command::new(env!("CARGO_BIN_EXE_nnp"))
        .args([
            "serve",
            "--port",
            "0",
            "--layers",
            "4,3,2",
            "--max-messages",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let addr = listening_addr(&lines.next().unwrap().unwrap());
    let (ok, out) = nnp(
        &[
            "--json", "send", "--to", &addr, "--type", "forward", "--data", "1,2,3,4",
        ],
        b"",
    );
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let reply: Vec<f64> = v["reply"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(v["reply"]["type"], "ForwardData");
    assert_eq!(reply.len(), 2, "the output layer has 2 neurons");
    assert!(
        (reply.iter().sum::<f64>() - 1.0).abs() < 1e-5,
        "a softmax output: {reply:?}"
    );
    // A message the server's network cannot take is sent, refused there, and counted; the
    // sender reports the refusal and exits non-zero.
    let (ok, out, err) = run(
        &[
            "send", "--to", &addr, "--type", "backward", "--layer", "7", "--data", "1",
        ],
        b"",
    );
    assert!(!ok, "{out}");
    assert!(err.contains("refused") && err.contains("layer 7"), "{err}");
    assert!(
        server.wait().unwrap().success(),
        "the server exits after two messages"
    );
}

/// `serve --weights` starts from a saved network and `--save` writes what it became.
#[test]
fn serve_loads_and_saves_weights_files() {
    use nnp::nn::{Activation, NeuralNetwork};
    let dir = std::env::temp_dir().join(format!("nnp-cli-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (start, end) = (dir.join("start.nnpw"), dir.join("end.nnpw"));
    let net = NeuralNetwork::builder(&[3, 4, 2])
        .output_activation(Activation::Softmax)
        .seed(11)
        .build()
        .unwrap();
    net.save_weights(&start).unwrap();

    let mut server = Command::new(env!("CARGO_BIN_EXE_nnp"))
        .args([
            "serve",
            "--port",
            "0",
            "--max-messages",
            "2",
            "--learning-rate",
            "0.5",
        ])
        .arg("--weights")
        .arg(&start)
        .arg("--save")
        .arg(&end)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let addr = listening_addr(&lines.next().unwrap().unwrap());

    // The loaded network answers: bit for bit the saved one's output.
    let (ok, out) = nnp(
        &[
            "--json", "send", "--to", &addr, "--type", "forward", "--data", "0.5,-1,2",
        ],
        b"",
    );
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let reply: Vec<f32> = v["reply"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(reply, net.forward(&[0.5, -1.0, 2.0]).unwrap().1);

    // A gradient for layer 1 (2 x 4 weights + 2 biases) moves it by -0.5 x gradient.
    let gradient: Vec<f32> = (0..10).map(|i| i as f32 * 0.1 - 0.3).collect();
    let text = gradient
        .iter()
        .map(|g| g.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let (ok, out) = nnp(
        &[
            "send", "--to", &addr, "--type", "backward", "--layer", "1", "--data", &text,
        ],
        b"",
    );
    assert!(ok, "{out}");
    assert!(server.wait().unwrap().success());

    let saved = NeuralNetwork::load_weights(&end).unwrap();
    assert_eq!(saved.layer_params(0), net.layer_params(0));
    for ((got, before), g) in saved
        .layer_params(1)
        .iter()
        .zip(net.layer_params(1))
        .zip(&gradient)
    {
        assert_eq!(*got, before - 0.5 * g);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every line of `out` parsed as JSON; fails on anything else.
fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\nall output:\n{out}"))
        })
        .collect()
}

/// The help lists the values that are accepted, and only those.
#[test]
fn help_lists_the_accepted_values() {
    let (ok, help) = nnp(&["serve", "--help"], b"");
    assert!(ok);
    assert!(
        help.contains("64,32,10"),
        "the comma form of --layers: {help}"
    );
    for mode in nnp::nn::HebbianLearningMode::ALL {
        assert!(help.contains(mode.name()), "--mode {}: {help}", mode.name());
    }
    for cap in [
        "forward-propagation",
        "backpropagation",
        "hebbian-learning",
        "weight-sync",
        "correlation-analysis",
        "multi-layer",
        "real-time",
        "compression",
        "all",
    ] {
        assert!(help.contains(cap), "--capabilities {cap}: {help}");
    }
    // What the help lists is what is accepted, in either spelling and any case.
    for caps in ["weight-sync,FORWARD_PROPAGATION", "All"] {
        let (ok, _, err) = run(&["serve", "--capabilities", caps, "--layers", "4,0"], b"");
        assert!(!ok && err.contains("--layers 4,0"), "{caps} parses: {err}");
    }
    let (ok, _, err) = run(&["serve", "--capabilities", "telepathy"], b"");
    assert!(!ok && err.contains("possible values"), "{err}");
    let (ok, _, err) = run(&["serve", "--mode", "hopfield"], b"");
    assert!(!ok && err.contains("anti-hebbian"), "{err}");

    let (ok, help) = nnp(&["send", "-h"], b"");
    assert!(ok);
    assert!(
        help.contains("[possible values: forward, backward, hebbian, weight-sync]"),
        "{help}"
    );
    let (ok, _, err) = run(&["send", "--to", "127.0.0.1:1", "--type", "heartbeat"], b"");
    assert!(!ok && err.contains("possible values"), "{err}");
    // encode builds every type.
    let (ok, help) = nnp(&["encode", "-h"], b"");
    assert!(ok);
    assert!(
        help.contains("forward, backward, hebbian, weight-sync, heartbeat, disconnect, error"),
        "{help}"
    );
}

/// Waits for a child at most `secs` seconds; kills it and fails past that.
fn wait_at_most(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the child did not exit within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `send` reports a refusal with the server's reason and exits non-zero; a message that is not
/// refused says so after the stated window.
#[test]
fn send_reports_refusals() {
    let mut server = Command::new(env!("CARGO_BIN_EXE_nnp"))
        .args(["serve", "--port", "0", "--layers", "4,3,2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let addr = listening_addr(&lines.next().unwrap().unwrap());

    // ForwardData of 3 values into a 4-input layer.
    let (ok, out, err) = run(
        &[
            "send", "--to", &addr, "--type", "forward", "--data", "1,2,3",
        ],
        b"",
    );
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!("{addr} refused the ForwardData")),
        "{err}"
    );
    assert!(
        err.contains("layer 0") && err.contains('4') && err.contains('3'),
        "{err}"
    );

    // HebbianData of a 2x2 matrix for the 3x4 layer 0.
    let (ok, out, err) = run(
        &[
            "--json", "send", "--to", &addr, "--type", "hebbian", "--rows", "2", "--cols", "2",
            "--data", "1,2,3,4",
        ],
        b"",
    );
    assert!(!ok);
    let v = &json_lines(&out)[0];
    let reason = v["refused"].as_str().unwrap();
    assert!(reason.contains("layer 0") && reason.contains("3x4"), "{v}");
    assert!(err.contains(reason), "{err}");

    // The right shape is applied: not refused within the window.
    let (ok, out, err) = run(
        &[
            "send",
            "--to",
            &addr,
            "--type",
            "hebbian",
            "--rows",
            "3",
            "--cols",
            "4",
            "--data",
            "1,2,3,4,5,6,7,8,9,10,11,12",
            "--timeout",
            "0.3",
        ],
        b"",
    );
    assert!(ok, "{err}");
    assert!(out.contains("not refused within 0.3 s"), "{out}");

    kill(&server, "TERM");
    assert!(wait_at_most(&mut server, 10).success());
    let summary = lines.next().unwrap().unwrap();
    assert!(summary.contains("(1 applied, 2 refused)"), "{summary}");
}

/// `demo --quick --json`: standard output is JSON lines only (the report goes to stderr).
#[test]
fn demo_json_prints_only_json() {
    let (ok, out, err) = run(&["--json", "demo", "--quick"], b"");
    assert!(ok, "{err}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0]["remote_accuracy"].as_f64().unwrap() > 0.5, "{out}");
    assert!(
        err.contains("NNP demo"),
        "the human report on stderr: {err}"
    );
}

/// `demo federated|pipeline|ensemble --quick --json`: a JSON line per round, epoch or request,
/// then a summary with the accuracy and the bytes on the wire.
#[test]
fn demo_of_each_pattern_prints_progress_and_a_summary() {
    for (pattern, progress, floor) in [
        ("federated", "round", 0.8),
        ("pipeline", "epoch", 0.5),
        ("ensemble", "request", 0.9),
    ] {
        let (ok, out, err) = run(&["--json", "demo", pattern, "--quick"], b"");
        assert!(ok, "{pattern}: {err}");
        let lines = json_lines(&out);
        let (summary, steps) = lines.split_last().unwrap();
        assert!(!steps.is_empty(), "{pattern}: {out}");
        assert!(
            steps.iter().all(|l| l["event"] == progress),
            "{pattern}: {out}"
        );
        assert_eq!(summary["event"], "summary", "{pattern}: {out}");
        assert!(
            summary["accuracy"].as_f64().unwrap() >= floor,
            "{pattern}: {summary}"
        );
        assert!(
            summary["bytes_out"].as_u64().unwrap() > 0,
            "{pattern}: {summary}"
        );
    }
}

/// A fresh directory for one test's files.
fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nnp-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sends `signal` (`TERM`, `INT`) to a child process.
fn kill(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} failed");
}

/// `nnp serve --weights A --save B` on SIGTERM or SIGINT: exits 0, every peer gets a
/// Disconnect SHUTDOWN, B holds A's parameters, and the listening line and the summary are
/// printed (with `--json`: as JSON lines, and nothing else on stdout).
fn daemon_stops_cleanly(signal: &str, json: bool) {
    use nnp::net::{CloseCause, Engine, EngineConfig, NetEvent};
    use nnp::nn::{Activation, NeuralNetwork};
    use nnp::wire::{DisconnectReason, Message};
    use std::borrow::Cow;
    use std::io::Read;
    use std::time::Duration;

    let dir = temp_dir(&format!("daemon-{signal}"));
    let (a, b) = (dir.join("a.nnpw"), dir.join("b.nnpw"));
    let net = NeuralNetwork::builder(&[3, 5, 2])
        .output_activation(Activation::Softmax)
        .seed(5)
        .build()
        .unwrap();
    net.save_weights(&a).unwrap();

    let mut command = Command::new(env!("CARGO_BIN_EXE_nnp"));
    if json {
        command.arg("--json");
    }
    let mut server = command
        .args(["serve", "--port", "0"])
        .arg("--weights")
        .arg(&a)
        .arg("--save")
        .arg(&b)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr = if json {
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(v["layers"], serde_json::json!([3, 5, 2]), "{v}");
        assert!(v["capabilities"].as_array().unwrap().len() >= 4, "{v}");
        v["listening"].as_str().unwrap().to_owned()
    } else {
        assert!(first.contains("layers 3,5,2"), "{first}");
        assert!(first.contains("forward-propagation"), "{first}");
        listening_addr(&first)
    };

    // A client asks for one output, then waits for the server to go.
    let (engine, handle, mut rx) = Engine::start(EngineConfig::default().threads(1)).unwrap();
    let conn = handle.connect(addr.as_str()).unwrap();
    let input = [0.5f32, -1.0, 2.0];
    let ask = Message::ForwardData {
        layer_id: 0,
        data: Cow::Borrowed(&input),
    };
    handle.send(conn, &ask, Duration::from_secs(5)).unwrap();
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Some(NetEvent::Frame(_)) => break,
            Some(NetEvent::Connected { .. }) => continue,
            other => panic!("expected the answer, got {other:?}"),
        }
    }

    kill(&server, signal);
    let cause = loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Some(NetEvent::Disconnected { cause, .. }) => break cause,
            Some(_) => continue,
            None => panic!("the server never closed the connection"),
        }
    };
    assert!(
        matches!(cause, CloseCause::Disconnect(DisconnectReason::SHUTDOWN)),
        "the client was told the server shuts down: {cause:?}"
    );
    let status = wait_at_most(&mut server, 10);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let mut stderr = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status:?}; stderr: {stderr}");
    engine.shutdown();

    let summary = rest.trim_end();
    if json {
        let lines = json_lines(&format!("{first}{rest}"));
        assert_eq!(
            lines.len(),
            2,
            "the listening line and the summary: {lines:?}"
        );
        let s = &lines[1];
        assert_eq!(s["stopped"], format!("SIG{signal}"), "{s}");
        assert_eq!(s["peers_seen"], 1, "{s}");
        assert_eq!(s["data_messages"], 1, "{s}");
        assert_eq!(s["refused"], 0, "{s}");
        assert_eq!(s["answers_sent"], 1, "{s}");
        assert_eq!(s["saved"], b.display().to_string(), "{s}");
    } else {
        assert!(
            summary.starts_with(&format!("stopped on SIG{signal}")),
            "{summary}"
        );
        assert!(summary.contains("1 peer seen"), "{summary}");
        assert!(summary.contains("1 answer sent"), "{summary}");
        assert!(summary.contains(&b.display().to_string()), "{summary}");
    }

    let saved = NeuralNetwork::load_weights(&b).unwrap();
    assert_eq!(saved.layer_sizes(), net.layer_sizes());
    for l in 0..net.layer_count() {
        assert_eq!(saved.layer_params(l), net.layer_params(l), "layer {l}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    daemon_stops_cleanly("TERM", false);
}

#[test]
fn serve_stops_cleanly_on_sigint_with_json_lines() {
    daemon_stops_cleanly("INT", true);
}

/// A `--save` that could not be written fails at start, naming the path, before listening.
#[test]
fn serve_checks_the_save_path_before_listening() {
    let dir = temp_dir("bad-save");
    let missing = dir.join("no-such-dir").join("out.nnpw");
    let (ok, out, err) = run(
        &["serve", "--port", "0", "--save", missing.to_str().unwrap()],
        b"",
    );
    assert!(!ok);
    assert!(out.is_empty(), "nothing listened: {out}");
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    let (ok, out, err) = run(
        &["serve", "--port", "0", "--save", dir.to_str().unwrap()],
        b"",
    );
    assert!(!ok && out.is_empty());
    assert!(
        err.contains(dir.to_str().unwrap()) && err.contains("directory"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "the write check leaves nothing behind"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Errors name the address, file or value involved, in words rather than Debug dumps.
#[test]
fn errors_name_what_they_are_about() {
    let (ok, _, err) = run(
        &[
            "send",
            "--to",
            "127.0.0.1:1",
            "--type",
            "forward",
            "--data",
            "1",
        ],
        b"",
    );
    assert!(!ok);
    assert!(
        err.contains("could not connect to 127.0.0.1:1: Connection refused"),
        "{err}"
    );

    let (ok, _, err) = run(
        &[
            "send",
            "--to",
            "no-port-here",
            "--type",
            "forward",
            "--data",
            "1",
        ],
        b"",
    );
    assert!(!ok);
    assert!(
        err.contains("\"no-port-here\"") && err.contains("host:port"),
        "{err}"
    );

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let (ok, out, err) = run(&["serve", "--port", &port], b"");
    assert!(!ok && out.is_empty());
    assert!(
        err.contains(&format!(
            "could not listen on 127.0.0.1:{port}: Address already in use"
        )),
        "{err}"
    );
    drop(busy);

    let dir = temp_dir("errors");
    let text = dir.join("hello.txt");
    std::fs::write(&text, "hello, not weights\n").unwrap();
    let (ok, _, err) = run(
        &["serve", "--port", "0", "--weights", text.to_str().unwrap()],
        b"",
    );
    assert!(!ok);
    assert!(err.contains(text.to_str().unwrap()), "{err}");
    assert!(
        err.contains("not an NNP weights file")
            && err.contains("\"hell\"")
            && err.contains("\"NNPW\""),
        "{err}"
    );
    assert!(!err.contains("BadMagic"), "{err}");

    let missing = dir.join("missing.nnpw");
    let (ok, _, err) = run(
        &[
            "serve",
            "--port",
            "0",
            "--weights",
            missing.to_str().unwrap(),
        ],
        b"",
    );
    assert!(!ok);
    assert!(
        err.contains(missing.to_str().unwrap()) && err.contains("No such file or directory"),
        "{err}"
    );

    let (ok, _, err) = run(&["decode", missing.to_str().unwrap()], b"");
    assert!(!ok);
    assert!(
        err.contains(&format!("could not read {}", missing.display())),
        "{err}"
    );

    let (ok, _, err) = run(&["serve", "--port", "0", "--layers", "4,0"], b"");
    assert!(!ok);
    assert!(err.contains("--layers 4,0"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `nnp bench throughput` streams through plain sends and through a `Sender` in one process,
/// every echo counted, and says how the two compare (the rates themselves are the bench's).
#[test]
fn bench_throughput_compares_plain_sends_with_a_sender() {
    let (ok, out) = nnp(&["bench", "throughput", "--count", "20000", "--json"], b"");
    assert!(ok, "{out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["messages"], 20000);
    let plain = report["messages_per_s"].as_f64().unwrap();
    let batched = report["sender_messages_per_s"].as_f64().unwrap();
    assert!(plain > 0.0 && batched > 0.0, "{report}");
    let ratio = report["ratio_to_sender"].as_f64().unwrap();
    assert!((ratio - plain / batched).abs() < 1e-9, "{report}");
}

/// `nnp keygen` makes the keys; `serve --auth-key --allowed-peers` lets in the listed key and
/// refuses another (`AUTHENTICATION_FAILED`); a key file that is not one is named in the error.
#[test]
fn keygen_keys_authenticate_serve_and_send() {
    let dir = temp_dir("auth");
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    for name in ["server.pem", "client.pem", "other.pem"] {
        let (ok, out) = nnp(&["keygen", "--out", &path(name)], b"");
        assert!(ok && out.trim().len() == 64, "{out}");
        assert_eq!(
            std::fs::read_to_string(path(&format!("{name}.pub"))).unwrap(),
            out
        );
    }
    let (ok, _, err) = run(&["keygen", "--out", &path("server.pem")], b"");
    assert!(!ok && err.contains("server.pem"), "no overwrite: {err}");

    let mut server = Command::new(env!("CARGO_BIN_EXE_nnp"))
        .args([
            "serve",
            "--port",
            "0",
            "--layers",
            "4,3,2",
            "--max-messages",
            "1",
        ])
        .args(["--auth-key", &path("server.pem")])
        .args(["--allowed-peers", &path("client.pem.pub")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let addr = listening_addr(&lines.next().unwrap().unwrap());
    let send = |key: &str| {
        run(
            &[
                "send",
                "--to",
                &addr,
                "--type",
                "forward",
                "--data",
                "1,2,3,4",
                "--auth-key",
                &path(key),
                "--allowed-peers",
                &path("server.pem.pub"),
            ],
            b"",
        )
    };
    let (ok, _, err) = send("other.pem");
    assert!(!ok && err.contains("authentication failed"), "{err}");
    let (ok, _, err) = send("client.pem.pub");
    assert!(!ok && err.contains("client.pem.pub"), "{err}");
    let (ok, out, err) = send("client.pem");
    assert!(ok, "{out}{err}");
    assert!(server.wait().unwrap().success());
    std::fs::remove_dir_all(&dir).unwrap();
}
