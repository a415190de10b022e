//! The audit trail and archive ownership, on both stores: every state-changing request recorded
//! with its actor and outcome (and never a secret), read only by admin tokens with cursor
//! paging; archives usable only by the workspaces that uploaded them, with one answer for
//! unknown and foreign hashes; the per-workspace quota; retention of archives and events.

use std::collections::BTreeSet;

use certus_assurance::config::Config;
use certus_assurance::storage::PrunePolicy;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::postgres::PgSchema;
use crate::security_access::{get_as as get, post_as as post};

const ALPHA_SUBMIT: &str = "audit-alpha-submit-secret-00000001";
const ALPHA_READ: &str = "audit-alpha-read-secret-0000000002";
const BETA_SUBMIT: &str = "audit-beta-submit-secret-000000003";
const ROOT: &str = "audit-root-secret-0000000000000004";
const ALPHA_ADMIN: &str = "audit-alpha-admin-secret-000000005";
/// A password inside a submitted git URL: never stored.
const URL_PASSWORD: &str = "url-password-never-stored-77";

fn with_tokens(config: &mut Config) {
    let entry = |name: &str, role: &str, workspaces: &str, secret: &str| {
        format!(
            "[[tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nworkspaces = {workspaces}\nsha256 = \"{}\"\n\n",
            certus_assurance::auth::hash_token(secret)
        )
    };
    let file = [
        entry("alpha-submit", "submit", "[\"alpha\"]", ALPHA_SUBMIT),
        entry("alpha-read", "read", "[\"alpha\"]", ALPHA_READ),
        entry("beta-submit", "submit", "[\"beta\"]", BETA_SUBMIT),
        entry("root", "admin", "\"*\"", ROOT),
        entry("alpha-admin", "admin", "[\"alpha\"]", ALPHA_ADMIN),
    ]
    .concat();
    use_tokens(config, &file);
}

/// Which store an app of these tests uses; PostgreSQL in a schema of its own.
enum Store {
    Sqlite,
    Postgres(PgSchema),
}

impl Store {
    fn postgres() -> Store {
        Store::Postgres(PgSchema::create())
    }

    async fn app(&self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let url = match self {
            Store::Sqlite => None,
            Store::Postgres(schema) => Some(schema.url()),
        };
        spawn_app_with(move |c| {
            c.queue.max_workers = 0;
            c.store.database_url = url.map(certus_assurance::config::StoreLocation::Postgres);
            tweak(c);
        })
        .await
    }
}

/// A submission into `workspace` that stays QUEUED (the apps run no workers).
fn body_in(workspace: &str) -> Value {
    let mut body = scan_body(&format!(
        "https://ci:{URL_PASSWORD}@127.0.0.1:9/never-cloned.git"
    ));
    body["workspace_id"] = json!(workspace);
    body
}

fn archive_body(workspace: &str, archive_path: &str) -> Value {
    json!({
        "workspace_id": workspace, "component_id": "c", "assessment_id": "a",
        "source_type": "archive", "archive_path": archive_path,
    })
}

/// A small tar archive whose content depends on `seed`.
pub fn tar_archive(seed: &str) -> Vec<u8> {
    let text = format!("x = '{seed}'\n");
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    archive
        .append_data(&mut header, "app.py", text.as_bytes())
        .unwrap();
    archive.into_inner().unwrap()
}

/// Uploads `bytes` as an archive, with a `workspace_id` field when given.
async fn upload(
    app: &TestApp,
    token: Option<&str>,
    workspace: Option<&str>,
    bytes: &[u8],
) -> (u16, Value) {
    let boundary = "certus-audit-boundary-3e1a";
    let mut body = Vec::new();
    if let Some(ws) = workspace {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"workspace_id\"\r\n\r\n{ws}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.tar\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut request = app
        .client
        .post(app.url("/v1/security-scans/upload-archive"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Every audit event matching `query`, read page by page with `limit` and the cursor.
async fn all_events(app: &TestApp, token: Option<&str>, query: &str, limit: usize) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/audit-events?limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = get(app, &path, token).await;
        assert_eq!(status, 200, "{path}: {page}");
        let rows = page["events"].as_array().unwrap();
        assert!(rows.len() <= limit, "{page}");
        events.extend(rows.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    events
}

fn find<'a>(events: &'a [Value], action: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    events
        .iter()
        .find(|e| e["action"] == action && pred(e))
        .unwrap_or_else(|| panic!("no {action} event as expected in {events:#?}"))
}

async fn every_request_is_recorded(store: Store) {
    let app = store.app(with_tokens).await;
    // Submit: accepted (a token), refused by scope, refused without a token.
    let (status, submitted) = post(
        &app,
        "/v1/security-scans",
        Some(ALPHA_SUBMIT),
        &body_in("alpha"),
    )
    .await;
    assert_eq!(status, 202, "{submitted}");
    let queued = submitted["test_id"].as_str().unwrap().to_string();
    let (status, _) = post(
        &app,
        "/v1/security-scans",
        Some(BETA_SUBMIT),
        &body_in("alpha"),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = post(&app, "/v1/security-scans", None, &body_in("alpha")).await;
    assert_eq!(status, 401);
    // A batch: one event per item, each with its own status.
    let mut invalid = body_in("alpha");
    invalid["component_id"] = json!("../x");
    let (status, batch) = post(
        &app,
        "/v1/security-scans/batch",
        Some(ALPHA_SUBMIT),
        &json!({"scans": [body_in("alpha"), invalid]}),
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    let batched = batch["results"][0]["scan"]["test_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Cancel: accepted, then refused (already finished).
    let cancel = format!("/v1/security-scans/{batched}/cancel");
    assert_eq!(
        post(&app, &cancel, Some(ALPHA_SUBMIT), &json!({})).await.0,
        200
    );
    assert_eq!(
        post(&app, &cancel, Some(ALPHA_SUBMIT), &json!({})).await.0,
        409
    );
    // Upload-request (uploads are off here: whatever it answers is recorded).
    let (upload_status, _) = post(
        &app,
        &format!("/v1/security-scans/{queued}/upload-request"),
        Some(ALPHA_SUBMIT),
        &json!({}),
    )
    .await;
    // Upload-archive: the token's only workspace when the field is left out.
    let (status, stored) = upload(&app, Some(ALPHA_SUBMIT), None, &tar_archive("a")).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["workspace_id"], "alpha");
    let sha = stored["sha256"].as_str().unwrap().to_string();

    // Only admin tokens read the trail.
    for token in [ALPHA_READ, ALPHA_SUBMIT] {
        let (status, body) = get(&app, "/v1/audit-events", Some(token)).await;
        assert_eq!(status, 403, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("admin"), "{body}");
    }
    assert_eq!(get(&app, "/v1/audit-events", None).await.0, 401);

    let events = all_events(&app, Some(ROOT), "", 500).await;
    let by_token = |name: &'static str| move |e: &Value| e["actor"] == name;
    let e = find(&events, "submit", |e| e["test_id"] == queued.as_str());
    assert_eq!(
        (
            &e["actor"],
            &e["actor_kind"],
            &e["workspace_id"],
            &e["outcome"],
            &e["status"]
        ),
        (
            &json!("alpha-submit"),
            &json!("token"),
            &json!("alpha"),
            &json!("accepted"),
            &json!(202)
        ),
        "{e}"
    );
    let e = find(&events, "submit", by_token("beta-submit"));
    assert_eq!(
        (&e["outcome"], &e["status"]),
        (&json!("refused"), &json!(403))
    );
    assert_eq!(e["workspace_id"], "alpha", "{e}");
    let e = find(&events, "submit", |e| e["status"] == 401);
    assert_eq!(
        (&e["actor"], &e["actor_kind"]),
        (&json!("127.0.0.1"), &json!("address"))
    );
    assert_eq!(e["outcome"], "refused");
    let items: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "batch_item")
        .collect();
    assert_eq!(items.len(), 2, "{items:#?}");
    assert!(items.iter().any(|e| e["status"] == 202
        && e["test_id"] == batched.as_str()
        && e["outcome"] == "accepted"));
    assert!(items
        .iter()
        .any(|e| e["status"] == 422 && e["test_id"].is_null() && e["outcome"] == "refused"));
    let cancels: Vec<(Value, Value)> = events
        .iter()
        .filter(|e| e["action"] == "cancel")
        .map(|e| (e["status"].clone(), e["test_id"].clone()))
        .collect();
    assert_eq!(cancels.len(), 2, "{cancels:?}");
    assert!(cancels.iter().all(|(_, id)| id == batched.as_str()));
    let e = find(&events, "upload_request", |e| {
        e["test_id"] == queued.as_str()
    });
    assert_eq!(e["status"], upload_status);
    assert_eq!(e["workspace_id"], "alpha");
    let e = find(&events, "upload_archive", |e| {
        e["archive_sha256"] == sha.as_str()
    });
    assert_eq!(
        (&e["actor"], &e["workspace_id"], &e["outcome"]),
        (&json!("alpha-submit"), &json!("alpha"), &json!("accepted"))
    );
    // The reads above were not recorded; nothing else was.
    assert_eq!(events.len(), 9, "{events:#?}");

    // No secret in any row: no token, no URL password.
    let dump = serde_json::to_string(&events).unwrap();
    for secret in [ALPHA_SUBMIT, BETA_SUBMIT, ROOT, URL_PASSWORD, "https://"] {
        assert!(
            !dump.contains(secret),
            "{secret} in the audit trail: {dump}"
        );
    }

    // Cursor paging: pages of 2 give every event once, newest first.
    let paged = all_events(&app, Some(ROOT), "", 2).await;
    assert_eq!(paged, events);
    let times: Vec<&str> = paged.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    // Filters.
    let refused = all_events(&app, Some(ROOT), "&outcome=refused&action=submit", 50).await;
    assert_eq!(refused.len(), 2, "{refused:#?}");
    let mine = all_events(&app, Some(ROOT), "&actor=beta-submit", 50).await;
    assert_eq!(mine.len(), 1, "{mine:#?}");
    let future = all_events(&app, Some(ROOT), "&since=4102444800", 50).await;
    assert!(future.is_empty());
    let until = all_events(&app, Some(ROOT), "&until=2000-01-01T00:00:00Z", 50).await;
    assert!(until.is_empty());
    let (status, body) = get(&app, "/v1/audit-events?action=delete", Some(ROOT)).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = get(&app, "/v1/audit-events?cursor=zz", Some(ROOT)).await;
    assert_eq!(status, 422, "{body}");
    // A scoped admin token sees only its workspaces' events.
    let scoped = all_events(&app, Some(ALPHA_ADMIN), "", 50).await;
    // Every event above is in alpha, except the unauthenticated one (no workspace was read).
    assert_eq!(scoped.len(), events.len() - 1, "{scoped:#?}");
    assert!(scoped.iter().all(|e| e["workspace_id"] == "alpha"));
    assert!(
        all_events(&app, Some(ALPHA_ADMIN), "&workspace_id=beta", 50)
            .await
            .is_empty()
    );
    drop(app);

    // Authentication off: the actor is the client's address.
    let open = store.app(|_| {}).await;
    let (status, _) = post(&open, "/v1/security-scans", None, &body_in("gamma")).await;
    assert_eq!(status, 202);
    let events = all_events(&open, None, "&workspace_id=gamma", 50).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        (&events[0]["actor"], &events[0]["actor_kind"]),
        (&json!("127.0.0.1"), &json!("address"))
    );
}

#[tokio::test]
async fn every_state_changing_request_is_recorded_with_its_actor_and_outcome_on_sqlite() {
    every_request_is_recorded(Store::Sqlite).await;
}

#[tokio::test]
async fn every_state_changing_request_is_recorded_with_its_actor_and_outcome_on_postgres() {
    every_request_is_recorded(Store::postgres()).await;
}

/// The answer to a submission naming `archive_path`, with that path replaced by `<path>`.
async fn answer(app: &TestApp, token: &str, body: &Value, path: &str) -> (u16, String) {
    let (status, answer) = post(app, "/v1/security-scans", Some(token), body).await;
    (status, answer.to_string().replace(path, "<path>"))
}

async fn archives_belong_to_their_uploaders(store: Store) {
    let app = store.app(with_tokens).await;
    let (status, stored) = upload(&app, Some(ALPHA_SUBMIT), Some("alpha"), &tar_archive("a")).await;
    assert_eq!(status, 201, "{stored}");
    let alphas = stored["archive_path"].as_str().unwrap().to_string();
    let unknown = format!("uploads/{}.tar", "0".repeat(64));
    assert!(app
        .config
        .upload_dir()
        .join(alphas.trim_start_matches("uploads/"))
        .is_file());

    // Beta: alpha's hash and an unknown hash get the same answer, alone or with another error.
    let foreign = answer(&app, BETA_SUBMIT, &archive_body("beta", &alphas), &alphas).await;
    let missing = answer(&app, BETA_SUBMIT, &archive_body("beta", &unknown), &unknown).await;
    assert_eq!(foreign.0, 422, "{}", foreign.1);
    assert!(foreign.1.contains("upload-archive"), "{}", foreign.1);
    assert_eq!(foreign, missing);
    let mut bad = archive_body("beta", &alphas);
    bad["component_id"] = json!("../x");
    let foreign = answer(&app, BETA_SUBMIT, &bad, &alphas).await;
    bad["archive_path"] = json!(unknown);
    let missing = answer(&app, BETA_SUBMIT, &bad, &unknown).await;
    assert_eq!(foreign.0, 422);
    assert_eq!(foreign, missing);
    // In a batch too.
    let (status, batch) = post(
        &app,
        "/v1/security-scans/batch",
        Some(BETA_SUBMIT),
        &json!({"scans": [archive_body("beta", &alphas), archive_body("beta", &unknown)]}),
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["results"][0]["status"], 422, "{batch}");
    assert_eq!(
        batch["results"][0]["detail"]
            .to_string()
            .replace(&alphas, "<path>"),
        batch["results"][1]["detail"]
            .to_string()
            .replace(&unknown, "<path>")
            .replace("\"scans\",1", "\"scans\",0"),
        "{batch}"
    );
    // Alpha may scan it; once beta uploads the same bytes, beta may too.
    let (status, body) = post(
        &app,
        "/v1/security-scans",
        Some(ALPHA_SUBMIT),
        &archive_body("alpha", &alphas),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, again) = upload(&app, Some(BETA_SUBMIT), Some("beta"), &tar_archive("a")).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["archive_path"], alphas.as_str());
    let (status, body) = post(
        &app,
        "/v1/security-scans",
        Some(BETA_SUBMIT),
        &archive_body("beta", &alphas),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    // An upload into a workspace outside the token's scope is refused.
    let (status, body) = upload(&app, Some(BETA_SUBMIT), Some("alpha"), &tar_archive("b")).await;
    assert_eq!(status, 403, "{body}");
    // A token of every workspace must say which one the archive is for.
    let (status, body) = upload(&app, Some(ROOT), None, &tar_archive("c")).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("workspace_id"), "{body}");
}

#[tokio::test]
async fn archives_belong_to_the_workspaces_that_uploaded_them_on_sqlite() {
    archives_belong_to_their_uploaders(Store::Sqlite).await;
}

#[tokio::test]
async fn archives_belong_to_the_workspaces_that_uploaded_them_on_postgres() {
    archives_belong_to_their_uploaders(Store::postgres()).await;
}

/// The earlier service's form: with authentication off an upload carries no `workspace_id`, and
/// every caller reaches every workspace, so any workspace may scan it; retention keeps it while a
/// retained scan of any workspace names it.
async fn an_unowned_upload_is_scanned_from_any_workspace(store: Store) {
    let app = store.app(|_| {}).await;
    let (status, body) = upload(&app, None, None, &tar_archive("shared")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["workspace_id"], Value::Null, "{body}");
    let path = body["archive_path"].as_str().unwrap().to_string();
    for workspace in ["alpha", "beta"] {
        let (status, body) = post(
            &app,
            "/v1/security-scans",
            None,
            &archive_body(workspace, &path),
        )
        .await;
        assert_eq!(status, 202, "{workspace}: {body}");
    }
    app.jobs
        .prune(PrunePolicy {
            finished_before: Some(certus_assurance::scan::now_secs()),
            keep_latest: None,
            batch: 500,
        })
        .await
        .unwrap();
    let dir = app.config.upload_dir();
    assert!(dir.join(path.trim_start_matches("uploads/")).is_file());
    let (status, body) = post(
        &app,
        "/v1/security-scans",
        None,
        &archive_body("gamma", &path),
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn with_authentication_off_an_archive_uploaded_without_a_workspace_is_scanned_from_any() {
    an_unowned_upload_is_scanned_from_any_workspace(Store::Sqlite).await;
    an_unowned_upload_is_scanned_from_any_workspace(Store::postgres()).await;
}

#[tokio::test]
async fn the_archive_quota_refuses_uploads_past_it_with_a_413() {
    let one = tar_archive("a").len() as u64;
    let app = Store::Sqlite
        .app(move |c| c.archive.quota_bytes = Some(one + one / 2))
        .await;
    let (status, body) = upload(&app, None, Some("ws"), &tar_archive("a")).await;
    assert_eq!(status, 201, "{body}");
    // The same bytes again are not counted twice.
    let (status, body) = upload(&app, None, Some("ws"), &tar_archive("a")).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = upload(&app, None, Some("ws"), &tar_archive("b")).await;
    assert_eq!(status, 413, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("CERTUS_ASSURANCE_ARCHIVE_QUOTA_BYTES")
            && detail.contains(&format!("already stores {one} bytes")),
        "{detail}"
    );
    // Nothing of the refused upload is kept.
    let stored: Vec<_> = std::fs::read_dir(app.config.upload_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    // The quota is per workspace.
    let (status, body) = upload(&app, None, Some("other"), &tar_archive("b")).await;
    assert_eq!(status, 201, "{body}");
    let refused = all_events(&app, None, "&action=upload_archive&outcome=refused", 50).await;
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["status"], 413);
}

async fn retention_prunes(store: Store) {
    let app = store.app(|_| {}).await;
    let (_, used) = upload(&app, None, Some("ws"), &tar_archive("used")).await;
    let (_, unused) = upload(&app, None, Some("ws"), &tar_archive("unused")).await;
    let used = used["archive_path"].as_str().unwrap().to_string();
    let unused = unused["archive_path"].as_str().unwrap().to_string();
    // A queued scan names `used` (queued scans are never pruned).
    let (status, body) = post(&app, "/v1/security-scans", None, &archive_body("ws", &used)).await;
    assert_eq!(status, 202, "{body}");
    // A finished scan (cancelled while queued).
    let (_, body) = post(&app, "/v1/security-scans", None, &body_in("ws")).await;
    let finished = body["test_id"].as_str().unwrap().to_string();
    let cancel = format!("/v1/security-scans/{finished}/cancel");
    assert_eq!(post(&app, &cancel, None, &json!({})).await.0, 200);
    let before = all_events(&app, None, "", 50).await;
    assert_eq!(before.len(), 5, "{before:#?}");
    let cutoff = certus_assurance::scan::now_secs();

    app.jobs
        .prune(PrunePolicy {
            finished_before: Some(cutoff),
            keep_latest: None,
            batch: 500,
        })
        .await
        .unwrap();

    // The finished scan and the unused archive are gone, file included; the used one stays.
    let dir = app.config.upload_dir();
    assert!(!dir.join(unused.trim_start_matches("uploads/")).exists());
    assert!(dir.join(used.trim_start_matches("uploads/")).is_file());
    let (status, body) = post(
        &app,
        "/v1/security-scans",
        None,
        &archive_body("ws", &unused),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = post(&app, "/v1/security-scans", None, &archive_body("ws", &used)).await;
    assert_eq!(status, 202, "{body}");
    // Events older than the cut-off went; the deletions are recorded by `retention`.
    let after = all_events(&app, None, "", 50).await;
    let actions: BTreeSet<&str> = after
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        BTreeSet::from([
            "retention_delete_scan",
            "retention_delete_archive",
            "submit"
        ]),
        "{after:#?}"
    );
    let e = find(&after, "retention_delete_scan", |_| true);
    assert_eq!(
        (
            &e["actor"],
            &e["actor_kind"],
            &e["workspace_id"],
            &e["test_id"]
        ),
        (
            &json!("retention"),
            &json!("service"),
            &json!("ws"),
            &json!(finished)
        ),
        "{e}"
    );
    let e = find(&after, "retention_delete_archive", |_| true);
    assert_eq!(
        e["archive_sha256"].as_str().unwrap(),
        &unused["uploads/".len()..unused.len() - ".tar".len()],
        "{e}"
    );
    assert_eq!(after.len(), 4, "{after:#?}");
}

#[tokio::test]
async fn retention_prunes_unused_archives_and_keeps_used_ones_on_sqlite() {
    retention_prunes(Store::Sqlite).await;
}

#[tokio::test]
async fn retention_prunes_unused_archives_and_keeps_used_ones_on_postgres() {
    retention_prunes(Store::postgres()).await;
}

#[test]
fn the_openapi_document_lists_every_audit_action_and_outcome() {
    use certus_assurance::storage::audit::{AuditAction, AuditOutcome};
    let doc: Value = serde_json::from_str(include_str!("../../src/api/openapi.json")).unwrap();
    let listed = |schema: &str| -> Vec<String> {
        doc["components"]["schemas"][schema]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        listed("AuditAction"),
        AuditAction::ALL.map(|a| a.as_str().to_string())
    );
    assert_eq!(
        listed("AuditOutcome"),
        AuditOutcome::ALL.map(|o| o.as_str().to_string())
    );
}

/// Two replicas storing archives of one workspace at once: the quota holds across them.
#[tokio::test]
async fn the_archive_quota_holds_across_replicas_on_postgres() {
    let one = tar_archive("a").len() as u64;
    let store = Store::postgres();
    let quota = move |c: &mut Config| c.archive.quota_bytes = Some(one + one / 2);
    let first = store.app(quota).await;
    let second = store.app(quota).await;
    for round in 0..5 {
        let workspace = format!("ws-{round}");
        let (a, b) = (
            tar_archive(&format!("{round}-a")),
            tar_archive(&format!("{round}-b")),
        );
        let ((status_a, body_a), (status_b, body_b)) = tokio::join!(
            upload(&first, None, Some(&workspace), &a),
            upload(&second, None, Some(&workspace), &b),
        );
        let mut statuses = [status_a, status_b];
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 413], "round {round}: {body_a} {body_b}");
    }
}
