use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn clones_a_branch_from_git_daemon() {
    let git = GitServer::start();
    let main_commit = git.create_repo("multi", &[("README.md", "main\n")]);
    git.checkout_new_branch("multi", "feature/x");
    let feature_commit = git.commit("multi", &[("feature.txt", "feature\n")], "feature work");
    git.checkout("multi", "main");
    let app = spawn_app().await;

    let mut body = scan_body(&git.url("multi"));
    body["branch"] = json!("feature/x");
    let id = app.submit_scan(body).await;
    let scan = app.wait_for_terminal(&id).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    assert_eq!(scan["resolved_commit"], feature_commit);
    assert_eq!(scan["resolved_branch"], "feature/x");

    let mut body = scan_body(&git.url("multi"));
    body.as_object_mut().unwrap().remove("branch");
    let id = app.submit_scan(body).await;
    let scan = app.wait_for_terminal(&id).await;
    assert_eq!(
        scan["resolved_commit"], main_commit,
        "no branch: the default branch"
    );
    assert_eq!(scan["resolved_branch"], "main");
}

#[tokio::test]
async fn clones_a_specific_commit_from_git_daemon() {
    let git = GitServer::start();
    let first = git.create_repo("history", &[("a.txt", "one\n")]);
    let second = git.commit("history", &[("a.txt", "two\n")], "second");
    let app = spawn_app().await;
    let mut body = scan_body(&git.url("history"));
    body["commit"] = json!(first);
    let id = app.submit_scan(body).await;
    let scan = app.wait_for_terminal(&id).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    assert_eq!(scan["resolved_commit"], first);
    assert_ne!(first, second);
    let events = std::fs::read_to_string(app.artifact_dir(&id).join("stream.jsonl")).unwrap();
    assert!(
        events.contains(&format!("\"commit\":\"{first}\"")),
        "the phase event names the commit"
    );

    // An abbreviated commit id works too.
    let mut body = scan_body(&git.url("history"));
    body["commit"] = json!(&second[..10]);
    let id = app.submit_scan(body).await;
    assert_eq!(app.wait_for_terminal(&id).await["resolved_commit"], second);
}

#[tokio::test]
async fn unknown_branches_and_commits_fail_as_invalid_sources() {
    let git = GitServer::start();
    git.create_repo("repo", &[("a.txt", "x\n")]);
    let app = spawn_app().await;
    let mut body = scan_body(&git.url("repo"));
    body["branch"] = json!("no-such-branch");
    let id = app.submit_scan(body).await;
    let scan = app.wait_for_terminal(&id).await;
    assert_eq!(scan["status"], "FAILED");
    assert_eq!(scan["failure_reason"], "source_invalid", "{scan}");
    assert!(
        scan["errors"][0]
            .as_str()
            .unwrap()
            .contains("no-such-branch"),
        "{scan}"
    );

    let mut body = scan_body(&git.url("repo"));
    body["commit"] = json!("deadbeefdeadbeefdeadbeefdeadbeefdeadbeef");
    let id = app.submit_scan(body).await;
    let scan = app.wait_for_terminal(&id).await;
    assert_eq!(scan["failure_reason"], "source_invalid", "{scan}");
}

#[tokio::test]
async fn local_repositories_clone_when_local_sources_are_allowed() {
    let git = GitServer::start();
    let commit = git.create_repo("local", &[("a.txt", "x\n")]);
    let app = spawn_app().await;
    let url = format!("file://{}", git.repo_path("local").display());
    let id = app.submit_scan(scan_body(&url)).await;
    let scan = app.wait_for_terminal(&id).await;
    assert_eq!(scan["status"], "SUCCEEDED", "{scan}");
    assert_eq!(scan["resolved_commit"], commit);
}

#[tokio::test]
async fn clones_over_the_size_limit_are_stopped() {
    let git = GitServer::start();
    let big: String = (0..200_000).map(|i| format!("{i:x}")).collect();
    git.create_repo("big", &[("big.txt", &big)]);
    let app = spawn_app_with(|c| c.source.clone_max_bytes = 1024).await;
    let id = app.submit_scan(scan_body(&git.url("big"))).await;
    let scan = app.wait_for_terminal(&id).await;
    assert_eq!(scan["failure_reason"], "source_invalid", "{scan}");
    assert!(
        scan["errors"][0]
            .as_str()
            .unwrap()
            .contains("CLONE_MAX_BYTES"),
        "{scan}"
    );
}
