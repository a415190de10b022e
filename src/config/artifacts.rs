//! The artifact store: where finished bundles and uploaded archives are kept, so that every
//! replica can read them. The S3 client settings (endpoint, region, credentials, time limit) are
//! the upload workflow's (`UploadConfig`): one client serves both.

use anyhow::bail;
use clap::{Args, ValueEnum};

use super::upload::{check_bucket, check_prefix};

/// Which backend keeps bundles and archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArtifactBackend {
    /// Files under `ARTIFACT_ROOT` and `DATA_DIR/uploads` of this process (one replica, or a
    /// shared file system).
    Local,
    /// Objects in an S3 bucket under a prefix; the local directories only hold scratch copies.
    S3,
}

#[derive(Debug, Clone, Args)]
pub struct ArtifactConfig {
    /// Where finished bundles and uploaded archives are kept: `local` (the artifact root and the
    /// data directory of this process) or `s3` (ARTIFACT_BUCKET under ARTIFACT_PREFIX, readable
    /// by every replica).
    #[arg(
        long = "artifact-store",
        value_enum,
        default_value = "local",
        value_name = "BACKEND"
    )]
    pub backend: ArtifactBackend,

    /// Bucket of the `s3` artifact store (required with it).
    #[arg(long = "artifact-bucket", value_name = "BUCKET")]
    pub bucket: Option<String>,

    /// Key prefix in the artifact bucket: bundles go to `<prefix>/bundles/<test_id>/<path>`,
    /// archives to `<prefix>/archives/<sha256>.<ext>`.
    #[arg(
        long = "artifact-prefix",
        default_value = "certus-assurance/",
        value_name = "PREFIX"
    )]
    pub prefix: String,
}

impl ArtifactConfig {
    /// Checks the values, naming the offending variable, and normalises the prefix (surrounding
    /// `/` removed) and the bucket (empty counts as unset).
    pub(super) fn check(&mut self) -> anyhow::Result<()> {
        self.bucket = self.bucket.take().filter(|b| !b.is_empty());
        self.prefix = check_prefix("ARTIFACT_PREFIX", &self.prefix)?;
        match (&self.backend, &self.bucket) {
            (ArtifactBackend::S3, None) => bail!(
                "CERTUS_ASSURANCE_ARTIFACT_BUCKET is required when CERTUS_ASSURANCE_ARTIFACT_STORE=s3 \
                 (the bucket that holds every replica's bundles and archives)"
            ),
            (_, Some(bucket)) => check_bucket("ARTIFACT_BUCKET", bucket)?,
            (ArtifactBackend::Local, None) => {}
        }
        Ok(())
    }

    /// The bucket and prefix of the `s3` store; `None` for the local one.
    pub fn s3_location(&self) -> Option<(String, String)> {
        match self.backend {
            ArtifactBackend::Local => None,
            ArtifactBackend::S3 => Some((self.bucket.clone()?, self.prefix.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(backend: ArtifactBackend, bucket: Option<&str>, prefix: &str) -> ArtifactConfig {
        ArtifactConfig {
            backend,
            bucket: bucket.map(str::to_string),
            prefix: prefix.to_string(),
        }
    }

    #[test]
    fn s3_needs_a_valid_bucket_and_prefix() {
        let err = config(ArtifactBackend::S3, None, "x/")
            .check()
            .unwrap_err()
            .to_string();
        assert!(err.contains("CERTUS_ASSURANCE_ARTIFACT_BUCKET"), "{err}");
        let err = config(ArtifactBackend::S3, Some("Bad_Bucket"), "x")
            .check()
            .unwrap_err()
            .to_string();
        assert!(err.contains("CERTUS_ASSURANCE_ARTIFACT_BUCKET"), "{err}");
        let err = config(ArtifactBackend::S3, Some("artifacts"), "a/../b")
            .check()
            .unwrap_err()
            .to_string();
        assert!(err.contains("CERTUS_ASSURANCE_ARTIFACT_PREFIX"), "{err}");
        let mut ok = config(ArtifactBackend::S3, Some("artifacts"), "/certus-assurance/");
        ok.check().unwrap();
        assert_eq!(
            ok.s3_location(),
            Some(("artifacts".to_string(), "certus-assurance".to_string()))
        );
        let mut local = config(ArtifactBackend::Local, None, "certus-assurance/");
        local.check().unwrap();
        assert_eq!(local.s3_location(), None);
    }
}
