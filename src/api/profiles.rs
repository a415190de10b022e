//! `GET /v1/profiles`: the built-in presets with their scanners, thresholds and digests, and
//! which external tools are installed on this server (the pipeline looks for them).

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::AppState;
use crate::error::ApiError;
use crate::pipeline::profile::{self, Profile, Thresholds, BUILTIN_PROFILES};

/// The answer of `GET /v1/profiles`.
#[derive(Debug, Serialize)]
pub struct ProfileList {
    pub profiles: Vec<ProfileSummary>,
    /// The profile of a submission that names none.
    pub default: &'static str,
    pub scanners: Vec<ScannerAvailability>,
}

/// One built-in preset.
#[derive(Debug, Serialize)]
pub struct ProfileSummary {
    pub name: String,
    pub description: String,
    pub scanners: Vec<String>,
    pub required: Vec<String>,
    pub thresholds: Thresholds,
    pub manifest_digest: String,
}

/// A scanner of this build and whether it can run on this server.
#[derive(Debug, Serialize)]
pub struct ScannerAvailability {
    pub name: &'static str,
    /// `builtin` or `external`.
    pub kind: &'static str,
    pub available: bool,
}

/// `GET /v1/profiles`
pub async fn list_profiles(State(state): State<AppState>) -> Result<Json<ProfileList>, ApiError> {
    let profiles = BUILTIN_PROFILES
        .iter()
        .filter_map(|name| Profile::builtin(name))
        .map(|p| ProfileSummary {
            manifest_digest: p.manifest_digest(),
            name: p.name,
            description: p.description,
            scanners: p.scanners,
            required: p.required,
            thresholds: p.thresholds,
        })
        .collect();
    let path = state.config.scanning.tool_path.clone();
    // Looking for the tools reads the filesystem: off the async threads.
    let installed = tokio::task::spawn_blocking(move || {
        profile::EXTERNAL_TOOL_NAMES
            .iter()
            .map(|name| crate::pipeline::tools::installed(name, path.as_deref()))
            .collect::<Vec<bool>>()
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("looking for the external tools: {e}")))?;
    let scanners = profile::BUILTIN_SCANNER_NAMES
        .iter()
        .map(|&name| ScannerAvailability {
            name,
            kind: "builtin",
            available: true,
        })
        .chain(
            profile::EXTERNAL_TOOL_NAMES
                .iter()
                .zip(installed)
                .map(|(&name, available)| ScannerAvailability {
                    name,
                    kind: "external",
                    available,
                }),
        )
        .collect();
    Ok(Json(ProfileList {
        profiles,
        default: "light",
        scanners,
    }))
}
