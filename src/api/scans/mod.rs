//! Scan resources, one module per action: [`submit`] (`POST /v1/security-scans`), [`batch`],
//! [`list`], [`item`] (`GET .../{test_id}`), [`cancel`] and [`uploads`] (upload-request), over
//! [`validate`] (a submission body into a [`crate::jobs::NewScan`]) and [`resource`] (the typed
//! answers). Handlers translate between HTTP and [`crate::jobs`]; they never touch storage, the
//! filesystem, git or S3 directly. The stream, findings, artifacts and upload-archive routes have
//! their own modules beside this one.

pub mod batch;
pub mod cancel;
pub mod item;
pub mod list;
pub mod resource;
pub mod submit;
pub mod uploads;
pub mod validate;

pub use batch::submit_batch;
pub use cancel::cancel_scan;
pub use item::get_scan;
pub use list::list_scans;
pub use resource::{ScanResource, SubmittedScan};
pub use submit::submit_scan;
pub use uploads::request_upload;
pub use validate::{validate_submission_json, SubmissionPolicy};

// The scan routes beside this module reach the caller's scans through these.
pub(crate) use crate::api::extract::{check_workspace, visible_scan};
