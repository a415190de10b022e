//! Records the source revision for `certus_assurance_build_info{revision}`.
use std::process::Command;

fn main() {
    let revision = std::env::var("CERTUS_ASSURANCE_BUILD_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=CERTUS_ASSURANCE_REVISION={revision}");
    println!("cargo:rerun-if-env-changed=CERTUS_ASSURANCE_BUILD_REVISION");
    for path in [".git/HEAD", ".git/refs/heads"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
