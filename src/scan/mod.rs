//! The scan domain at the bottom of the crate: the state machine, the test id ([`TestId`]), the
//! clock, and clone credentials ([`credentials::SecretUrl`], sealed for the store by
//! [`credentials::CredentialKeys`]).
//! No I/O beyond reading the system clock and the OS random source; storage, the job engine and
//! the API all take these from here, so none of them needs another to know what a scan is.

pub mod credentials;
pub mod state;

pub use credentials::{CredentialKeys, OpenError, SealedCredentials, SecretUrl};
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

/// A scan's id: `test_` followed by 12 lowercase hex digits. [`TestId::parse`] is the one check
/// of that shape; an id from outside (a path, a command line) goes through it before use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TestId(String);

impl TestId {
    /// A new id from the OS random source.
    pub fn random() -> TestId {
        let mut bytes = [0u8; 6];
        getrandom::fill(&mut bytes).expect("the OS random source is available");
        TestId(format!("test_{}", hex::encode(bytes)))
    }

    /// The id `text` spells, if it has the shape of one.
    pub fn parse(text: &str) -> Option<TestId> {
        let valid = text.len() == 17
            && text.starts_with("test_")
            && text[5..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| TestId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<TestId> for String {
    fn from(id: TestId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ids_have_the_documented_shape() {
        let id = TestId::random();
        assert_eq!(TestId::parse(id.as_str()), Some(id.clone()));
        assert_ne!(id, TestId::random());
        assert_eq!(TestId::parse("test_ABCDEF012345"), None);
        assert_eq!(TestId::parse("test_../../etc"), None);
        assert_eq!(TestId::parse("test_0123456789abc"), None);
    }
}
