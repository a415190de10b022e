//! The scan domain at the bottom of the crate: the state machine, the test id and the clock.
//! No I/O beyond reading the system clock and the OS random source; storage, the job engine and
//! the API all take these from here, so none of them needs another to know what a scan is.

pub mod state;

pub use state::{FailureReason, JobState, UploadStatus};

use std::time::{SystemTime, UNIX_EPOCH};

/// Lease of an upload in flight; renewed (every quarter of it) while it runs, so a dead
/// replica's upload ends.
pub const UPLOAD_LEASE_SECONDS: f64 = 120.0;

/// Current time as Unix seconds.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// `test_` followed by 12 lowercase hex digits from the OS random source.
pub fn new_test_id() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!("test_{}", hex::encode(bytes))
}

/// Whether `s` has the shape of a test id.
pub fn is_test_id(s: &str) -> bool {
    s.len() == 17
        && s.starts_with("test_")
        && s[5..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ids_have_the_documented_shape() {
        let id = new_test_id();
        assert!(is_test_id(&id), "{id}");
        assert_ne!(id, new_test_id());
        assert!(!is_test_id("test_ABCDEF012345"));
        assert!(!is_test_id("test_../../etc"));
    }
}
