//! Archive extraction (tar, tar.gz, tar.bz2, zip) into a fresh directory with small limits.
//! Whatever the bytes, nothing is written outside the destination, the size and entry limits
//! hold, a successful extraction leaves no link that resolves outside the tree, and the
//! upload-time inspection agrees with it.
#![no_main]

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use certus_assurance::pipeline::source::archive::{extract, inspect, sniff, ArchiveFormat, Limits};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_bytes: 64 * 1024,
    max_entries: 64,
};

/// Regular-file bytes (each inode once) and non-directory entries under `dir`.
fn tally(dir: &Path, root: &Path, inodes: &mut HashSet<u64>, bytes: &mut u64, entries: &mut u64) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let meta = std::fs::symlink_metadata(entry.path()).expect("metadata");
        if meta.is_dir() {
            tally(&entry.path(), root, inodes, bytes, entries);
            continue;
        }
        *entries += 1;
        if meta.is_file() && inodes.insert(meta.ino()) {
            *bytes += meta.len();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    // The format is recognised from the content, as upload-archive does; inputs that are not an
    // archive still go through a parser chosen by the first byte.
    let format = sniff(bytes).unwrap_or(match selector % 4 {
        0 => ArchiveFormat::Tar,
        1 => ArchiveFormat::TarGz,
        2 => ArchiveFormat::TarBz2,
        _ => ArchiveFormat::Zip,
    });
    let work = tempfile::tempdir().expect("temp dir");
    let archive = work.path().join("upload.archive");
    std::fs::write(&archive, bytes).expect("write archive");
    let dest = work.path().join("tree");
    std::fs::create_dir(&dest).expect("dest dir");
    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).expect("outside dir");

    let inspected = inspect(&archive, format, LIMITS);
    let extracted = extract(&archive, format, &dest, LIMITS, &AtomicBool::new(false));

    let mut names: Vec<_> = std::fs::read_dir(work.path())
        .expect("read work dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["outside", "tree", "upload.archive"],
        "something was written next to the tree"
    );
    assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0);
    assert_eq!(
        std::fs::read(&archive).expect("archive"),
        bytes,
        "the archive was overwritten"
    );

    let (mut inodes, mut written, mut entries) = (HashSet::new(), 0u64, 0u64);
    tally(&dest, &dest, &mut inodes, &mut written, &mut entries);
    // A refused entry may have written one byte past the budget before it was stopped.
    assert!(written <= LIMITS.max_bytes + 1, "{written} bytes written");
    assert!(entries <= LIMITS.max_entries, "{entries} entries written");

    if let Ok(stats) = &extracted {
        assert!(written <= LIMITS.max_bytes && stats.bytes <= LIMITS.max_bytes);
        let root = dest.canonicalize().expect("dest");
        check_links(&dest, &root);
        match &inspected {
            Ok(seen) => assert_eq!(seen, stats, "inspection and extraction disagree"),
            Err(e) => panic!("inspection refused what extraction accepted: {e}"),
        }
    }
});

fn check_links(dir: &Path, root: &Path) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        if meta.file_type().is_symlink() {
            if let Ok(real) = path.canonicalize() {
                assert!(
                    real.starts_with(root),
                    "{} resolves to {}",
                    path.display(),
                    real.display()
                );
            }
        } else if meta.is_dir() {
            check_links(&path, root);
        }
    }
}
