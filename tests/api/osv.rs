//! The OSV data lifecycle: `certus-assurance osv sync` (the real binary) against a loopback
//! mirror in the osv.dev export layout serving zips built here from records in the OSV schema,
//! and the service picking up what the sync swapped in, reporting missing ecosystems and the
//! data's age.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::helpers::*;

/// One file the mirror serves: body and ETag.
type Files = HashMap<String, (Vec<u8>, String)>;
/// (path, If-None-Match) of one request.
type Request = (String, Option<String>);

#[derive(Clone, Default)]
struct Mirror {
    files: Arc<Mutex<Files>>,
    /// (path, If-None-Match) of every request.
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Mirror {
    fn put(&self, path: &str, body: Vec<u8>) {
        let etag = format!("\"{}\"", &sha256_hex(&body)[..16]);
        self.files
            .lock()
            .unwrap()
            .insert(path.to_string(), (body, etag));
    }

    fn requests(&self) -> Vec<Request> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn serve_file(
    State(m): State<Mirror>,
    UrlPath((eco, file)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("{eco}/{file}");
    let inm = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    m.requests.lock().unwrap().push((path.clone(), inm.clone()));
    let Some((body, etag)) = m.files.lock().unwrap().get(&path).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if inm.as_deref() == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        StatusCode::OK,
        [
            (header::ETAG, etag),
            (header::CONTENT_TYPE, "application/zip".to_string()),
        ],
        body,
    )
        .into_response()
}

/// Starts the mirror on a loopback port; returns its base URL.
async fn start_mirror(m: Mirror) -> String {
    let app = axum::Router::new()
        .route("/{eco}/{file}", axum::routing::get(serve_file))
        .with_state(m);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// An OSV record (schema 1.6) for `package` in `ecosystem`, affected below `fixed`.
fn record(id: &str, ecosystem: &str, package: &str, fixed: &str) -> Value {
    json!({
        "schema_version": "1.6.0",
        "id": id,
        "modified": now_rfc3339(),
        "published": "2025-06-01T00:00:00Z",
        "aliases": [format!("CVE-2025-{}", id.len() * 1000 + package.len())],
        "summary": format!("Test advisory for {package}"),
        "details": "Built by the test in the OSV schema.",
        "affected": [{
            "package": {"ecosystem": ecosystem, "name": package, "purl": format!("pkg:{}/{package}", ecosystem.to_lowercase())},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}],
            "database_specific": {"source": "test"}
        }],
        "database_specific": {"severity": "HIGH"},
        "references": [{"type": "ADVISORY", "url": format!("https://osv.dev/vulnerability/{id}")}]
    })
}

/// An `all.zip` as osv.dev builds it: one `<ID>.json` per record.
fn export_zip(records: &[Value]) -> Vec<u8> {
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut cursor);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for r in records {
            zip.start_file(format!("{}.json", r["id"].as_str().unwrap()), opts)
                .unwrap();
            zip.write_all(serde_json::to_string_pretty(r).unwrap().as_bytes())
                .unwrap();
        }
        zip.finish().unwrap();
    }
    cursor.into_inner()
}

fn osv_sync(source: &str, db_dir: &Path, ecosystems: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_certus-assurance"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CERTUS_ASSURANCE_OSV_SOURCE_URL", source)
        .args(["osv", "sync", "--ecosystems", ecosystems, "--db-dir"])
        .arg(db_dir)
        .output()
        .expect("the binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osv_sync_downloads_checks_and_swaps_atomically_and_asks_conditionally() {
    let mirror = Mirror::default();
    let pypi_v1 = export_zip(&[
        record("PYSEC-2025-1", "PyPI", "flask", "0.12.3"),
        record("GHSA-aaaa-bbbb-cccc", "PyPI", "jinja2", "2.10.1"),
    ]);
    mirror.put("PyPI/all.zip", pypi_v1.clone());
    mirror.put(
        "npm/all.zip",
        export_zip(&[record("GHSA-npm1-0000-0000", "npm", "lodash", "4.17.21")]),
    );
    let base = start_mirror(mirror.clone()).await;
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("osv");

    // First run: both downloaded (the directory is created), each with its state.
    let o = osv_sync(&base, &db, "PyPI,npm");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("PyPI: updated (2 records"), "{out}");
    assert!(out.contains("npm: updated (1 records"), "{out}");
    assert_eq!(std::fs::read(db.join("PyPI/all.zip")).unwrap(), pypi_v1);
    assert_eq!(entries(&db.join("PyPI")), vec!["all.zip", "all.zip.state"]);
    let state: Value =
        serde_json::from_slice(&std::fs::read(db.join("PyPI/all.zip.state")).unwrap()).unwrap();
    assert_eq!(state["url"], format!("{base}/PyPI/all.zip"));
    assert_eq!(state["records"], 2);
    assert_eq!(state["sha256"], sha256_hex(&pypi_v1));
    let first = mirror.requests();
    assert_eq!(first.len(), 2);
    assert!(
        first.iter().all(|(_, inm)| inm.is_none()),
        "unconditional at first: {first:?}"
    );

    // Second run: conditional requests, 304, nothing rewritten but the check time.
    let o = osv_sync(&base, &db, "PyPI,npm");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("PyPI: not modified"), "{out}");
    assert!(out.contains("npm: not modified"), "{out}");
    let second = mirror.requests();
    assert_eq!(second.len(), 2);
    assert!(
        second.iter().all(|(_, inm)| inm.is_some()),
        "If-None-Match sent: {second:?}"
    );
    assert_eq!(std::fs::read(db.join("PyPI/all.zip")).unwrap(), pypi_v1);

    // A corrupt download (new ETag, truncated zip) and one that is not OSV data never replace
    // good data; the other ecosystems still sync; exit 1 with what to do.
    let mut corrupt = pypi_v1.clone();
    corrupt.truncate(corrupt.len() / 2);
    mirror.put("PyPI/all.zip", corrupt);
    let mut bad_records = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut bad_records);
        zip.start_file("x.json", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(br#"{"name": "not an advisory"}"#).unwrap();
        zip.finish().unwrap();
    }
    mirror.put("npm/all.zip", bad_records.into_inner());
    let o = osv_sync(&base, &db, "PyPI,npm");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("PyPI:") && err.contains("not a readable zip"),
        "{err}"
    );
    assert!(
        err.contains("npm:") && err.contains("not an OSV record"),
        "{err}"
    );
    assert!(err.contains("previous data is kept"), "{err}");
    assert_eq!(std::fs::read(db.join("PyPI/all.zip")).unwrap(), pypi_v1);
    assert_eq!(
        entries(&db.join("PyPI")),
        vec!["all.zip", "all.zip.state"],
        "no temporary file is left"
    );
    let after: Value =
        serde_json::from_slice(&std::fs::read(db.join("PyPI/all.zip.state")).unwrap()).unwrap();
    assert_eq!(
        after["sha256"], state["sha256"],
        "the state still describes the old data"
    );

    // A good new export replaces the old one.
    let pypi_v2 = export_zip(&[
        record("PYSEC-2025-1", "PyPI", "flask", "0.12.3"),
        record("GHSA-aaaa-bbbb-cccc", "PyPI", "jinja2", "2.10.1"),
        record("PYSEC-2025-2", "PyPI", "requests", "2.32.0"),
    ]);
    mirror.put("PyPI/all.zip", pypi_v2.clone());
    let o = osv_sync(&base, &db, "pypi");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("PyPI: updated (3 records"));
    assert_eq!(std::fs::read(db.join("PyPI/all.zip")).unwrap(), pypi_v2);

    // Bad arguments and an unreachable or wrong source say what to do.
    let o = osv_sync(&base, &db, "Maven");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("crates.io, npm, PyPI, Go, RubyGems, Packagist"));
    let o = osv_sync(&base, &db, "Go");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("404") && err.contains("CERTUS_ASSURANCE_OSV_SOURCE_URL"),
        "{err}"
    );
    let closed = format!("http://127.0.0.1:{}", free_port());
    let o = osv_sync(&closed, &db, "PyPI");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("could not connect"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(db.join("PyPI/all.zip")).unwrap(), pypi_v2);
}

fn ids(body: Value) -> Value {
    let mut b = json!({"workspace_id": "ws", "component_id": "svc", "assessment_id": "rel-1"});
    for (k, v) in body.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

async fn scan_tree(app: &TestApp, tree: &Path) -> (Value, Value, Value) {
    let id = app
        .submit_scan(ids(json!({
            "source_type": "directory",
            "directory_path": tree.to_str().unwrap(),
            "profile": "light",
        })))
        .await;
    let scan = app
        .wait_for_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(120))
        .await;
    let dir = app.artifact_dir(&id);
    let read = |p: &str| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join(p)).unwrap_or_else(|e| panic!("{p}: {e}")))
            .unwrap()
    };
    (
        scan,
        read("scan.json"),
        read("reports/sast/vulnerabilities.sarif.json"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_picks_up_a_synced_database_and_reports_coverage_and_age() {
    let mirror = Mirror::default();
    mirror.put(
        "PyPI/all.zip",
        export_zip(&[record("GHSA-aaaa-bbbb-cccc", "PyPI", "jinja2", "2.10.1")]),
    );
    let base = start_mirror(mirror.clone()).await;
    let roots = tempfile::tempdir().unwrap();
    let tree = roots.path().join("project");
    for d in ["", "services/api"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
        std::fs::write(
            tree.join(d).join("requirements.txt"),
            "flask==0.12.2\nrequests==2.31.0\n",
        )
        .unwrap();
    }
    std::fs::write(
        tree.join("package-lock.json"),
        json!({"name": "web", "lockfileVersion": 3, "requires": true, "packages": {
            "": {"name": "web", "version": "1.0.0"},
            "node_modules/lodash": {"version": "4.17.20"}}})
        .to_string(),
    )
    .unwrap();
    let db = roots.path().join("osv");
    let o = osv_sync(&base, &db, "PyPI");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let root = roots.path().canonicalize().unwrap();
    let osv_dir = db.clone();
    let app = spawn_app_with(move |c| {
        c.source.source_roots = vec![root];
        c.scanning.osv_db_dir = Some(osv_dir);
        c.scanning.osv_max_age = Some(Duration::from_secs(168 * 3600));
    })
    .await;

    // The start-up check fills the gauges: PyPI has one record and a small age; npm none.
    let mut metrics = String::new();
    for _ in 0..200 {
        metrics = app.metrics_text().await;
        if sample(
            &metrics,
            "certus_assurance_osv_records",
            &[("ecosystem", "PyPI")],
        ) == Some(1.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sample(
            &metrics,
            "certus_assurance_osv_records",
            &[("ecosystem", "PyPI")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "certus_assurance_osv_records",
            &[("ecosystem", "npm")]
        ),
        Some(0.0)
    );
    let age = sample(
        &metrics,
        "certus_assurance_osv_database_age_seconds",
        &[("ecosystem", "PyPI")],
    )
    .unwrap();
    // Counted from the sync's recorded check time: at most the time elapsed since then.
    let state: Value =
        serde_json::from_slice(&std::fs::read(db.join("PyPI/all.zip.state")).unwrap()).unwrap();
    let since_check = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - state["checked_at"].as_u64().unwrap();
    assert!(
        age >= 0.0 && age <= since_check as f64,
        "{age} > {since_check}"
    );
    assert_eq!(
        sample(
            &metrics,
            "certus_assurance_osv_database_max_age_seconds",
            &[]
        ),
        Some(604800.0)
    );

    // First scan: nothing matches yet; npm is in the SBOM without data, which is reported.
    let (scan, scan_json, sarif) = scan_tree(&app, &tree).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    assert_eq!(sarif["runs"][0]["results"], json!([]));
    let props = &sarif["runs"][0]["properties"]["osv"];
    assert_eq!(props["sbom_ecosystems"], json!(["npm", "PyPI"]));
    assert_eq!(props["missing_ecosystems"], json!(["npm"]));
    assert_eq!(props["stale_ecosystems"], json!([]));
    assert_eq!(props["data"]["PyPI"]["age_source"], "sync");
    assert_eq!(props["data"]["PyPI"]["records"], 1);
    let warnings = scan_json["warnings"].to_string();
    assert!(
        warnings.contains("no records for npm") && warnings.contains("osv sync --ecosystems npm"),
        "{warnings}"
    );

    // The mirror publishes an advisory for flask; after a sync the running service uses it.
    mirror.put(
        "PyPI/all.zip",
        export_zip(&[
            record("GHSA-aaaa-bbbb-cccc", "PyPI", "jinja2", "2.10.1"),
            record("PYSEC-2025-1", "PyPI", "Flask", "0.12.3"),
        ]),
    );
    let o = osv_sync(&base, &db, "PyPI");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (scan, _, sarif) = scan_tree(&app, &tree).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    // One result for (flask 0.12.2, PYSEC-2025-1) with both lockfiles, counted once.
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["ruleId"], "PYSEC-2025-1");
    assert_eq!(
        results[0]["properties"]["lockfiles"],
        json!(["requirements.txt", "services/api/requirements.txt"])
    );
    assert_eq!(results[0]["locations"].as_array().unwrap().len(), 2);
    assert_eq!(
        sarif["runs"][0]["properties"]["osv"]["data"]["PyPI"]["records"],
        2
    );
    let summary: Value = serde_json::from_slice(
        &std::fs::read(
            app.artifact_dir(scan["test_id"].as_str().unwrap())
                .join("summary.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        summary["findings"]["by_scanner"]["vulnerabilities"]["total"], 1,
        "{summary}"
    );
    let report = app
        .artifact_dir(scan["test_id"].as_str().unwrap())
        .join("reports/sast/vulnerabilities.sarif.json");
    let (ok, out) = validate_schemas(&["sarif".into(), report.into_os_string()]);
    assert!(ok, "SARIF schema violations:\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_osv_fixture_covers_every_ecosystem_of_the_lockfile_corpus_and_is_fresh() {
    // Other tests rely on the fixture for complete vulnerability runs: no ecosystem of the
    // lockfile corpus may be missing or stale, or their scanner would count as failed.
    let roots = tempfile::tempdir().unwrap();
    let tree = roots.path().join("project");
    crate::corpus::write_tree(&tree, &crate::corpus::lockfile_corpus());
    let osv = tempfile::tempdir().unwrap();
    crate::corpus::write_osv_fixture(osv.path());
    let root = roots.path().canonicalize().unwrap();
    let osv_dir = osv.path().to_path_buf();
    let app = spawn_app_with(move |c| {
        c.source.source_roots = vec![root];
        c.scanning.osv_db_dir = Some(osv_dir);
    })
    .await;
    let (scan, scan_json, sarif) = scan_tree(&app, &tree).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    let props = &sarif["runs"][0]["properties"]["osv"];
    assert_eq!(
        props["sbom_ecosystems"],
        json!(["crates.io", "npm", "PyPI", "Go", "RubyGems"]),
        "{props}"
    );
    assert_eq!(props["missing_ecosystems"], json!([]), "{props}");
    assert_eq!(props["stale_ecosystems"], json!([]), "{props}");
    assert_eq!(props["max_age_seconds"], 168 * 3600);
    assert!(
        !scan_json["warnings"].to_string().contains("OSV"),
        "{}",
        scan_json["warnings"]
    );
}
