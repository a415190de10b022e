//! List queries with keyset pagination, batch submission, and retention.

use std::collections::HashSet;
use std::time::Duration;

use certus_assurance::storage::PrunePolicy;
use serde_json::{json, Value};

use crate::helpers::*;

fn body(workspace: &str, component: &str) -> Value {
    json!({
        "workspace_id": workspace,
        "component_id": component,
        "assessment_id": "a",
        "git_url": "https://example.com/org/repo.git",
        "branch": "main",
        "profile": "light",
    })
}

async fn submit_batch(app: &TestApp, items: Vec<Value>) -> Value {
    let response = app
        .post_json("/v1/security-scans/batch", &json!({ "scans": items }))
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn page(app: &TestApp, query: &str) -> Value {
    let response = app.get(&format!("/v1/security-scans?{query}")).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{query}: {body}");
    body
}

/// 10,000 scans walked page by page while new scans keep arriving: every scan of the walk is
/// seen exactly once, newest first, and none that arrived later slips in.
#[tokio::test]
async fn pagination_walks_ten_thousand_scans_without_duplicates_or_gaps() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        c.queue.max_queue = 20_000;
        c.queue.batch_max_items = 500;
    })
    .await;
    let mut expected = HashSet::new();
    for _ in 0..20 {
        let items = (0..500)
            .map(|i| body("walk", &format!("c{}", i % 7)))
            .collect();
        let answer = submit_batch(&app, items).await;
        assert_eq!(answer["accepted"], 500);
        for r in answer["results"].as_array().unwrap() {
            expected.insert(r["scan"]["test_id"].as_str().unwrap().to_string());
        }
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(c) => format!("workspace_id=walk&limit=333&cursor={c}"),
            None => "workspace_id=walk&limit=333".to_string(),
        };
        let body = page(&app, &query).await;
        for scan in body["scans"].as_array().unwrap() {
            seen.push((
                scan["test_id"].as_str().unwrap().to_string(),
                scan["submitted_at"].as_str().unwrap().to_string(),
            ));
        }
        pages += 1;
        // Inserts between pages land before the walk's start and must not appear in it.
        app.submit_scan(body_for_walk()).await;
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 10_000usize.div_ceil(333));
    let ids: HashSet<_> = seen.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len(), seen.len(), "no duplicates");
    assert_eq!(ids, expected, "no gaps, nothing extra");
    assert!(seen.windows(2).all(|w| w[0].1 >= w[1].1), "newest first");
}

fn body_for_walk() -> Value {
    body("walk", "late")
}

#[tokio::test]
async fn list_filters_and_validates_its_parameters() {
    let app = spawn_app_with(|c| c.queue.max_workers = 0).await;
    let a1 = app.submit_scan(body("ws-a", "api")).await;
    let a2 = app.submit_scan(body("ws-a", "web")).await;
    let b1 = app.submit_scan(body("ws-b", "api")).await;
    let mut standard = body("ws-b", "web");
    standard["profile"] = json!("standard");
    let b2 = app.submit_scan(standard).await;
    let r = app
        .client
        .post(app.url(&format!("/v1/security-scans/{b1}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let ids = |body: &Value| -> Vec<String> {
        body["scans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["test_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(&page(&app, "").await),
        vec![b2.clone(), b1.clone(), a2.clone(), a1.clone()]
    );
    assert_eq!(
        ids(&page(&app, "workspace_id=ws-a").await),
        vec![a2.clone(), a1.clone()]
    );
    assert_eq!(
        ids(&page(&app, "component_id=api").await),
        vec![b1.clone(), a1.clone()]
    );
    assert_eq!(ids(&page(&app, "status=failed").await), vec![b1.clone()]);
    assert_eq!(
        ids(&page(&app, "status=QUEUED&workspace_id=ws-b").await),
        vec![b2.clone()]
    );
    assert_eq!(ids(&page(&app, "profile=standard").await), vec![b2.clone()]);
    assert_eq!(
        ids(&page(&app, "assessment_id=zzz").await),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&page(&app, "submitted_after=2999-01-01T00:00:00Z").await),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&page(&app, "submitted_before=2000-01-01T00:00:00Z").await).len(),
        0
    );
    assert_eq!(
        ids(&page(&app, "submitted_after=2000-01-01T00:00:00Z").await).len(),
        4
    );
    let first = page(&app, "limit=3").await;
    assert_eq!(first["count"], 3);
    let rest = page(
        &app,
        &format!("limit=3&cursor={}", first["next_cursor"].as_str().unwrap()),
    )
    .await;
    assert_eq!(ids(&rest), vec![a1.clone()]);
    assert!(rest["next_cursor"].is_null());

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("status=done", "status"),
        ("cursor=abc", "cursor"),
        ("submitted_after=yesterday", "submitted_after"),
    ] {
        let response = app.get(&format!("/v1/security-scans?{query}")).await;
        assert_eq!(response.status(), 422, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["detail"][0]["loc"],
            json!(["query", field]),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn batches_answer_per_item_and_admit_only_what_fits() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        c.queue.max_queue = 5;
    })
    .await;
    let mut items: Vec<Value> = (0..3).map(|i| body("batch", &format!("c{i}"))).collect();
    items.insert(1, json!({"workspace_id": "../x", "component_id": "c", "assessment_id": "a", "git_url": "https://example.com/r.git"}));
    items.insert(
        3,
        json!({"workspace_id": "ok", "component_id": "c", "assessment_id": "a"}),
    );
    let answer = submit_batch(&app, items).await;
    let results = answer["results"].as_array().unwrap();
    let statuses: Vec<i64> = results
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, vec![202, 422, 202, 422, 202]);
    assert_eq!(
        results[1]["detail"][0]["loc"],
        json!(["body", "scans", 1, "workspace_id"])
    );
    assert_eq!(
        results[3]["detail"][0]["loc"],
        json!(["body", "scans", 3, "git_url"])
    );
    assert!(results[0]["scan"]["test_id"]
        .as_str()
        .unwrap()
        .starts_with("test_"));
    assert_eq!(answer["accepted"], 3);

    // Two places left in the queue: a batch of four admits two, refuses two with 503.
    let answer = submit_batch(
        &app,
        (0..4).map(|i| body("batch", &format!("d{i}"))).collect(),
    )
    .await;
    let statuses: Vec<i64> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, vec![202, 202, 503, 503]);
    assert!(answer["results"][2]["detail"]
        .as_str()
        .unwrap()
        .contains("queue is full"));

    let stats = assert_stats_match_metrics_and_store(&app).await;
    assert_eq!(stats["scans_by_status"]["queued"], 5);
    let text = app.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scan_submissions_rejected_total",
            &[("reason", "queue_full")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scan_submissions_rejected_total",
            &[("reason", "invalid")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scans_submitted_total",
            &[("profile", "light"), ("source_type", "git")]
        ),
        Some(5.0)
    );

    for bad in [json!([]), json!({"scans": "x"}), json!(42)] {
        let response = app.post_json("/v1/security-scans/batch", &bad).await;
        assert_eq!(response.status(), 422, "{bad}");
    }
    let too_many: Vec<Value> = (0..101).map(|_| body("batch", "c")).collect();
    let response = app
        .post_json("/v1/security-scans/batch", &json!(too_many))
        .await;
    assert_eq!(response.status(), 422);
}

#[tokio::test]
async fn retention_prunes_finished_scans_and_their_bundles_only() {
    let git = GitServer::start();
    git.create_repo("r", &[("a.txt", "x")]);
    let stall = StallingServer::start();
    let app = spawn_app_with(|c| c.queue.max_workers = 1).await;
    let mut finished = Vec::new();
    for _ in 0..4 {
        let id = app.submit_scan(scan_body(&git.url("r"))).await;
        app.wait_for_terminal(&id).await;
        finished.push(id);
    }
    let running = app.submit_scan(scan_body(&stall.url())).await;
    app.wait_for_state(&running, &["RUNNING"], Duration::from_secs(10))
        .await;
    let queued = app.submit_scan(scan_body(&git.url("r"))).await;
    assert!(app.artifact_dir(&finished[0]).exists());

    // Keep the newest three scans (queued, running, the last finished one): the three finished
    // scans before them go.
    let pruned = app
        .jobs
        .prune(PrunePolicy {
            finished_before: None,
            keep_latest: Some(3),
            batch: 1,
        })
        .await
        .unwrap();
    assert_eq!(pruned, 3);
    for id in &finished[..3] {
        assert_eq!(
            app.get(&format!("/v1/security-scans/{id}")).await.status(),
            404
        );
        assert!(!app.artifact_dir(id).exists(), "bundle of {id} removed");
    }
    assert_eq!(app.scan(&finished[3]).await["status"], "SUCCEEDED");
    // Age-based: everything finished is old enough, but running and queued scans stay.
    let pruned = app
        .jobs
        .prune(PrunePolicy {
            finished_before: Some(f64::MAX),
            keep_latest: None,
            batch: 500,
        })
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(app.scan(&running).await["status"], "RUNNING");
    assert_eq!(app.scan(&queued).await["status"], "QUEUED");
    let stats = assert_stats_match_metrics_and_store(&app).await;
    assert_eq!(stats["total_scans"], 2);
    let text = app.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "certus_assurance_scans_pruned_total",
            &[("status", "succeeded")]
        ),
        Some(4.0)
    );
}

#[tokio::test]
async fn scans_with_an_upload_in_flight_are_never_pruned() {
    let app = spawn_app_with(|c| c.queue.max_workers = 0).await;
    let id = app.submit_scan(body("w", "c")).await;
    app.client
        .post(app.url(&format!("/v1/security-scans/{id}/cancel")))
        .send()
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(app.data_dir.join("certus-assurance.db")).unwrap();
    conn.execute(
        "UPDATE scans SET upload_status = 'permitted' WHERE test_id = ?1",
        [&id],
    )
    .unwrap();
    let pruned = app
        .jobs
        .prune(PrunePolicy {
            finished_before: Some(f64::MAX),
            keep_latest: Some(1),
            batch: 10,
        })
        .await
        .unwrap();
    assert_eq!(pruned, 0);
    assert_eq!(app.scan(&id).await["status"], "FAILED");
}

#[tokio::test]
async fn the_retention_task_runs_on_its_schedule() {
    let app = spawn_app_with(|c| {
        c.queue.max_workers = 0;
        c.retention.max_scans = Some(1);
        c.retention.interval = Duration::from_millis(200);
    })
    .await;
    let first = app.submit_scan(body("w", "c")).await;
    app.client
        .post(app.url(&format!("/v1/security-scans/{first}/cancel")))
        .send()
        .await
        .unwrap();
    app.submit_scan(body("w", "c")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app
        .get(&format!("/v1/security-scans/{first}"))
        .await
        .status()
        != 404
    {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not prune"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_stats_match_metrics_and_store(&app).await;
}
