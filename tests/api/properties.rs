//! Property tests for the parsers of hostile input, with structured random inputs that byte-level
//! fuzzing (scripts/fuzz.sh) reaches only slowly: whole tar and zip archives built entry by
//! entry, submissions assembled from valid and invalid field values, and git URLs with
//! credentials of every shape. A small deterministic xorshift generator keeps every run the
//! same (set PROPERTY_SEED to explore other inputs; a failure prints the seed and the case).

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use certus_assurance::api::scans::{validate_submission_json, SubmissionPolicy};
use certus_assurance::error::ApiError;
use certus_assurance::pipeline::source::archive::{extract, inspect, ArchiveFormat, Limits};
use certus_assurance::pipeline::source::{parse_git_url, redact_text, GitSchemes, SourcePolicy};
use serde_json::{json, Map, Value};

/// xorshift64*: deterministic, good enough to pick cases.
struct Rng(u64);

impl Rng {
    fn new(salt: u64) -> Rng {
        let seed = std::env::var("PROPERTY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x9e37_79b9_7f4a_7c15u64);
        Rng((seed ^ salt.wrapping_mul(0x2545_f491_4f6c_dd1d)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

// ----- Archives ---------------------------------------------------------------------------------

const LIMITS: Limits = Limits {
    max_bytes: 4096,
    max_entries: 24,
};

#[derive(Debug, Clone)]
enum Entry {
    File(String, usize),
    Dir(String),
    Symlink(String, String),
    Hardlink(String, String),
}

fn random_name(rng: &mut Rng) -> String {
    let plain = ["a", "b", "src", "x.txt", "lib"];
    let hostile = ["..", ".", "", "C:", "\\..", "a\\b", "~", "-"];
    let n = 1 + rng.below(3);
    let mut name = (0..n)
        .map(|_| {
            let parts: &[&str] = if rng.chance(85) { &plain } else { &hostile };
            rng.pick(parts).to_string()
        })
        .collect::<Vec<_>>()
        .join("/");
    if rng.chance(4) {
        name.insert(0, '/');
    }
    name
}

fn random_entries(rng: &mut Rng) -> Vec<Entry> {
    let mut entries = Vec::new();
    for _ in 0..rng.below(16) {
        entries.push(match rng.below(6) {
            0 | 1 => Entry::File(random_name(rng), rng.below(600)),
            2 => Entry::Dir(random_name(rng)),
            3 | 4 => Entry::Symlink(random_name(rng), random_name(rng)),
            _ => Entry::Hardlink(random_name(rng), random_name(rng)),
        });
    }
    entries
}

/// A tar archive with exactly these entry names (the tar crate's builder would refuse `..`).
fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let (name, kind, link, size) = match entry {
            Entry::File(n, size) => (n, tar::EntryType::Regular, None, *size),
            Entry::Dir(n) => (n, tar::EntryType::Directory, None, 0),
            Entry::Symlink(n, t) => (n, tar::EntryType::Symlink, Some(t), 0),
            Entry::Hardlink(n, t) => (n, tar::EntryType::Link, Some(t), 0),
        };
        let raw = &mut header.as_old_mut().name;
        let bytes = name.as_bytes();
        let len = bytes.len().min(raw.len());
        raw[..len].copy_from_slice(&bytes[..len]);
        if let Some(link) = link {
            let raw = &mut header.as_old_mut().linkname;
            let len = link.len().min(raw.len());
            raw[..len].copy_from_slice(&link.as_bytes()[..len]);
        }
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(size as u64);
        header.set_cksum();
        builder
            .append(&header, &vec![b'z'; size][..])
            .expect("append");
    }
    builder.into_inner().expect("tar")
}

fn zip_of(entries: &[Entry]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    for entry in entries {
        // The writer refuses some names (and duplicates); those entries are left out.
        let _ = match entry {
            Entry::File(n, size) => zip
                .start_file(n.as_str(), options)
                .and_then(|_| Ok(zip.write_all(&vec![b'z'; *size])?)),
            Entry::Dir(n) => zip.add_directory(n.as_str(), options),
            Entry::Symlink(n, t) | Entry::Hardlink(n, t) => {
                zip.add_symlink(n.as_str(), t.as_str(), options)
            }
        };
    }
    zip.finish().expect("zip").into_inner()
}

fn regular_bytes_and_entries(dir: &Path, inodes: &mut HashSet<u64>) -> (u64, u64) {
    let (mut bytes, mut entries) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            let (b, e) = regular_bytes_and_entries(&path, inodes);
            bytes += b;
            entries += e;
            continue;
        }
        entries += 1;
        if meta.is_file() && inodes.insert(meta.ino()) {
            bytes += meta.len();
        }
    }
    (bytes, entries)
}

fn links_stay_inside(dir: &Path, root: &Path) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() {
            if let Ok(real) = path.canonicalize() {
                if !real.starts_with(root) {
                    return Err(format!("{} resolves to {}", path.display(), real.display()));
                }
            }
        } else if meta.is_dir() {
            links_stay_inside(&path, root)?;
        }
    }
    Ok(())
}

/// Extracts `bytes` next to a sentinel directory and checks every invariant; true when the
/// archive was accepted.
fn check_archive(bytes: &[u8], format: ArchiveFormat, case: &str) -> bool {
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("upload");
    std::fs::write(&archive, bytes).unwrap();
    let dest = work.path().join("tree");
    let outside = work.path().join("outside");
    std::fs::create_dir(&dest).unwrap();
    std::fs::create_dir(&outside).unwrap();

    let inspected = inspect(&archive, format, LIMITS);
    let extracted = extract(&archive, format, &dest, LIMITS, &AtomicBool::new(false));

    let mut names: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["outside", "tree", "upload"], "{case}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{case}");
    let (written, entries) = regular_bytes_and_entries(&dest, &mut HashSet::new());
    assert!(written <= LIMITS.max_bytes + 1, "{written} bytes: {case}");
    assert!(entries <= LIMITS.max_entries, "{entries} entries: {case}");
    if let Ok(stats) = &extracted {
        assert!(written <= LIMITS.max_bytes, "{case}");
        let root = dest.canonicalize().unwrap();
        if let Err(e) = links_stay_inside(&dest, &root) {
            panic!("{e}: {case}");
        }
        match &inspected {
            Ok(seen) => assert_eq!(seen, stats, "{case}"),
            Err(e) => panic!("inspection refused ({e}) what extraction accepted: {case}"),
        }
    }
    extracted.is_ok()
}

#[test]
fn random_archives_never_write_outside_their_directory_or_past_their_limits() {
    let mut rng = Rng::new(1);
    let mut accepted = 0;
    for i in 0..250 {
        let entries = random_entries(&mut rng);
        let case = format!("case {i}: {entries:?}");
        let tar = tar_of(&entries);
        accepted += check_archive(&tar, ArchiveFormat::Tar, &case) as u32;
        if i % 5 == 0 {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&tar).unwrap();
            check_archive(&gz.finish().unwrap(), ArchiveFormat::TarGz, &case);
        }
        accepted += check_archive(&zip_of(&entries), ArchiveFormat::Zip, &case) as u32;
    }
    // Hostile names are common in the generator, but not every archive may be refused.
    assert!(
        accepted >= 25,
        "only {accepted} of 500 archives were accepted"
    );
}

// ----- Submissions ------------------------------------------------------------------------------

fn random_value(rng: &mut Rng, valid: &[&str]) -> Value {
    match rng.below(12) {
        0..=7 => json!(rng.pick(valid)),
        8 => json!(rng.pick(&["", ".", "..", "a/b", "x\u{0}y", "é", " ", "-rf", "\\"])),
        9 => json!(rng.next() as i64),
        10 => Value::Null,
        _ => json!([rng.pick(valid)]),
    }
}

fn random_submission(rng: &mut Rng) -> Value {
    let long_id = "x".repeat(128);
    let fields: [(&str, &[&str]); 13] = [
        ("workspace_id", &["acme", "ws-1", "a.b_c", &long_id]),
        ("component_id", &["svc", "payments-api"]),
        ("assessment_id", &["rel-1", "2025.12"]),
        ("source_type", &["git", "directory", "archive", "svn"]),
        (
            "git_url",
            &[
                "https://github.com/acme/repo.git",
                "git@github.com:acme/repo.git",
                "https://user:pa%40ss@example.com/r.git",
                "https://127.0.0.1/r",
                "file:///etc",
                "/srv/repo",
            ],
        ),
        ("branch", &["main", "release/1.2", "a..b", "-x", "x.lock"]),
        ("commit", &["4f2a9c1e", "ABCDEF0123", "xyz", "abc"]),
        ("directory_path", &["/tmp", "/etc", "relative"]),
        (
            "archive_path",
            &[
                "uploads/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08.tar.gz",
                "uploads/../../etc/passwd",
            ],
        ),
        ("profile", &["light", "standard", "nope"]),
        ("manifest_path", &[".certus.json", "../x", "/abs"]),
        ("requested_by", &["ci", "someone"]),
        ("timeout_seconds", &["600"]),
    ];
    let mut body = Map::new();
    for (name, valid) in fields {
        let presence = match name {
            "workspace_id" | "component_id" | "assessment_id" => 97,
            "git_url" => 85,
            "source_type" => 15,
            _ => 30,
        };
        if rng.chance(presence) {
            let mut value = random_value(rng, valid);
            if name == "timeout_seconds" && rng.chance(60) {
                value = json!(rng.pick(&[&1i64, &600, &86400, &86401, &0, &-5]));
            }
            body.insert(name.to_string(), value);
        }
    }
    if rng.chance(15) {
        body.insert(
            "manifest".into(),
            json!({"scanners": [rng.pick(&["secrets", "sbom", "bandit", "???"])], "thresholds": {"high": rng.below(3)}}),
        );
    }
    Value::Object(body)
}

#[test]
fn random_submissions_are_accepted_only_when_every_field_is_valid() {
    let tmp = std::env::temp_dir().canonicalize().unwrap();
    let policy = SubmissionPolicy {
        source: SourcePolicy::STRICT,
        source_roots: vec![tmp.clone()],
        upload_dir: tmp.join("certus-property-uploads"),
        default_timeout_seconds: 600,
    };
    let identifier = |s: &str| {
        (1..=128).contains(&s.len())
            && s != ".."
            && s != "."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    let mut rng = Rng::new(2);
    let mut accepted = 0;
    for i in 0..3000 {
        let body = random_submission(&mut rng);
        let case = format!("case {i}: {body}");
        match validate_submission_json(body.to_string().as_bytes(), &policy) {
            Ok(scan) => {
                accepted += 1;
                assert!(identifier(&scan.workspace_id), "{case}");
                assert!(identifier(&scan.component_id), "{case}");
                assert!(identifier(&scan.assessment_id), "{case}");
                assert!((1..=86400).contains(&scan.timeout_seconds), "{case}");
                if let Some(shown) = &scan.git_display_url {
                    assert!(!shown.contains("pa%40ss"), "{case}");
                    assert!(
                        !shown.contains("127.0.0.1") && !shown.starts_with("file:"),
                        "{case}"
                    );
                }
                if let Some(path) = &scan.manifest_path {
                    assert!(!path.starts_with('/') && !path.contains(".."), "{case}");
                }
                if let Some(branch) = &scan.branch {
                    assert!(!branch.starts_with('-') && !branch.contains(".."), "{case}");
                }
                assert!(scan.archive_path.is_none(), "no archive is stored: {case}");
            }
            Err(ApiError::Validation(errors)) => {
                assert!(!errors.is_empty(), "{case}");
                for e in &errors {
                    assert_eq!(e.loc[0], "body", "{case}");
                    assert!(!e.msg.is_empty(), "{case}");
                }
            }
            Err(other) => panic!("{case}: {other:?}"),
        }
    }
    assert!(
        accepted > 20,
        "the generator should also build valid submissions ({accepted})"
    );
}

// ----- Git URLs ---------------------------------------------------------------------------------

#[test]
fn credentials_in_random_git_urls_never_reach_the_display_form_or_messages() {
    let policy = SourcePolicy {
        allow_private_networks: true,
        schemes: GitSchemes::ALL,
        ..SourcePolicy::STRICT
    };
    let alphabet = b"abcXYZ019-._~!$&'()*+,;=%:@/?#[]";
    let mut rng = Rng::new(3);
    let mut with_password = 0;
    for i in 0..5000 {
        let user: String = (0..rng.below(8))
            .map(|_| alphabet[rng.below(alphabet.len())] as char)
            .collect();
        let password: String = (0..4 + rng.below(12))
            .map(|_| alphabet[rng.below(alphabet.len())] as char)
            .collect();
        let scheme = rng.pick(&["https", "ssh", "git", "http"]);
        let host = rng.pick(&[
            "example.com",
            "10.1.2.3",
            "[2001:db8::1]",
            "git.example.org:8443",
        ]);
        let raw = format!("{scheme}://{user}:{password}@{host}/org/repo.git");
        let Ok(git) = parse_git_url(&raw, policy) else {
            continue;
        };
        let case = format!("case {i}: {raw} shown as {}", git.display_url);
        let Ok(parsed) = url::Url::parse(git.clone_url.expose()) else {
            continue;
        };
        assert!(
            url::Url::parse(&git.display_url)
                .unwrap()
                .password()
                .is_none(),
            "{case}"
        );
        if let Some(secret) = parsed.password() {
            with_password += 1;
            assert!(!git.display_url.contains(&format!(":{secret}@")), "{case}");
            let message = redact_text(
                &format!("fatal: {} failed ({secret})", git.clone_url.expose()),
                &git,
            );
            assert!(
                !message.contains(git.clone_url.expose()),
                "{case}: {message}"
            );
            if secret.len() >= 4 {
                assert!(!message.contains(secret), "{case}: {message}");
            }
        }
    }
    assert!(with_password > 500, "{with_password} URLs kept a password");
}
