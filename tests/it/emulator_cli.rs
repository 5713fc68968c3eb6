//! `sfcdc emulator` as a user runs it: its banner, its fault, fulfilment and sink flags, and its
//! `--state` file across restarts. (The emulator as a system is tested in its own crate,
//! `emulator/tests/`; this is sfcdc's command line around it.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::json;
use sfcdc::proto::{ReplayPreset, TopicRequest};
use sfcdc_emulator::EmulatorConfig;

use crate::common::*;

const ORDERS: &str = "/data/OrderChangeEvent";

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn field_of<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} in {line}"))
}

#[tokio::test]
async fn the_binary_prints_its_addresses_and_applies_flag_faults() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_sfcdc"))
            .args([
                "emulator",
                "--grpc-addr",
                "127.0.0.1:0",
                "--rest-addr",
                "127.0.0.1:0",
                "--bulk",
                "5",
            ])
            .args([
                "--fault",
                "corrupt-next",
                "--fault",
                "long-replay-ids",
                "--ca-out",
            ])
            .arg(&ca)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(crate::common::logs::child_log("emulator")).unwrap())
            .spawn()
            .expect("sfcdc runs"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert!(line.starts_with("sfcdc emulator ready:"), "{line}");
    let rest = field_of(&line, "rest").to_owned();
    assert_eq!(field_of(&line, "ca"), ca.display().to_string());
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));

    // sfcdc's own client, trusting the CA file: it names its TLS provider, so the test does
    // not depend on another test having installed a process default.
    let http = sfcdc::salesforce::http::http_client(Some(&ca)).unwrap();
    let token: serde_json::Value = http
        .post(format!("{rest}/services/oauth2/token"))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "sfcdc-demo"),
            ("client_secret", "sfcdc-demo-secret"),
            ("username", "demo@sfcdc.test"),
            ("password", "sfcdc-demo-password"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(token["access_token"].as_str().unwrap().contains('!'));
    // Start-up faults are armed after --bulk, so the five bulk events are intact and the next
    // event is both corrupt and carries a 10-byte replay id.
    let access = token["access_token"].as_str().unwrap().to_owned();
    let org_id = token["id"]
        .as_str()
        .unwrap()
        .split('/')
        .rev()
        .nth(1)
        .unwrap()
        .to_owned();
    let account: serde_json::Value = http
        .get(format!("{rest}/services/data/v60.0/query"))
        .query(&[("q", "SELECT Id FROM Account LIMIT 1")])
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created = http
        .post(format!("{rest}/services/data/v60.0/sobjects/Order"))
        .bearer_auth(&access)
        .json(&json!({"AccountId": account["records"][0]["Id"], "EffectiveDate": "2024-01-01", "Status": "Draft"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let channel = tonic::transport::Channel::from_shared(field_of(&line, "grpc").to_owned())
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let auth = Auth {
        token: Some(access),
        instance: Some(rest.clone()),
        tenant: Some(org_id),
    };
    let mut client = sfcdc::proto::pub_sub_client::PubSubClient::with_interceptor(channel, auth);
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Earliest, vec![], 10),
    )
    .await
    .unwrap();
    let events = sub.events(6).await;
    assert!(events[..5].iter().all(|e| e.replay_id.len() == 8));
    assert_eq!(events[5].replay_id.len(), 10);
    let ev = events[5].event.as_ref().unwrap();
    let schema = client
        .get_schema(sfcdc::proto::SchemaRequest {
            schema_id: ev.schema_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .schema_json;
    let schema = apache_avro::Schema::parse_str(&schema).unwrap();
    assert!(try_decode(&schema, &mut &ev.payload[..]).is_err());
}

#[tokio::test]
async fn bad_flags_fail_with_a_message_naming_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_sfcdc"))
        .args([
            "emulator",
            "--keepalive",
            "300s",
            "--grpc-addr",
            "127.0.0.1:0",
            "--rest-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    crate::common::logs::keep("emulator-bad-flag", &out.stderr);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--keepalive"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_sfcdc"))
        .args(["emulator", "--fault", "explode"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown fault"));
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("org.json");
    let config = || EmulatorConfig {
        state: Some(state.clone()),
        ..test_config()
    };
    let org = Org::start_with(config()).await;
    let order = org.create_order(json!({"Name": "persisted"})).await;
    org.fault(json!({"kind": "schema_change"})).await;
    org.patch_order(&order, json!({"Fulfilment_Notes__c": "kept"}))
        .await;
    let mut client = org.client().await;
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Earliest, vec![], 10),
    )
    .await
    .unwrap();
    let before = sub.events(2).await;
    let token = org.token.clone();
    let Org { emu, .. } = org;
    emu.shutdown().await;

    let org = Org::start_with(config()).await;
    // The old token still works, as a real session would.
    let mut client = org
        .client_with(Auth {
            token: Some(token),
            ..org.auth()
        })
        .await;
    let (status, rec) = org
        .rest(
            reqwest::Method::GET,
            &format!("/services/data/v60.0/sobjects/Order/{order}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(rec["Fulfilment_Notes__c"], "kept");
    let mut sub = Sub::open(
        &mut client,
        fetch(
            ORDERS,
            ReplayPreset::Custom,
            before[0].replay_id.to_vec(),
            10,
        ),
    )
    .await
    .unwrap();
    let after = sub.events(1).await;
    assert_eq!(after[0].replay_id, before[1].replay_id);
    for e in &before {
        // Both schema versions are still served.
        org.schema_json(&mut client, &e.event.as_ref().unwrap().schema_id)
            .await;
    }
    client
        .get_topic(TopicRequest {
            topic_name: ORDERS.into(),
        })
        .await
        .unwrap();
}

/// What an HTTP call answered: its status and its JSON body (or the text when it is not JSON).
struct Answer {
    status: u16,
    body: serde_json::Value,
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.expect("HTTP call");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    }
}

#[tokio::test]
async fn emulator_fulfil_binary_flags_configure_the_sinks() {
    let bad = Command::new(env!("CARGO_BIN_EXE_sfcdc"))
        .args([
            "emulator",
            "--grpc-addr",
            "127.0.0.1:0",
            "--rest-addr",
            "127.0.0.1:0",
        ])
        .args(["--fulfilment-failure-rate", "1.5"])
        .output()
        .expect("sfcdc runs");
    assert!(!bad.status.success());
    crate::common::logs::keep("emulator-bad-flag", &bad.stderr);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("--fulfilment-failure-rate"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_sfcdc"))
            .args([
                "emulator",
                "--grpc-addr",
                "127.0.0.1:0",
                "--rest-addr",
                "127.0.0.1:0",
            ])
            .args([
                "--fulfilment-latency",
                "0s",
                "--fulfilment-progress-steps",
                "2",
            ])
            .args([
                "--fulfilment-failure-rate",
                "1",
                "--fulfilment-error-rate",
                "0",
            ])
            .args(["--fulfilment-sync-rate", "0", "--fulfilment-token", "tok"])
            .args([
                "--fulfilment-no-batch",
                "--webhook-secret",
                "",
                "--github-token",
                "gh",
            ])
            .arg("--ca-out")
            .arg(&ca)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(crate::common::logs::child_log("emulator")).unwrap())
            .spawn()
            .expect("sfcdc runs"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let last = line.trim_start().starts_with("GitHub API:");
            lines.push(line);
            if last {
                break;
            }
        }
        lines
    })
    .await
    .unwrap();
    let find = |prefix: &str| {
        banner
            .iter()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {banner:?}"))
            .trim()
            .to_owned()
    };
    let fulfilment = find("Fulfilment API:");
    let base = fulfilment.split_whitespace().next().unwrap().to_owned();
    assert!(base.starts_with("https://127.0.0.1:") && base.ends_with("/fulfilment"));
    assert!(fulfilment.contains("token tok"), "{fulfilment}");
    let rest = base.trim_end_matches("/fulfilment").to_owned();
    assert!(find("Webhook sink:").starts_with(&format!("{rest}/hooks/{{name}}")));
    assert!(find("GitHub API:").contains("token gh"));

    let http = sfcdc::salesforce::http::http_client(Some(&ca)).unwrap();
    let a = send(
        http.post(format!("{base}/orders"))
            .bearer_auth("tok")
            .header("Idempotency-Key", "cli-1")
            .json(&json!({"Id": "801Hs0000000C01"})),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.body);
    let op = a.body["operation_id"].as_str().unwrap();
    let done = send(
        http.get(format!("{base}/operations/{op}"))
            .bearer_auth("tok"),
    )
    .await;
    assert_eq!(done.body["status"], "failed", "{}", done.body);
    let batch = send(
        http.get(format!("{base}/operations?ids={op}"))
            .bearer_auth("tok"),
    )
    .await;
    assert_eq!(batch.status, 404);
    let control = send(http.get(format!("{rest}/emulator/fulfilment"))).await;
    assert_eq!(control.body["config"]["progress_steps"], 2);
    // No webhook secret: unsigned hooks are accepted.
    let hook = send(http.post(format!("{rest}/hooks/x")).body("{}")).await;
    assert_eq!(hook.status, 204);
    let gh = send(
        http.post(format!("{rest}/repos/o/r/dispatches"))
            .header("authorization", "token gh")
            .json(&json!({"event_type": "e"})),
    )
    .await;
    assert_eq!(gh.status, 204);
}
