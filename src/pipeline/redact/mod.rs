//! The last line of defence against a secret in clear: masks every token-like value in a line of
//! text that some tool or scanner produced (a snippet, an external tool's message, a log line).
//! Scanners mask what they matched themselves; this pass runs over every message and snippet that
//! goes into the bundle, whatever produced it, so that a second token on the same line, a value
//! quoted in a tool's message ("Possible hardcoded password: '…'") or a credential a rule does not
//! know is not written in clear either.
//!
//! What is masked (each value replaced by as many `*` as it has characters):
//! - the value of an assignment or key/value pair whose name says it holds a secret (`password`,
//!   `secret`, `token`, `api_key`, `auth`, `credential`, …), quoted or not, in code, `.env`,
//!   YAML, INI, JSON or a tool's message;
//! - the credential of `Authorization:`-style headers (`Bearer …`, `Basic …`, `token …`);
//! - the password in URL user-info (`scheme://user:password@host`);
//! - every token-like run (letters, digits and `+/=_-.~`) of 16 characters or more that mixes
//!   letters and digits and looks random (Shannon entropy of at least 3 bits per character);
//! - every credential the built-in secrets scanner's rules recognise on the line (provider
//!   token formats, private key bodies, connection-string and `.netrc` passwords, `curl -u`
//!   credentials, generic assignments), whatever their length;
//! - payment card numbers (13–19 digits, optionally grouped by spaces or dashes, passing the
//!   Luhn check).
//!
//! It errs on the side of masking: a masked commit hash in a snippet costs nothing, a secret in
//! clear in an uploaded report cannot be taken back.

pub mod shapes;

use crate::pipeline::scanners::secrets::SecretsScanner;

/// `text` with every secret-looking value replaced by `*` (one per character): the shapes of
/// [`shapes::generic_spans`] and every match of the secrets scanner's rules.
pub fn mask_secrets(text: &str) -> String {
    let mut ranges = shapes::generic_spans(text);
    ranges.extend(SecretsScanner::shared().secret_spans(text));
    shapes::apply(text, ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandit_messages_lose_the_quoted_password() {
        let m = mask_secrets("Possible hardcoded password: 'hunter2hunter2'");
        assert!(!m.contains("hunter2"), "{m}");
        assert!(m.starts_with("Possible hardcoded password: '"), "{m}");
    }

    #[test]
    fn unquoted_assignments_in_env_yaml_and_ini_are_masked() {
        for line in [
            "DB_PASSWORD=s3cr3tValue",
            "  password: s3cr3tValue",
            "api_key = s3cr3tValue",
            "export GITHUB_TOKEN=s3cr3tValue",
            r#"{"client_secret": "s3cr3tValue"}"#,
        ] {
            let m = mask_secrets(line);
            assert!(!m.contains("s3cr3tValue"), "{line} -> {m}");
        }
    }

    #[test]
    fn every_token_on_the_line_is_masked() {
        let line = r#"call(key="AKIAIOSFODNN7EXAMPLE", csrf="f3Kq9ZpL2mXv8RtY4wNc")"#;
        let m = mask_secrets(line);
        assert!(!m.contains("AKIAIOSFODNN7EXAMPLE"), "{m}");
        assert!(!m.contains("f3Kq9ZpL2mXv8RtY4wNc"), "{m}");
    }

    #[test]
    fn url_passwords_and_auth_headers_are_masked() {
        let m =
            mask_secrets("postgres://app:pa55word@db:5432/x Authorization: Bearer abcdEFGH1234");
        assert!(!m.contains("pa55word"), "{m}");
        assert!(!m.contains("abcdEFGH1234"), "{m}");
    }

    #[test]
    fn plain_code_and_references_stay_readable() {
        for line in [
            "password = os.environ['DB_PASSWORD']",
            "token: ${GITHUB_TOKEN}",
            "assert response.status_code == 200",
            "from org.example.service import ServiceFactory",
            "see src/pipeline/scanners/secrets.rs line 42",
        ] {
            assert_eq!(mask_secrets(line), line);
        }
    }

    #[test]
    fn rule_formats_shorter_than_a_token_run_and_card_numbers_are_masked() {
        // A Slack webhook path segment, a Telegram bot token and a connection-string password
        // are each below the 16-character random-run heuristic in part, or split by `:`/`/`.
        let bot = format!(
            "{}:AA{}",
            "1234567890", "Zk3Lm9Qw2Er5Ty8Ui1Op4As7Df0Gh6Jk3L"
        );
        let line = format!(
            "notify(bot=\"{bot}\", conn=\"Server=db;User Id=sa;Password=Zq8#pL2v;\", card=\"4111 1111 1111 1111\")"
        );
        let m = mask_secrets(&line);
        assert!(!m.contains("Zk3Lm9Qw2Er5Ty8Ui1Op4As7Df0Gh6Jk3L"), "{m}");
        assert!(!m.contains("Zq8#pL2v"), "{m}");
        assert!(!m.contains("4111 1111 1111 1111"), "{m}");
        assert!(m.starts_with("notify(bot=\""), "{m}");
        // Numbers that fail Luhn (order ids, timestamps) stay readable.
        let ids = "order 1234567890123 at 1700000000000";
        assert_eq!(mask_secrets(ids), ids);
    }

    #[test]
    fn masking_keeps_the_length_in_characters() {
        let line = "secret = \"ünïcødé-välüe-1234\"";
        assert_eq!(mask_secrets(line).chars().count(), line.chars().count());
    }
}
