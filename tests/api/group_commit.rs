//! Group-committed admission: concurrent submissions share store transactions, each answered
//! once its row is committed; the queue bound and the per-workspace limit stay exact under a
//! concurrent burst (on both stores, and across two PostgreSQL replicas); a group whose
//! transaction fails answers every member with an error and leaves no row behind.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use certus_assurance::scan::JobState;
use certus_assurance::storage::postgres::PgStore;
use certus_assurance::storage::sqlite::SqliteStore;
use certus_assurance::storage::{Admission, AdmissionBounds, JobStore, ScanRecord};
use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::postgres::{record, PgSchema};

fn submission(workspace: &str, component: &str) -> Value {
    json!({
        "workspace_id": workspace,
        "component_id": component,
        "assessment_id": "a",
        "git_url": "https://example.com/org/repo.git",
        "branch": "main",
        "profile": "light",
    })
}

/// `n` submissions sent at once; each answer's status and body, in order.
async fn burst(app: &TestApp, bodies: Vec<(&'static str, Value)>) -> Vec<(u16, Value)> {
    join_all(bodies.iter().map(|(path, body)| async move {
        let response = app.post_json(path, body).await;
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    }))
    .await
}

/// The test ids stored in the app's SQLite file.
fn stored_ids(data_dir: &Path) -> HashSet<String> {
    let conn = rusqlite::Connection::open(data_dir.join("certus-assurance.db")).unwrap();
    let mut stmt = conn.prepare("SELECT test_id FROM scans").unwrap();
    let ids = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<HashSet<_>, _>>()
        .unwrap();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_are_each_answered_once_and_all_stored() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        c.queue.max_queue = 10_000;
    })
    .await;
    // 200 single submissions and 10 batches of 5 at once (under the 256 connections one
    // client address may hold open).
    let mut bodies: Vec<(&str, Value)> = (0..200)
        .map(|i| ("/v1/security-scans", submission("w", &format!("c{i}"))))
        .collect();
    for b in 0..10 {
        let items: Vec<Value> = (0..5)
            .map(|i| submission("w", &format!("b{b}-{i}")))
            .collect();
        bodies.push(("/v1/security-scans/batch", json!({ "scans": items })));
    }
    let answers = burst(&app, bodies).await;
    let mut answered: Vec<String> = Vec::new();
    for (status, body) in &answers {
        if let Some(items) = body["results"].as_array() {
            assert_eq!(*status, 200, "{body}");
            for item in items {
                assert_eq!(item["status"], 202, "{item}");
                answered.push(item["scan"]["test_id"].as_str().unwrap().to_string());
            }
        } else {
            assert_eq!(*status, 202, "{body}");
            answered.push(body["test_id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(answered.len(), 250);
    let distinct: HashSet<String> = answered.iter().cloned().collect();
    assert_eq!(distinct.len(), 250, "each scan is answered exactly once");
    assert_eq!(
        stored_ids(&app.data_dir),
        distinct,
        "every answered scan is stored, and nothing else"
    );
    let stats = assert_stats_match_metrics_and_store(&app).await;
    assert_eq!(stats["scans_by_status"]["queued"], 250);
    let text = app.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scans_submitted_total",
            &[("profile", "light"), ("source_type", "git")]
        ),
        Some(250.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_bound_is_exact_under_a_concurrent_burst() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        c.queue.max_queue = 37;
    })
    .await;
    let answers = burst(
        &app,
        (0..120)
            .map(|i| ("/v1/security-scans", submission("w", &format!("c{i}"))))
            .collect(),
    )
    .await;
    let accepted = answers.iter().filter(|(s, _)| *s == 202).count();
    let full: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 503)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(accepted, 37, "{answers:?}");
    assert_eq!(full.len(), 120 - 37, "{answers:?}");
    for body in full {
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("queue is full (37 scans waiting)"),
            "{detail}"
        );
    }
    let stats = assert_stats_match_metrics_and_store(&app).await;
    assert_eq!(stats["scans_by_status"]["queued"], 37);
    let text = app.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scan_submissions_rejected_total",
            &[("reason", "queue_full")]
        ),
        Some(83.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workspace_limit_is_exact_under_a_concurrent_burst() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        c.queue.max_active_per_workspace = 4;
    })
    .await;
    let mut bodies: Vec<(&str, Value)> = (0..40)
        .map(|i| ("/v1/security-scans", submission("busy", &format!("c{i}"))))
        .collect();
    bodies.push(("/v1/security-scans", submission("other", "c")));
    let answers = burst(&app, bodies).await;
    let busy = &answers[..40];
    assert_eq!(
        busy.iter().filter(|(s, _)| *s == 202).count(),
        4,
        "{busy:?}"
    );
    assert_eq!(
        busy.iter().filter(|(s, _)| *s == 429).count(),
        36,
        "{busy:?}"
    );
    assert_eq!(answers[40].0, 202, "another workspace is not limited");
    let stats = assert_stats_match_metrics_and_store(&app).await;
    assert_eq!(stats["scans_by_status"]["queued"], 5);
}

/// Makes every insert of a scan whose component is `poison` fail, as a failing disk or a
/// broken constraint would fail the group transaction that holds it.
fn poison_inserts(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER poison BEFORE INSERT ON scans WHEN NEW.component_id = 'poison'
         BEGIN SELECT RAISE(ABORT, 'poisoned insert'); END",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_group_answers_each_member_with_an_error_and_stores_none_of_them() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
    })
    .await;
    poison_inserts(&app.data_dir.join("certus-assurance.db"));
    let bodies: Vec<(&str, Value)> = (0..120)
        .map(|i| {
            let component = if i % 8 == 3 {
                "poison".to_string()
            } else {
                format!("c{i}")
            };
            ("/v1/security-scans", submission("w", &component))
        })
        .collect();
    let answers = burst(&app, bodies).await;
    let mut accepted = HashSet::new();
    for (i, (status, body)) in answers.iter().enumerate() {
        match status {
            202 => {
                assert_ne!(i % 8, 3, "a poisoned submission was accepted: {body}");
                accepted.insert(body["test_id"].as_str().unwrap().to_string());
            }
            500 => assert!(body["detail"].as_str().unwrap().contains("Retry"), "{body}"),
            other => panic!("answer {i}: {other} {body}"),
        }
    }
    assert_eq!(
        stored_ids(&app.data_dir),
        accepted,
        "no answered scan lost, no refused scan stored"
    );
    let stats = assert_stats_match_metrics_and_store(&app).await;
    assert_eq!(stats["scans_by_status"]["queued"], accepted.len());

    // The failed groups moved no count: the queue takes exactly what is left of it.
    let app = app
        .restart_with(|c| c.queue.max_queue = accepted.len() + 2)
        .await;
    let answers = burst(
        &app,
        (0..5)
            .map(|i| ("/v1/security-scans", submission("w", &format!("after{i}"))))
            .collect(),
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        3,
        "{statuses:?}"
    );
}

fn bounds(max_queue: usize, per_workspace: usize) -> AdmissionBounds {
    AdmissionBounds {
        max_queue,
        max_active_per_workspace: per_workspace,
    }
}

fn group(prefix: &str, workspace: &str, n: usize) -> Vec<ScanRecord> {
    (0..n)
        .map(|i| record(&format!("test_{prefix}{i:06x}"), workspace, 1.0))
        .collect()
}

/// Groups admitted at once through `stores` (one per replica, or one store twice): the bound
/// holds exactly, then the per-workspace limit, then the count follows claims and cancels.
async fn admission_contract(stores: [Arc<dyn JobStore>; 2]) {
    let tally = |decisions: Vec<Vec<Admission>>| {
        let mut by: HashMap<&'static str, usize> = HashMap::new();
        for d in decisions.into_iter().flatten() {
            let key = match d {
                Admission::Admitted => "admitted",
                Admission::QueueFull { queued } => {
                    assert_eq!(queued, 50, "a refusal says how many wait");
                    "full"
                }
                Admission::WorkspaceLimit => "workspace",
            };
            *by.entry(key).or_default() += 1;
        }
        by
    };
    // 40 groups of 3 from both handles at once, into a queue of 50.
    let decisions = join_all((0..40).map(|g| {
        let store = stores[g % 2].clone();
        let scans = group(&format!("{g:06x}"), "w", 3);
        async move { store.admit(scans, bounds(50, 0)).await.unwrap() }
    }))
    .await;
    let by = tally(decisions);
    assert_eq!((by["admitted"], by["full"]), (50, 70), "{by:?}");
    let counts = stores[0].counts().await.unwrap();
    assert_eq!(counts.by_status.get(&JobState::Queued), Some(&50));

    // A limit of 4 active scans per workspace, 10 groups of 2 at once: exactly 4 admitted.
    let decisions = join_all((0..10).map(|g| {
        let store = stores[g % 2].clone();
        let scans = group(&format!("a{g:05x}"), "limited", 2);
        async move { store.admit(scans, bounds(1000, 4)).await.unwrap() }
    }))
    .await;
    let by = tally(decisions);
    assert_eq!((by["admitted"], by["workspace"]), (4, 16), "{by:?}");

    // Two claims and a cancel leave room for three more under a bound of 54.
    stores[0].claim_next(2.0).await.unwrap().unwrap();
    stores[1].claim_next(2.0).await.unwrap().unwrap();
    let queued = stores[0]
        .list(certus_assurance::storage::ListQuery {
            status: Some(JobState::Queued),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(stores[1]
        .cancel_queued(queued[0].1.test_id.clone(), 3.0, "cancelled".into())
        .await
        .unwrap());
    let decisions = stores[0]
        .admit(group("b00000", "w", 5), bounds(54, 0))
        .await
        .unwrap();
    let admitted = decisions
        .iter()
        .filter(|d| **d == Admission::Admitted)
        .count();
    assert_eq!(admitted, 3, "{decisions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_is_exact_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn JobStore> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
    admission_contract([store.clone(), store]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_is_exact_across_two_postgres_replicas() {
    let schema = PgSchema::create();
    let connect = |owner: &'static str| {
        let url = schema.url();
        async move { PgStore::connect(&url, owner.into()).await.unwrap() }
    };
    let (a, b) = tokio::join!(connect("replica-a"), connect("replica-b"));
    admission_contract([Arc::new(a), Arc::new(b)]).await;
}

#[tokio::test]
async fn a_failed_admission_stores_nothing_and_moves_no_count() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let store = SqliteStore::open(&db).unwrap();
    poison_inserts(&db);
    let mut scans = group("000000", "w", 3);
    scans[1].component_id = "poison".into();
    let err = store.admit(scans, bounds(3, 0)).await.unwrap_err();
    assert!(format!("{err:#}").contains("poisoned insert"), "{err:#}");
    assert!(store.counts().await.unwrap().by_status.is_empty());
    // The whole bound is still free.
    let decisions = store
        .admit(group("000001", "w", 4), bounds(3, 0))
        .await
        .unwrap();
    assert_eq!(
        decisions,
        vec![
            Admission::Admitted,
            Admission::Admitted,
            Admission::Admitted,
            Admission::QueueFull { queued: 3 }
        ]
    );
}
