//! Lockfile and manifest parsers: every parser gets the same input (and, as the file beside it,
//! the same input again). Each either refuses it or returns pins with a name, a version and a
//! 1-based line inside the text, every pin has a package URL, and the graph's edges and direct
//! dependencies point at pins.
#![no_main]

use certus_assurance::pipeline::sbom::lockfiles::{parse, Kind};
use certus_assurance::pipeline::sbom::purl;
use libfuzzer_sys::fuzz_target;

const KINDS: [Kind; 14] = [
    Kind::CargoLock,
    Kind::PackageLock,
    Kind::YarnLock,
    Kind::Requirements,
    Kind::PoetryLock,
    Kind::PipfileLock,
    Kind::GoMod,
    Kind::GoSum,
    Kind::GemfileLock,
    Kind::UvLock,
    Kind::PnpmLock,
    Kind::ComposerLock,
    Kind::PackageJson,
    Kind::PythonManifest,
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count() as u32;
    let sibling = |_: &str| Some(text.to_string());
    for kind in KINDS {
        let Ok(parsed) = parse(kind, text, &sibling) else {
            continue;
        };
        for pin in &parsed.pins {
            assert!(!pin.name.is_empty(), "{kind:?}: empty name in {pin:?}");
            assert!(
                !pin.version.is_empty(),
                "{kind:?}: empty version in {pin:?}"
            );
            assert!(
                (1..=lines).contains(&pin.line),
                "{kind:?}: line {} of {lines}",
                pin.line
            );
            assert!(purl(pin.ecosystem, &pin.name, &pin.version).starts_with("pkg:"));
        }
        let n = parsed.pins.len();
        for &(from, to) in &parsed.edges {
            assert!(from < n && to < n && from != to, "{kind:?}: edge {from}->{to} of {n}");
        }
        for &d in &parsed.direct {
            assert!(d < n, "{kind:?}: direct {d} of {n}");
        }
    }
});
