//! The offline OSV database and the matching of SBOM components against it.
//!
//! The database is a directory of OSV JSON records as osv.dev exports them per ecosystem
//! (`<ecosystem>/<ID>.json`, or the export's `all.zip` dropped in unextracted), anywhere below
//! `CERTUS_ASSURANCE_OSV_DB_DIR`. Records are indexed by (ecosystem, normalised package name);
//! a component is affected when its version is listed explicitly or falls in one of the ranges,
//! evaluated with the ecosystem's own version ordering ([`version`]). Withdrawn records and
//! ecosystems the SBOM does not know are ignored.
//!
//! `certus-assurance osv sync` ([`sync`]) keeps the directory current: it writes
//! `<Ecosystem>/all.zip` beside a small state file (`<Ecosystem>/all.zip.state`) recording when the
//! data was last confirmed current. [`OsvStore`] notices a swapped file on the next scan, and
//! [`watch`] re-checks the directory every minute in the service, keeping the freshness gauges
//! up to date.

pub mod pep440;
pub mod rubygems;
pub mod sync;
pub mod version;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::Deserialize;

use super::finding::Severity;
use super::observer::ScanObserver;
use super::sbom::version::parse_semver;
use super::sbom::{Component, Ecosystem};
use version::EcoVersion;

/// One advisory as it applies to one package.
#[derive(Debug, Clone)]
pub struct Advisory {
    pub id: String,
    /// Other identifiers (CVE, GHSA, ...).
    pub aliases: Vec<String>,
    pub summary: String,
    pub severity: Severity,
    /// Where the severity came from: `database` (the record's own rating), `cvss_v3` (computed
    /// from the vector), `informational` or `default` (no rating in the record).
    pub severity_source: &'static str,
    pub cvss_vector: Option<String>,
    pub ranges: Vec<Range>,
    /// Versions listed as affected explicitly.
    pub versions: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Range {
    /// `SEMVER` ranges use semver whatever the ecosystem; `ECOSYSTEM` ranges use its own rules.
    pub semver: bool,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}

/// A component found affected by an advisory.
#[derive(Debug, Clone)]
pub struct VulnMatch {
    pub advisory: Arc<Advisory>,
    /// Index into the inventory's components.
    pub component: usize,
    /// Versions that fix it (from the ranges that matched), in record order.
    pub fixed: Vec<String>,
}

/// The loaded database: advisories by (ecosystem, normalised package name).
#[derive(Debug, Default)]
pub struct OsvDatabase {
    index: HashMap<(Ecosystem, String), Vec<Arc<Advisory>>>,
    /// Records read (including those for other ecosystems and withdrawn ones).
    pub records: usize,
    /// Advisory entries indexed for the known ecosystems.
    pub indexed: usize,
    /// Files that could not be read or parsed (the rest of the database is still used).
    pub errors: Vec<String>,
    /// Records and newest `modified` time per ecosystem the SBOM knows.
    pub ecosystems: BTreeMap<Ecosystem, EcosystemData>,
}

/// What the database holds for one ecosystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EcosystemData {
    /// Records with at least one affected package of the ecosystem (withdrawn ones included).
    pub records: usize,
    /// The newest `modified` time among those records.
    pub newest_modified: Option<SystemTime>,
}

impl EcosystemData {
    fn merge(&mut self, other: EcosystemData) {
        self.records += other.records;
        self.newest_modified = self.newest_modified.max(other.newest_modified);
    }
}

// ----- Raw OSV schema (only the fields matching needs) ------------------------------------------

#[derive(Deserialize)]
struct RawRecord {
    id: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    details: Option<String>,
    #[serde(default)]
    withdrawn: Option<String>,
    #[serde(default)]
    modified: Option<String>,
    #[serde(default)]
    severity: Vec<RawSeverity>,
    #[serde(default)]
    affected: Vec<RawAffected>,
    #[serde(default)]
    database_specific: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawSeverity {
    #[serde(rename = "type")]
    kind: String,
    score: String,
}

#[derive(Deserialize)]
struct RawAffected {
    #[serde(default)]
    package: Option<RawPackage>,
    #[serde(default)]
    ranges: Vec<RawRange>,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    severity: Vec<RawSeverity>,
    #[serde(default)]
    database_specific: Option<serde_json::Value>,
    #[serde(default)]
    ecosystem_specific: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawPackage {
    ecosystem: String,
    name: String,
}

#[derive(Deserialize)]
struct RawRange {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    events: Vec<HashMap<String, String>>,
}

impl OsvDatabase {
    /// Loads every record under `dir` (JSON files and `.zip` exports), parsing on all cores.
    pub fn load(dir: &Path) -> anyhow::Result<OsvDatabase> {
        let mut files = Vec::new();
        collect_files(dir, &mut files)
            .with_context(|| format!("listing the OSV database {}", dir.display()))?;
        files.sort();
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8);
        let chunk = files.len().div_ceil(threads).max(1);
        let parts: Vec<OsvDatabase> = std::thread::scope(|scope| {
            let handles: Vec<_> = files
                .chunks(chunk)
                .map(|chunk| scope.spawn(move || load_files(dir, chunk)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let mut db = OsvDatabase::default();
        for part in parts {
            db.records += part.records;
            db.indexed += part.indexed;
            db.errors.extend(part.errors);
            for (eco, data) in part.ecosystems {
                db.ecosystems.entry(eco).or_default().merge(data);
            }
            for (key, list) in part.index {
                db.index.entry(key).or_default().extend(list);
            }
        }
        for list in db.index.values_mut() {
            list.sort_by(|a, b| a.id.cmp(&b.id));
        }
        Ok(db)
    }

    /// Adds one record's JSON text (used by [`Self::load`] and by tests).
    pub fn add_record(&mut self, text: &[u8]) -> anyhow::Result<()> {
        let raw: RawRecord = serde_json::from_slice(text).context("not an OSV record")?;
        self.records += 1;
        let modified = raw.modified.as_deref().and_then(parse_timestamp);
        let ecosystems: BTreeSet<Ecosystem> = raw
            .affected
            .iter()
            .filter_map(|a| Ecosystem::from_osv_name(&a.package.as_ref()?.ecosystem))
            .collect();
        for eco in ecosystems {
            self.ecosystems
                .entry(eco)
                .or_default()
                .merge(EcosystemData {
                    records: 1,
                    newest_modified: modified,
                });
        }
        if raw.withdrawn.is_some() {
            return Ok(());
        }
        let top_severity = rating(raw.database_specific.as_ref(), &raw.severity);
        let summary = raw
            .summary
            .clone()
            .or_else(|| {
                raw.details
                    .as_ref()
                    .map(|d| d.lines().next().unwrap_or("").to_string())
            })
            .unwrap_or_default();
        for affected in raw.affected {
            let Some(pkg) = &affected.package else {
                continue;
            };
            let Some(ecosystem) = Ecosystem::from_osv_name(&pkg.ecosystem) else {
                continue;
            };
            let informational = affected
                .ecosystem_specific
                .as_ref()
                .and_then(|e| e.get("informational"))
                .is_some();
            let (severity, source, vector) =
                match rating(affected.database_specific.as_ref(), &affected.severity) {
                    Some(r) => r,
                    None => match &top_severity {
                        Some(r) => r.clone(),
                        None if informational => (Severity::Low, "informational", None),
                        None => (Severity::Medium, "default", None),
                    },
                };
            let ranges = affected
                .ranges
                .iter()
                .filter(|r| r.kind == "SEMVER" || r.kind == "ECOSYSTEM")
                .map(|r| Range {
                    semver: r.kind == "SEMVER",
                    events: r
                        .events
                        .iter()
                        .filter_map(|e| {
                            let (k, v) = e.iter().next()?;
                            Some(match k.as_str() {
                                "introduced" => Event::Introduced(v.clone()),
                                "fixed" => Event::Fixed(v.clone()),
                                "last_affected" => Event::LastAffected(v.clone()),
                                "limit" => Event::Limit(v.clone()),
                                _ => return None,
                            })
                        })
                        .collect(),
                })
                .collect();
            let advisory = Advisory {
                id: raw.id.clone(),
                aliases: raw.aliases.clone(),
                summary: summary.clone(),
                severity,
                severity_source: source,
                cvss_vector: vector,
                ranges,
                versions: affected.versions.clone(),
            };
            self.indexed += 1;
            self.index
                .entry((ecosystem, ecosystem.normalize_name(&pkg.name)))
                .or_default()
                .push(Arc::new(advisory));
        }
        Ok(())
    }

    /// Every (advisory, component) pair where the component's version is affected. One
    /// advisory with several entries for a package is reported once per component.
    pub fn match_components(&self, components: &[Component]) -> Vec<VulnMatch> {
        let mut out = Vec::new();
        for (i, c) in components.iter().enumerate() {
            let key = (c.ecosystem, c.ecosystem.normalize_name(&c.name));
            let Some(list) = self.index.get(&key) else {
                continue;
            };
            let mut seen: Vec<&str> = Vec::new();
            for adv in list {
                if let Some(fixed) = affects(adv, c.ecosystem, &c.version) {
                    if seen.contains(&adv.id.as_str()) {
                        continue;
                    }
                    seen.push(&adv.id);
                    out.push(VulnMatch {
                        advisory: adv.clone(),
                        component: i,
                        fixed,
                    });
                }
            }
        }
        out
    }
}

/// An OSV timestamp (RFC 3339, UTC, optionally with fractional seconds).
pub fn parse_timestamp(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text.trim()).ok()
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            collect_files(&path, out)?;
        } else if kind.is_file() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".json") || name.ends_with(".zip") {
                out.push(path);
            }
        }
    }
    Ok(())
}

fn load_files(root: &Path, files: &[PathBuf]) -> OsvDatabase {
    let mut db = OsvDatabase::default();
    let mut buf = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string();
        if path.extension().is_some_and(|e| e == "zip") {
            if let Err(err) = load_zip(&mut db, path, &rel) {
                db.errors.push(format!("{rel}: {err:#}"));
            }
            continue;
        }
        buf.clear();
        let read = std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut buf));
        if let Err(err) = read {
            db.errors.push(format!("{rel}: {err}"));
            continue;
        }
        if let Err(err) = db.add_record(&buf) {
            db.errors.push(format!("{rel}: {err:#}"));
        }
    }
    db
}

fn load_zip(db: &mut OsvDatabase, path: &Path, rel: &str) -> anyhow::Result<()> {
    let file = std::fs::File::open(path)?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).context("not a zip file")?;
    let mut buf = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        if !entry.is_file() || !entry.name().ends_with(".json") {
            continue;
        }
        let name = entry.name().to_string();
        buf.clear();
        // One record is small; a huge entry is not an OSV record.
        (&mut entry).take(16 * 1024 * 1024).read_to_end(&mut buf)?;
        if let Err(err) = db.add_record(&buf) {
            db.errors.push(format!("{rel}!{name}: {err:#}"));
        }
    }
    Ok(())
}

type VersionParser<'a> = dyn Fn(&str) -> Option<EcoVersion> + 'a;

/// Whether `version` is affected; `Some(fixed versions)` if it is.
fn affects(adv: &Advisory, ecosystem: Ecosystem, version: &str) -> Option<Vec<String>> {
    let eco_v = EcoVersion::parse(ecosystem, version);
    let semver_v = parse_semver(version).map(EcoVersion::Semver);
    let listed = adv.versions.iter().any(|listed| {
        listed == version
            || match (&eco_v, EcoVersion::parse(ecosystem, listed)) {
                (Some(a), Some(b)) => a.compare(&b) == Some(Ordering::Equal),
                _ => false,
            }
    });
    let mut fixed = Vec::new();
    let mut hit = listed;
    for range in &adv.ranges {
        let (v, parse): (&Option<EcoVersion>, &VersionParser<'_>) = if range.semver {
            (&semver_v, &|s: &str| {
                parse_semver(s).map(EcoVersion::Semver)
            })
        } else {
            (&eco_v, &|s: &str| EcoVersion::parse(ecosystem, s))
        };
        let Some(v) = v else { continue };
        if in_range(v, &range.events, parse) {
            hit = true;
            for e in &range.events {
                if let Event::Fixed(f) = e {
                    if !fixed.contains(f) {
                        fixed.push(f.clone());
                    }
                }
            }
        }
    }
    hit.then_some(fixed)
}

/// The OSV specification's evaluation: sort the events by version (`introduced: "0"` first) and
/// replay them up to `v`.
fn in_range(v: &EcoVersion, events: &[Event], parse: &dyn Fn(&str) -> Option<EcoVersion>) -> bool {
    let mut parsed: Vec<(Option<EcoVersion>, &Event)> = Vec::with_capacity(events.len());
    for e in events {
        let text = match e {
            Event::Introduced(s) | Event::Fixed(s) | Event::LastAffected(s) | Event::Limit(s) => s,
        };
        if matches!(e, Event::Introduced(_)) && text == "0" {
            parsed.push((None, e));
            continue;
        }
        match parse(text) {
            Some(ver) => parsed.push((Some(ver), e)),
            // An event we cannot order would make the verdict a guess: skip the range.
            None => return false,
        }
    }
    parsed.sort_by(|(a, _), (b, _)| match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => a.compare(b).unwrap_or(Ordering::Equal),
    });
    let mut affected = false;
    for (ver, event) in parsed {
        let cmp = match &ver {
            None => Ordering::Greater,
            Some(ver) => v.compare(ver).unwrap_or(Ordering::Less),
        };
        match event {
            Event::Introduced(_) => {
                if cmp != Ordering::Less {
                    affected = true;
                }
            }
            Event::Fixed(_) | Event::Limit(_) => {
                if cmp != Ordering::Less {
                    affected = false;
                }
            }
            Event::LastAffected(_) => {
                if cmp == Ordering::Greater {
                    affected = false;
                }
            }
        }
    }
    affected
}

/// The record's own rating (`database_specific.severity`, as GitHub advisories carry it) or
/// the rating of its CVSS v3 base score.
fn rating(
    db_specific: Option<&serde_json::Value>,
    severity: &[RawSeverity],
) -> Option<(Severity, &'static str, Option<String>)> {
    let vector = severity
        .iter()
        .find(|s| s.kind == "CVSS_V3")
        .map(|s| s.score.clone());
    if let Some(word) = db_specific
        .and_then(|d| d.get("severity"))
        .and_then(|s| s.as_str())
    {
        let sev = match word.to_ascii_uppercase().as_str() {
            "CRITICAL" => Some(Severity::Critical),
            "HIGH" => Some(Severity::High),
            "MODERATE" | "MEDIUM" => Some(Severity::Medium),
            "LOW" => Some(Severity::Low),
            _ => None,
        };
        if let Some(sev) = sev {
            return Some((sev, "database", vector));
        }
    }
    let vector = vector?;
    let score = cvss3_base_score(&vector)?;
    Some((severity_for_score(score), "cvss_v3", Some(vector)))
}

/// CVSS v3 qualitative rating of a base score.
pub fn severity_for_score(score: f64) -> Severity {
    if score >= 9.0 {
        Severity::Critical
    } else if score >= 7.0 {
        Severity::High
    } else if score >= 4.0 {
        Severity::Medium
    } else if score > 0.0 {
        Severity::Low
    } else {
        Severity::Info
    }
}

/// The CVSS v3.0/v3.1 base score of a vector such as
/// `CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H` (9.8); `None` if the vector is incomplete.
pub fn cvss3_base_score(vector: &str) -> Option<f64> {
    let mut m: HashMap<&str, &str> = HashMap::new();
    let mut parts = vector.split('/');
    if !parts.next()?.starts_with("CVSS:3") {
        return None;
    }
    for p in parts {
        let (k, v) = p.split_once(':')?;
        m.insert(k, v);
    }
    let changed = match *m.get("S")? {
        "U" => false,
        "C" => true,
        _ => return None,
    };
    let av = match *m.get("AV")? {
        "N" => 0.85,
        "A" => 0.62,
        "L" => 0.55,
        "P" => 0.2,
        _ => return None,
    };
    let ac = match *m.get("AC")? {
        "L" => 0.77,
        "H" => 0.44,
        _ => return None,
    };
    let pr = match (*m.get("PR")?, changed) {
        ("N", _) => 0.85,
        ("L", false) => 0.62,
        ("L", true) => 0.68,
        ("H", false) => 0.27,
        ("H", true) => 0.5,
        _ => return None,
    };
    let ui = match *m.get("UI")? {
        "N" => 0.85,
        "R" => 0.62,
        _ => return None,
    };
    let cia = |k: &str| -> Option<f64> {
        match *m.get(k)? {
            "H" => Some(0.56),
            "L" => Some(0.22),
            "N" => Some(0.0),
            _ => None,
        }
    };
    let (c, i, a) = (cia("C")?, cia("I")?, cia("A")?);
    let iss = 1.0 - (1.0 - c) * (1.0 - i) * (1.0 - a);
    let impact = if changed {
        7.52 * (iss - 0.029) - 3.25 * (iss - 0.02f64).powi(15)
    } else {
        6.42 * iss
    };
    if impact <= 0.0 {
        return Some(0.0);
    }
    let exploitability = 8.22 * av * ac * pr * ui;
    let raw = if changed {
        (1.08 * (impact + exploitability)).min(10.0)
    } else {
        (impact + exploitability).min(10.0)
    };
    Some(roundup(raw))
}

/// CVSS v3.1 `Roundup`: the smallest number with one decimal that is >= the input, computed in
/// integers to avoid floating-point surprises.
fn roundup(x: f64) -> f64 {
    let int_input = (x * 100_000.0).round() as i64;
    if int_input % 10_000 == 0 {
        int_input as f64 / 100_000.0
    } else {
        ((int_input / 10_000) + 1) as f64 / 10.0
    }
}

/// The database behind a directory, loaded on first use and reloaded when the directory's
/// files change (compared by count, total size, latest modification time and, on Unix, the
/// files' inodes, so a file swapped by `osv sync` is noticed even within one second).
pub struct OsvStore {
    dir: PathBuf,
    max_age: Option<Duration>,
    cache: Mutex<Option<(Stamp, Arc<OsvDatabase>)>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    files: usize,
    bytes: u64,
    newest: Option<SystemTime>,
    inodes: u64,
}

/// Where an ecosystem's age comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeSource {
    /// The time `osv sync` last confirmed the data current (a download or a `304`).
    Sync,
    /// The newest `modified` time of the ecosystem's records (data placed by hand).
    Records,
}

impl AgeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AgeSource::Sync => "sync",
            AgeSource::Records => "records",
        }
    }
}

/// How current the data of one ecosystem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub records: usize,
    /// When the data was last known current; `None` when there is no data or no date.
    pub updated_at: Option<SystemTime>,
    pub source: Option<AgeSource>,
}

impl Freshness {
    /// Age at `now` (zero for a time in the future); `None` without a date.
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        self.updated_at
            .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO))
    }
}

impl OsvStore {
    pub fn new(dir: PathBuf) -> OsvStore {
        OsvStore {
            dir,
            max_age: None,
            cache: Mutex::new(None),
        }
    }

    /// Data older than `max_age` makes the vulnerability scanner's run incomplete
    /// (`CERTUS_ASSURANCE_OSV_MAX_AGE_HOURS`; `None`: no limit).
    pub fn with_max_age(mut self, max_age: Option<Duration>) -> OsvStore {
        self.max_age = max_age;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// The current database (blocking: stats every file, and parses them when they changed).
    pub fn get(&self) -> anyhow::Result<Arc<OsvDatabase>> {
        let mut files = Vec::new();
        collect_files(&self.dir, &mut files).with_context(|| {
            format!(
                "reading the OSV database directory {} (CERTUS_ASSURANCE_OSV_DB_DIR)",
                self.dir.display()
            )
        })?;
        let mut stamp = Stamp {
            files: files.len(),
            bytes: 0,
            newest: None,
            inodes: 0,
        };
        for f in &files {
            if let Ok(meta) = std::fs::metadata(f) {
                stamp.bytes += meta.len();
                let m = meta.modified().ok();
                if m > stamp.newest {
                    stamp.newest = m;
                }
                #[cfg(unix)]
                {
                    use std::os::unix::fs::MetadataExt;
                    stamp.inodes = stamp.inodes.wrapping_mul(31).wrapping_add(meta.ino());
                }
            }
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, db)) = cache.as_ref() {
            if *s == stamp {
                return Ok(db.clone());
            }
        }
        let db = Arc::new(OsvDatabase::load(&self.dir)?);
        *cache = Some((stamp, db.clone()));
        Ok(db)
    }

    /// How current each ecosystem's data is: the time `osv sync` recorded for it (read fresh
    /// on every call, since a `304` only rewrites the state file), else the newest `modified`
    /// of its records.
    pub fn freshness(&self, db: &OsvDatabase) -> BTreeMap<Ecosystem, Freshness> {
        Ecosystem::ALL
            .into_iter()
            .map(|eco| {
                let data = db.ecosystems.get(&eco).copied().unwrap_or_default();
                let synced = sync::SyncState::read(&self.dir, eco).map(|s| s.confirmed_time());
                let (updated_at, source) = match (synced, data.newest_modified) {
                    _ if data.records == 0 => (None, None),
                    (Some(t), _) => (Some(t), Some(AgeSource::Sync)),
                    (None, Some(t)) => (Some(t), Some(AgeSource::Records)),
                    (None, None) => (None, None),
                };
                (
                    eco,
                    Freshness {
                        records: data.records,
                        updated_at,
                        source,
                    },
                )
            })
            .collect()
    }
}

/// How often the service re-checks the database directory.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(60);

/// Keeps the service's view of the database current until `stop`: at start-up and then every
/// [`WATCH_INTERVAL`], reloads the directory if its files changed (so a scan after `osv sync`
/// does not pay for the parse) and sets `certus_assurance_osv_records` and the times behind
/// `certus_assurance_osv_database_age_seconds`.
pub async fn watch(
    store: Arc<OsvStore>,
    observer: Arc<dyn ScanObserver>,
    stop: tokio_util::sync::CancellationToken,
) {
    observer.osv_max_age(store.max_age().map_or(0.0, |d| d.as_secs_f64()));
    let mut loaded: Option<Arc<OsvDatabase>> = None;
    loop {
        let s = store.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let db = s.get()?;
            let fresh = s.freshness(&db);
            anyhow::Ok((db, fresh))
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            result = checked => match result {
                Ok(Ok((db, fresh))) => {
                    if !loaded.as_ref().is_some_and(|l| Arc::ptr_eq(l, &db)) {
                        tracing::info!(
                            dir = %store.dir().display(),
                            records = db.records,
                            unreadable = db.errors.len(),
                            "OSV database loaded"
                        );
                        loaded = Some(db);
                    }
                    for (eco, f) in fresh {
                        observer.osv_ecosystem(eco, f.records as u64, f.updated_at);
                    }
                }
                Ok(Err(err)) => {
                    tracing::warn!(error = %format!("{err:#}"), "checking the OSV database failed; retrying in a minute");
                }
                Err(err) => tracing::warn!(error = %err, "checking the OSV database failed"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::sbom::purl;
    use serde_json::json;

    fn component(e: Ecosystem, name: &str, version: &str) -> Component {
        Component {
            ecosystem: e,
            name: name.into(),
            version: version.into(),
            purl: purl(e, name, version),
            locations: vec![],
        }
    }

    fn db(records: &[serde_json::Value]) -> OsvDatabase {
        let mut db = OsvDatabase::default();
        for r in records {
            db.add_record(r.to_string().as_bytes()).unwrap();
        }
        db
    }

    fn affected_versions(
        db: &OsvDatabase,
        e: Ecosystem,
        name: &str,
        versions: &[&str],
    ) -> Vec<String> {
        let comps: Vec<_> = versions.iter().map(|v| component(e, name, v)).collect();
        db.match_components(&comps)
            .into_iter()
            .map(|m| comps[m.component].version.clone())
            .collect()
    }

    #[test]
    fn cvss_scores_match_the_calculator() {
        for (vector, score) in [
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
            ("CVSS:3.0/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N", 5.5),
            ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:N/A:L", 3.7),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
        ] {
            assert_eq!(cvss3_base_score(vector), Some(score), "{vector}");
        }
        assert_eq!(cvss3_base_score("CVSS:3.1/AV:N"), None);
        assert_eq!(cvss3_base_score("AV:N/AC:L/Au:N/C:P/I:P/A:P"), None);
    }

    #[test]
    fn ecosystem_ranges_use_pep440() {
        let db = db(&[json!({
            "id": "GHSA-jinja", "aliases": ["CVE-2019-10906"], "summary": "sandbox escape",
            "database_specific": {"severity": "HIGH"},
            "affected": [{
                "package": {"ecosystem": "PyPI", "name": "Jinja2"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.10.1"}]}]
            }]
        })]);
        assert_eq!(
            affected_versions(
                &db,
                Ecosystem::PyPI,
                "jinja2",
                &["2.9", "2.10", "2.10.1", "2.10.1.post1", "2.11", "2.10.1rc1"]
            ),
            vec!["2.9", "2.10", "2.10.1rc1"]
        );
        let m = db.match_components(&[component(Ecosystem::PyPI, "JINJA2", "2.10")]);
        assert_eq!(m[0].fixed, vec!["2.10.1"]);
        assert_eq!(m[0].advisory.severity, Severity::High);
        assert_eq!(m[0].advisory.aliases, vec!["CVE-2019-10906"]);
    }

    #[test]
    fn semver_ranges_with_several_intervals_and_last_affected() {
        let db = db(&[json!({
            "id": "RUSTSEC-0000-0001",
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
            "affected": [{
                "package": {"ecosystem": "crates.io", "name": "smallvec"},
                "ranges": [{"type": "SEMVER", "events": [
                    {"introduced": "0.6.3"}, {"fixed": "0.6.14"},
                    {"introduced": "1.0.0"}, {"fixed": "1.6.1"}
                ]}]
            }, {
                "package": {"ecosystem": "crates.io", "name": "other"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"last_affected": "2.0.0"}]}]
            }]
        })]);
        assert_eq!(
            affected_versions(
                &db,
                Ecosystem::Cargo,
                "smallvec",
                &[
                    "0.6.2", "0.6.3", "0.6.13", "0.6.14", "0.9.0", "1.0.0", "1.6.0", "1.6.1",
                    "1.10.0"
                ]
            ),
            vec!["0.6.3", "0.6.13", "1.0.0", "1.6.0"]
        );
        assert_eq!(
            affected_versions(&db, Ecosystem::Cargo, "other", &["1.0.0", "2.0.0", "2.0.1"]),
            vec!["1.0.0", "2.0.0"]
        );
        let m = db.match_components(&[component(Ecosystem::Cargo, "smallvec", "1.0.0")]);
        assert_eq!(m[0].advisory.severity, Severity::Critical);
        assert_eq!(m[0].advisory.severity_source, "cvss_v3");
    }

    #[test]
    fn npm_prereleases_go_prefixes_and_gem_versions() {
        let db = db(&[
            json!({"id": "N-1", "affected": [{"package": {"ecosystem": "npm", "name": "@scope/pkg"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "2.0.0"}]}]}]}),
            json!({"id": "GO-1", "affected": [{"package": {"ecosystem": "Go", "name": "golang.org/x/net"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "0.7.0"}]}]}]}),
            json!({"id": "GEM-1", "affected": [{"package": {"ecosystem": "RubyGems", "name": "rack"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "2.0.0"}, {"fixed": "2.2.3.1"}]}]}]}),
        ]);
        assert_eq!(
            affected_versions(
                &db,
                Ecosystem::Npm,
                "@scope/pkg",
                &["1.9.9", "2.0.0-rc.1", "2.0.0"]
            ),
            vec!["1.9.9", "2.0.0-rc.1"]
        );
        assert_eq!(
            affected_versions(
                &db,
                Ecosystem::Go,
                "golang.org/x/net",
                &["v0.6.0", "v0.0.0-20220101000000-abcdefabcdef", "v0.7.0"]
            ),
            vec!["v0.6.0", "v0.0.0-20220101000000-abcdefabcdef"]
        );
        assert_eq!(
            affected_versions(
                &db,
                Ecosystem::RubyGems,
                "rack",
                &["1.6.0", "2.2.3", "2.2.3.1", "2.2.4"]
            ),
            vec!["2.2.3"]
        );
        assert!(affected_versions(&db, Ecosystem::Npm, "pkg", &["1.0.0"]).is_empty());
    }

    #[test]
    fn explicit_versions_withdrawn_and_foreign_records() {
        let db = db(&[
            json!({"id": "PYSEC-1", "affected": [{"package": {"ecosystem": "PyPI", "name": "flask"}, "versions": ["0.12", "0.12.1"]}]}),
            json!({"id": "OLD", "withdrawn": "2020-01-01T00:00:00Z", "affected": [{"package": {"ecosystem": "PyPI", "name": "flask"}, "versions": ["1.0"]}]}),
            json!({"id": "DEB", "affected": [{"package": {"ecosystem": "Debian:11", "name": "flask"}, "versions": ["1.0"]}]}),
        ]);
        assert_eq!(
            affected_versions(
                &db,
                Ecosystem::PyPI,
                "Flask",
                &["0.12.0", "0.12.1", "0.12.2", "1.0"]
            ),
            vec!["0.12.0", "0.12.1"]
        );
        assert_eq!(db.records, 3);
        assert_eq!(db.indexed, 1);
        let m = db.match_components(&[component(Ecosystem::PyPI, "flask", "0.12")]);
        assert_eq!(m[0].advisory.severity, Severity::Medium);
        assert_eq!(m[0].advisory.severity_source, "default");
    }

    #[test]
    fn loads_directories_and_zip_exports() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |id: &str| {
            json!({"id": id, "affected": [{"package": {"ecosystem": "npm", "name": "x"}, "versions": ["1.0.0"]}]}).to_string()
        };
        std::fs::create_dir_all(dir.path().join("npm")).unwrap();
        std::fs::write(dir.path().join("npm/A.json"), rec("A")).unwrap();
        std::fs::write(dir.path().join("npm/bad.json"), "{").unwrap();
        {
            let f = std::fs::File::create(dir.path().join("all.zip")).unwrap();
            let mut zip = zip::ZipWriter::new(f);
            let opts = zip::write::SimpleFileOptions::default();
            zip.start_file("B.json", opts).unwrap();
            std::io::Write::write_all(&mut zip, rec("B").as_bytes()).unwrap();
            zip.finish().unwrap();
        }
        let store = OsvStore::new(dir.path().to_path_buf());
        let db = store.get().unwrap();
        assert_eq!(db.records, 2);
        assert_eq!(db.errors.len(), 1, "{:?}", db.errors);
        let m = db.match_components(&[component(Ecosystem::Npm, "x", "1.0.0")]);
        let ids: Vec<_> = m.iter().map(|m| m.advisory.id.as_str()).collect();
        assert_eq!(ids, vec!["A", "B"]);
        assert!(
            Arc::ptr_eq(&db, &store.get().unwrap()),
            "cached while unchanged"
        );
        std::fs::write(dir.path().join("npm/C.json"), rec("C")).unwrap();
        assert_eq!(store.get().unwrap().records, 3, "reloaded after a change");
    }

    #[test]
    fn ecosystem_counts_and_newest_modified() {
        let db = db(&[
            json!({"id": "A", "modified": "2026-01-02T03:04:05Z", "affected": [
                {"package": {"ecosystem": "PyPI", "name": "x"}, "versions": ["1"]},
                {"package": {"ecosystem": "PyPI", "name": "y"}, "versions": ["1"]},
                {"package": {"ecosystem": "npm", "name": "x"}, "versions": ["1"]}]}),
            json!({"id": "B", "modified": "2026-03-01T00:00:00.123456Z", "withdrawn": "2026-03-01T00:00:00Z",
                "affected": [{"package": {"ecosystem": "PyPI", "name": "x"}, "versions": ["1"]}]}),
            json!({"id": "C", "affected": [{"package": {"ecosystem": "Maven", "name": "x"}, "versions": ["1"]}]}),
        ]);
        let pypi = db.ecosystems[&Ecosystem::PyPI];
        assert_eq!(pypi.records, 2);
        assert_eq!(
            pypi.newest_modified,
            Some(humantime::parse_rfc3339("2026-03-01T00:00:00.123456Z").unwrap())
        );
        assert_eq!(db.ecosystems[&Ecosystem::Npm].records, 1);
        assert!(!db.ecosystems.contains_key(&Ecosystem::Go));
        assert_eq!(db.records, 3);
    }

    #[test]
    fn freshness_prefers_the_sync_state_and_a_swapped_file_is_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &Path, ids: &[&str]| {
            let tmp = path.with_extension("tmp");
            let f = std::fs::File::create(&tmp).unwrap();
            let mut zip = zip::ZipWriter::new(f);
            for id in ids {
                zip.start_file(
                    format!("{id}.json"),
                    zip::write::SimpleFileOptions::default(),
                )
                .unwrap();
                let rec = json!({"id": id, "modified": "2026-01-01T00:00:00Z",
                    "affected": [{"package": {"ecosystem": "PyPI", "name": "x"}, "versions": ["1.0"]}]});
                std::io::Write::write_all(&mut zip, rec.to_string().as_bytes()).unwrap();
            }
            zip.finish().unwrap();
            std::fs::rename(&tmp, path).unwrap();
        };
        let pypi = dir.path().join("PyPI");
        std::fs::create_dir_all(&pypi).unwrap();
        write(&pypi.join("all.zip"), &["A-1"]);
        let store = OsvStore::new(dir.path().to_path_buf());
        let db = store.get().unwrap();
        let f = store.freshness(&db);
        assert_eq!(f[&Ecosystem::PyPI].records, 1);
        assert_eq!(f[&Ecosystem::PyPI].source, Some(AgeSource::Records));
        assert_eq!(
            f[&Ecosystem::PyPI].updated_at,
            Some(humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap())
        );
        assert_eq!(f[&Ecosystem::Npm].records, 0);
        assert_eq!(f[&Ecosystem::Npm].updated_at, None);

        std::fs::write(
            pypi.join(sync::STATE_FILE),
            json!({"url": "http://x/PyPI/all.zip", "etag": null, "last_modified": null,
                "downloaded_at": 1_780_000_000u64, "checked_at": 1_790_000_000u64,
                "records": 1, "bytes": 1, "sha256": "00"})
            .to_string(),
        )
        .unwrap();
        let f = store.freshness(&db);
        assert_eq!(f[&Ecosystem::PyPI].source, Some(AgeSource::Sync));
        assert_eq!(
            f[&Ecosystem::PyPI].updated_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000))
        );
        assert!(
            Arc::ptr_eq(&db, &store.get().unwrap()),
            "the state file is not data"
        );

        // Same size, swapped by rename (as `osv sync` does): a new inode, reloaded.
        write(&pypi.join("all.zip"), &["B-1"]);
        let db2 = store.get().unwrap();
        assert!(!Arc::ptr_eq(&db, &db2));
        let m = db2.match_components(&[component(Ecosystem::PyPI, "x", "1.0")]);
        assert_eq!(m[0].advisory.id, "B-1");
    }
}
