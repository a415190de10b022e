//! Lockfile and manifest parsers: every parser gets the same input. Each either refuses it or
//! returns pins with a name, a version and a 1-based line inside the text, and every pin has a
//! package URL.
#![no_main]

use certus_assurance::pipeline::sbom::lockfiles::{parse, Kind};
use certus_assurance::pipeline::sbom::purl;
use libfuzzer_sys::fuzz_target;

const KINDS: [Kind; 9] = [
    Kind::CargoLock,
    Kind::PackageLock,
    Kind::YarnLock,
    Kind::Requirements,
    Kind::PoetryLock,
    Kind::PipfileLock,
    Kind::GoMod,
    Kind::GoSum,
    Kind::GemfileLock,
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count() as u32;
    for kind in KINDS {
        let Ok(pins) = parse(kind, text) else {
            continue;
        };
        for pin in pins {
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
    }
});
