//! A bounded load test: the service binary as a child process (few workers, a queue smaller
//! than one burst), and this test process as the second process sending 10,000 submissions in
//! bursts over loopback from many concurrent clients while WebSocket streams are open on a few
//! scans. Every answer must be 202 or a clean 503 with `Retry-After` and a JSON detail; `/health`
//! and `/stats` keep answering; the service's memory stays bounded; no accepted scan is lost.
//!
//! `load_benchmark` (ignored; scripts/bench-load.sh runs it) is the same run, printed as the
//! numbers docs/benchmarks.md records.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{scan_body, GitServer, Service};

/// How hard one run pushes.
struct Plan {
    submissions: usize,
    bursts: usize,
    /// Requests in flight at once, each client its own connection pool.
    clients: usize,
    /// WebSocket streams opened on accepted scans.
    streams: usize,
    workers: usize,
    max_queue: usize,
    /// Pause between bursts (the workers drain some of the queue meanwhile).
    pause: Duration,
}

const PLAN: Plan = Plan {
    submissions: 10_000,
    bursts: 10,
    clients: 64,
    streams: 4,
    workers: 2,
    max_queue: 200,
    pause: Duration::from_millis(300),
};

/// Generous bounds: the machine is shared and noisy; these catch a hung or bloated service.
const PROBE_BOUND: Duration = Duration::from_secs(5);
const RSS_BOUND_KIB: u64 = 512 * 1024;

#[derive(Default)]
struct Outcome {
    accepted: Vec<String>,
    rejected: usize,
    /// Anything but 202 or a clean 503 (status and body, or the connection error).
    unexpected: Vec<String>,
    submit_latencies: Vec<Duration>,
}

struct Report {
    outcome: Outcome,
    /// `/health` and `/stats` before the bursts.
    idle: Probes,
    /// `/health` and `/stats` during the bursts.
    busy: Probes,
    /// Events each stream received and whether it ended with `scan_complete`.
    streams: Vec<(usize, bool)>,
    vm_hwm_kib: u64,
    vm_rss_kib: u64,
    elapsed: Duration,
}

/// Latencies of `/health` and `/stats`, what failed, and the most streams `/stats` showed open.
#[derive(Default)]
struct Probes {
    health: Vec<Duration>,
    stats: Vec<Duration>,
    failures: Vec<String>,
    most_streams: u64,
}

impl Probes {
    /// One GET of each; a failure is an error, a non-200 or a body that is not JSON.
    async fn sample(&mut self, client: &reqwest::Client, address: &str) {
        for path in ["/health", "/stats"] {
            let started = Instant::now();
            let answer = match client.get(format!("{address}{path}")).send().await {
                Ok(r) => {
                    let status = r.status();
                    match r.json::<Value>().await {
                        Ok(body) if status == 200 => Ok(body),
                        _ => Err(format!("{path}: {status}")),
                    }
                }
                Err(e) => Err(format!("{path}: {e}")),
            };
            match answer {
                Ok(body) => {
                    let open = body["active_streams"].as_u64().unwrap_or(0);
                    self.most_streams = self.most_streams.max(open);
                    let into = if path == "/health" {
                        &mut self.health
                    } else {
                        &mut self.stats
                    };
                    into.push(started.elapsed());
                }
                Err(e) => self.failures.push(e),
            }
        }
    }
}

/// One submission: 202 gives an id; 503 must carry `Retry-After` and a JSON detail.
async fn submit_one(client: &reqwest::Client, url: &str, body: &Value, out: &Mutex<Outcome>) {
    let started = Instant::now();
    let result = client.post(url).json(body).send().await;
    let latency = started.elapsed();
    let verdict = match result {
        Err(e) => Err(format!("connection error: {e}")),
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            match status {
                202 => answer["test_id"]
                    .as_str()
                    .map(|id| Ok(Some(id.to_string())))
                    .unwrap_or_else(|| Err(format!("202 without test_id: {answer}"))),
                503 if retry_after.is_some()
                    && answer["detail"].as_str().is_some_and(|d| !d.is_empty()) =>
                {
                    Ok(None)
                }
                _ => Err(format!("{status} (Retry-After {retry_after:?}): {answer}")),
            }
        }
    };
    let mut out = out.lock().unwrap();
    out.submit_latencies.push(latency);
    match verdict {
        Ok(Some(id)) => out.accepted.push(id),
        Ok(None) => out.rejected += 1,
        Err(e) => out.unexpected.push(e),
    }
}

/// Reads one scan's stream to its end: (events, whether `scan_complete` came).
async fn follow_stream(url: String) -> (usize, bool) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("stream connects");
    let mut events = 0;
    let mut complete = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, ws.next()).await {
        match message {
            Message::Text(text) => {
                events += 1;
                let event: Value = serde_json::from_str(&text).expect("event is JSON");
                complete |= event["type"] == "scan_complete";
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    (events, complete)
}

/// `VmHWM` and `VmRSS` of `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn run(plan: &Plan) -> (Service, Report) {
    let git = GitServer::start();
    git.create_repo("tiny", &[("README.md", "# tiny\n")]);
    let (workers, max_queue) = (plan.workers.to_string(), plan.max_queue.to_string());
    let mut service = Service::start(&[
        ("CERTUS_ASSURANCE_MAX_WORKERS", &workers),
        ("CERTUS_ASSURANCE_MAX_QUEUE", &max_queue),
    ]);
    let address = service.address().to_string();
    let submit_url = format!("{address}/v1/security-scans");
    let body = scan_body(&git.url("tiny"));
    let clients: Vec<reqwest::Client> = (0..plan.clients)
        .map(|_| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap()
        })
        .collect();

    // /health and /stats from their own client: first on the idle service, then all along.
    let probe_client = reqwest::Client::builder()
        .timeout(PROBE_BOUND)
        .build()
        .unwrap();
    let mut idle = Probes::default();
    for _ in 0..20 {
        idle.sample(&probe_client, &address).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let probing = Arc::new(AtomicBool::new(true));
    let probe = {
        let (probing, address) = (probing.clone(), address.clone());
        tokio::spawn(async move {
            let mut busy = Probes::default();
            while probing.load(Ordering::SeqCst) {
                busy.sample(&probe_client, &address).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            busy
        })
    };

    let started = Instant::now();
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let mut streams = Vec::new();
    let per_burst = plan.submissions / plan.bursts;
    for burst in 0..plan.bursts {
        futures_util::stream::iter(0..per_burst)
            .map(|i| submit_one(&clients[i % clients.len()], &submit_url, &body, &outcome))
            .buffer_unordered(plan.clients)
            .collect::<Vec<_>>()
            .await;
        if burst == 0 {
            // Streams on the last scans this burst queued: open while the next bursts run.
            let accepted = outcome.lock().unwrap().accepted.clone();
            for id in accepted.iter().rev().take(plan.streams) {
                let url = format!(
                    "ws://{}/v1/security-scans/{id}/stream",
                    address.trim_start_matches("http://")
                );
                streams.push(tokio::spawn(follow_stream(url)));
            }
        }
        tokio::time::sleep(plan.pause).await;
    }
    let elapsed = started.elapsed();
    let (vm_hwm_kib, vm_rss_kib) = memory_kib(service.pid());
    probing.store(false, Ordering::SeqCst);
    let busy = probe.await.unwrap();

    // Scans may be cancelled, never lost: cancel what is still queued or running.
    let outcome = std::mem::take(&mut *outcome.lock().unwrap());
    let cancels: Vec<u16> = futures_util::stream::iter(outcome.accepted.iter())
        .map(|id| {
            let client = &clients[0];
            let url = format!("{address}/v1/security-scans/{id}/cancel");
            async move { client.post(url).send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(
        cancels.iter().all(|s| [200, 202, 409].contains(s)),
        "cancel answered {:?}",
        cancels
            .iter()
            .filter(|s| ![200, 202, 409].contains(*s))
            .collect::<Vec<_>>()
    );
    let mut stream_results = Vec::new();
    for stream in streams {
        stream_results.push(stream.await.unwrap());
    }
    service.accepted = outcome.accepted.clone();
    (
        service,
        Report {
            outcome,
            idle,
            busy,
            streams: stream_results,
            vm_hwm_kib,
            vm_rss_kib,
            elapsed,
        },
    )
}

/// p50, p95, p99 and max, in milliseconds.
fn percentiles(samples: &[Duration]) -> String {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if ms.is_empty() {
        return "no samples".into();
    }
    let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    format!(
        "n={} p50={:.1}ms p95={:.1}ms p99={:.1}ms max={:.1}ms",
        ms.len(),
        at(0.50),
        at(0.95),
        at(0.99),
        at(1.0)
    )
}

fn print(plan: &Plan, report: &Report) {
    let o = &report.outcome;
    eprintln!(
        "load: {} submissions in {} bursts from {} clients in {:.1}s ({:.0}/s): {} accepted, {} rejected (503)",
        plan.submissions,
        plan.bursts,
        plan.clients,
        report.elapsed.as_secs_f64(),
        plan.submissions as f64 / report.elapsed.as_secs_f64(),
        o.accepted.len(),
        o.rejected
    );
    eprintln!("load: submit  {}", percentiles(&o.submit_latencies));
    eprintln!("load: idle /health {}", percentiles(&report.idle.health));
    eprintln!("load: idle /stats  {}", percentiles(&report.idle.stats));
    eprintln!("load: busy /health {}", percentiles(&report.busy.health));
    eprintln!("load: busy /stats  {}", percentiles(&report.busy.stats));
    eprintln!(
        "load: service memory VmHWM={} KiB VmRSS={} KiB; {} streams open during the bursts, (events, complete) {:?}",
        report.vm_hwm_kib, report.vm_rss_kib, report.busy.most_streams, report.streams
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_submissions_in_bursts_lose_nothing_and_the_service_keeps_answering() {
    let (service, report) = run(&PLAN).await;
    print(&PLAN, &report);
    let o = &report.outcome;
    assert!(
        o.unexpected.is_empty(),
        "{} unexpected answers, e.g. {:?}",
        o.unexpected.len(),
        &o.unexpected[..o.unexpected.len().min(5)]
    );
    assert_eq!(o.accepted.len() + o.rejected, PLAN.submissions);
    assert!(o.rejected > 0, "the queue never filled");
    assert!(o.accepted.len() >= PLAN.max_queue, "too few accepted");
    assert!(
        report.idle.failures.is_empty() && report.busy.failures.is_empty(),
        "/health or /stats did not answer within {PROBE_BOUND:?}: {:?} {:?}",
        report.idle.failures,
        report.busy.failures
    );
    assert!(!report.busy.health.is_empty() && !report.busy.stats.is_empty());
    assert!(
        report.vm_hwm_kib < RSS_BOUND_KIB,
        "service peak RSS {} KiB",
        report.vm_hwm_kib
    );
    for (events, complete) in &report.streams {
        assert!(
            *complete,
            "a stream ended without scan_complete after {events} events"
        );
    }
    assert_eq!(report.streams.len(), PLAN.streams);
    assert_eq!(
        report.busy.most_streams, PLAN.streams as u64,
        "streams open during the bursts"
    );
    let stats = service.assert_nothing_lost().await;
    assert_eq!(stats["total_scans"], o.accepted.len());
}

/// The same run for the numbers in docs/benchmarks.md ("Load"): scripts/bench-load.sh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with scripts/bench-load.sh"]
async fn load_benchmark() {
    let (service, report) = run(&PLAN).await;
    print(&PLAN, &report);
    assert!(report.outcome.unexpected.is_empty());
    service.assert_nothing_lost().await;
}
