//! Traces: the real binary exports its spans over OTLP (http/protobuf and gRPC) to a receiver
//! this test runs on loopback, and the span tree of one scan is checked: the scan span with the
//! caller's ids, one child per phase, one grandchild per scanner, and the request span that
//! continued the caller's `traceparent`. The JSON log lines carry the same trace id.

use std::collections::HashMap;
use std::convert::Infallible;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use serde_json::Value;

use crate::helpers::*;

/// One exported span, flattened with the resource it came from.
#[derive(Debug, Clone)]
struct ExportedSpan {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
    attributes: HashMap<String, String>,
    resource: HashMap<String, String>,
}

type Received = Arc<Mutex<Vec<ExportedSpan>>>;

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn record(received: &Received, request: ExportTraceServiceRequest) {
    let mut spans = received.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(ExportedSpan {
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    name: span.name.clone(),
                    kind: span.kind,
                    attributes: attributes(&span.attributes),
                    resource: resource.clone(),
                });
            }
        }
    }
}

/// An OTLP/HTTP receiver (`POST /v1/traces`, protobuf bodies) on a loopback port.
async fn start_http_receiver() -> (u16, Received) {
    async fn export(
        State(received): State<Received>,
        body: Bytes,
    ) -> impl axum::response::IntoResponse {
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
        record(&received, request);
        (
            [("content-type", "application/x-protobuf")],
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
    }
    let received: Received = Arc::default();
    let app = Router::new()
        .route("/v1/traces", post(export))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

/// An OTLP/gRPC receiver (HTTP/2 without TLS, `TraceService/Export`) on a loopback port.
async fn start_grpc_receiver() -> (u16, Received) {
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let state = state.clone();
                    async move {
                        assert_eq!(
                            req.uri().path(),
                            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                        );
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        // gRPC framing: 1 byte compression flag, 4 bytes length, the message.
                        assert_eq!(body[0], 0, "uncompressed message");
                        let request = ExportTraceServiceRequest::decode(&body[5..])
                            .expect("an OTLP protobuf message");
                        record(&state, request);
                        let message = ExportTraceServiceResponse::default().encode_to_vec();
                        let mut framed = vec![0u8];
                        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
                        framed.extend_from_slice(&message);
                        let mut trailers = hyper::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        let frames = vec![
                            Ok::<_, Infallible>(Frame::data(Bytes::from(framed))),
                            Ok(Frame::trailers(trailers)),
                        ];
                        let response = hyper::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(StreamBody::new(futures_util::stream::iter(frames)))
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    (port, received)
}

async fn wait_for_spans(
    received: &Received,
    what: &str,
    done: impl Fn(&[ExportedSpan]) -> bool,
) -> Vec<ExportedSpan> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = received.lock().unwrap().clone();
        if done(&spans) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} among the exported spans: {:#?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn submit_and_wait(
    client: &reqwest::Client,
    base: &str,
    git_url: &str,
    traceparent: Option<&str>,
) -> String {
    let mut request = client
        .post(format!("{base}/v1/security-scans"))
        .json(&serde_json::json!({
            "workspace_id": "ws-traces",
            "component_id": "api-gateway",
            "assessment_id": "release-7",
            "git_url": git_url,
            "branch": "main",
            "profile": "light",
        }));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let id = body["test_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let scan: Value = client
            .get(format!("{base}/v1/security-scans/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if scan["status"] == "SUCCEEDED" {
            return id;
        }
        assert_ne!(scan["status"], "FAILED", "{scan}");
        assert!(Instant::now() < deadline, "scan did not finish: {scan}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn child_named<'a>(
    spans: &'a [ExportedSpan],
    parent: &ExportedSpan,
    name: &str,
) -> &'a ExportedSpan {
    spans
        .iter()
        .find(|s| s.parent_span_id == parent.span_id && s.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no span `{name}` under `{}`; children: {:?}",
                parent.name,
                spans
                    .iter()
                    .filter(|s| s.parent_span_id == parent.span_id)
                    .map(|s| &s.name)
                    .collect::<Vec<_>>()
            )
        })
}

#[tokio::test]
async fn a_scan_exports_its_span_tree_over_otlp_http_and_flushes_on_shutdown() {
    let git = GitServer::start();
    git.create_repo("traced", &[("README.md", "hello\n")]);
    let (receiver_port, received) = start_http_receiver().await;
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("service.log");
    let endpoint = format!("http://127.0.0.1:{receiver_port}");
    let mut service = ServiceProcess::start_with_stdout(
        &data.path().join("data"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            // Nothing leaves before shutdown: what arrives proves the flush at exit.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
        Stdio::from(std::fs::File::create(&log_path).unwrap()),
    );
    let client = reqwest::Client::new();
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let id = submit_and_wait(
        &client,
        &service.address,
        &git.url("traced"),
        Some(&format!("00-{caller_trace}-{caller_span}-01")),
    )
    .await;
    assert!(
        received.lock().unwrap().is_empty(),
        "spans are batched until shutdown in this test"
    );

    assert!(service.terminate().success());
    let spans = wait_for_spans(&received, "scan span", |spans| {
        spans.iter().any(|s| s.name == "scan")
    })
    .await;

    // The scan: a root span with the caller's ids.
    let scan = spans
        .iter()
        .find(|s| s.name == "scan" && s.attributes.get("test_id") == Some(&id))
        .expect("the scan span");
    assert_eq!(scan.parent_span_id, "", "a scan starts its own trace");
    for (key, value) in [
        ("workspace_id", "ws-traces"),
        ("component_id", "api-gateway"),
        ("assessment_id", "release-7"),
        ("profile", "light"),
        ("scan.status", "succeeded"),
    ] {
        assert_eq!(
            scan.attributes.get(key).map(String::as_str),
            Some(value),
            "{key}: {scan:?}"
        );
    }
    assert_eq!(
        scan.resource.get("service.name").map(String::as_str),
        Some("certus-assurance")
    );

    // One child per phase, and one grandchild per scanner under the scan phase.
    let clone = child_named(&spans, scan, "phase clone");
    let scanners = child_named(&spans, scan, "phase scan");
    let bundle = child_named(&spans, scan, "phase bundle");
    assert_eq!(clone.attributes["scan.phase"], "clone");
    assert_eq!(bundle.attributes["scan.phase"], "bundle");
    let secrets = child_named(&spans, scanners, "scanner secrets");
    assert_eq!(secrets.attributes["scanner.name"], "secrets");
    assert_eq!(secrets.attributes["scanner.outcome"], "success");
    for span in [clone, scanners, bundle, secrets] {
        assert_eq!(
            span.trace_id, scan.trace_id,
            "{} is in the scan's trace",
            span.name
        );
    }

    // The submission continued the caller's trace.
    let submit = spans
        .iter()
        .find(|s| s.name == "POST /v1/security-scans")
        .expect("the request span of the submission");
    assert_eq!(submit.trace_id, caller_trace);
    assert_eq!(submit.parent_span_id, caller_span);
    assert_eq!(submit.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(submit.attributes["http.route"], "/v1/security-scans");
    assert_eq!(submit.attributes["http.response.status_code"], "202");
    assert!(
        spans
            .iter()
            .any(|s| s.name == "GET /v1/security-scans/{test_id}"),
        "requests are named after their route template"
    );

    // The JSON log lines written inside the scan carry its trace id.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let started = lines
        .iter()
        .find(|l| l["fields"]["message"] == "scan started")
        .unwrap_or_else(|| panic!("no `scan started` line in the log:\n{log}"));
    assert_eq!(started["trace_id"], scan.trace_id.as_str(), "{started}");
    assert_eq!(started["span"]["test_id"], id.as_str(), "{started}");
}

#[tokio::test]
async fn spans_are_exported_over_otlp_grpc_while_the_service_runs() {
    let git = GitServer::start();
    git.create_repo("traced", &[("README.md", "hello\n")]);
    let (receiver_port, received) = start_grpc_receiver().await;
    let data = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{receiver_port}");
    let mut service = ServiceProcess::start(
        data.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "certus-assurance-grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    let client = reqwest::Client::new();
    let id = submit_and_wait(&client, &service.address, &git.url("traced"), None).await;
    let spans = wait_for_spans(&received, "scan span", |spans| {
        spans
            .iter()
            .any(|s| s.name == "scan" && s.attributes.get("test_id") == Some(&id))
    })
    .await;
    let scan = spans
        .iter()
        .find(|s| s.name == "scan" && s.attributes.get("test_id") == Some(&id))
        .unwrap();
    assert_eq!(
        scan.resource.get("service.name").map(String::as_str),
        Some("certus-assurance-grpc"),
        "OTEL_SERVICE_NAME is honoured"
    );
    let phases = spans
        .iter()
        .filter(|s| s.parent_span_id == scan.span_id && s.name.starts_with("phase "))
        .count();
    assert_eq!(phases, 3, "clone, scan and bundle");
    assert!(service.terminate().success());
}

#[test]
fn a_bad_otlp_setting_stops_start_up_naming_the_variable() {
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_certus-assurance"))
        .env_clear()
        .env("CERTUS_ASSURANCE_DATA_DIR", data.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{stderr}");
}
