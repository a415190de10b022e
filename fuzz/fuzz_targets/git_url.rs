//! `git_url` checks and credential redaction: whatever is submitted, the display form never
//! carries a password, no accepted URL has a query string or fragment (where tokens and
//! signatures would be kept in clear), the strict policy never accepts a local source or a
//! literal internal address, and `redact_text` removes the credentialed URL from messages.
#![no_main]

use certus_assurance::pipeline::source::{is_internal, parse_git_url, redact_text, SourcePolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for policy in [SourcePolicy::STRICT, SourcePolicy::OPEN] {
        let Ok(git) = parse_git_url(raw, policy) else {
            continue;
        };
        assert!(
            !git.display_url.chars().any(char::is_control),
            "{:?}",
            git.display_url
        );
        let clone = url::Url::parse(git.clone_url.expose())
            .ok()
            .filter(|_| git.clone_url.expose().contains("://"));
        if let Some(clone) = &clone {
            let shown =
                url::Url::parse(&git.display_url).expect("the display form of a URL parses");
            assert!(
                shown.password().is_none(),
                "{} shows a password",
                git.display_url
            );
            assert!(
                clone.query().is_none() && clone.fragment().is_none(),
                "{raw:?} was accepted with a query string or fragment"
            );
            assert!(
                shown.username().is_empty() || shown.username() == "***",
                "{} shows a user name",
                git.display_url
            );
            if let Some(password) = clone.password().filter(|p| p.len() >= 4) {
                let message = format!(
                    "fatal: could not read from {}: {password}",
                    git.clone_url.expose()
                );
                let redacted = redact_text(&message, &git);
                assert!(!redacted.contains(password), "{redacted}");
            }
        }
        if !policy.allow_local_sources {
            assert!(!git.is_local, "{raw:?} was accepted as a local source");
        }
        if !policy.allow_private_networks {
            let host = git.host.as_deref().expect("remote URLs name a host");
            if let Ok(ip) = host.parse() {
                assert!(
                    !is_internal(ip),
                    "{raw:?} reaches the internal address {ip}"
                );
            }
            assert!(!host.eq_ignore_ascii_case("localhost"), "{raw:?}");
        }
    }
});
