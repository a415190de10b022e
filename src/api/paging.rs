//! The list routes' shared query handling: keyset pages with an opaque cursor (`limit`,
//! `cursor`), a scoped token's workspaces, time parameters and RFC 3339 times in answers. Used by
//! the scans list and the audit-event list.

use crate::auth::Access;
use crate::error::{ApiError, FieldError};
use crate::storage::ListCursor;

/// A Unix time as RFC 3339 with milliseconds, as every answer shows times.
pub fn rfc3339(secs: f64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs.max(0.0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// An opaque cursor: the list key (submission time as exact bits, sequence number) of the last
/// scan of a page.
fn encode_cursor(at: ListCursor) -> String {
    let mut bytes = at.submitted_at.to_bits().to_be_bytes().to_vec();
    bytes.extend_from_slice(&at.seq.to_be_bytes());
    format!("c2{}", hex::encode(bytes))
}

fn decode_cursor(cursor: &str) -> Option<ListCursor> {
    let bytes = hex::decode(cursor.strip_prefix("c2")?).ok()?;
    let (time, seq) = bytes.split_at_checked(8)?;
    let submitted_at = f64::from_bits(u64::from_be_bytes(time.try_into().ok()?));
    submitted_at.is_finite().then_some(ListCursor {
        submitted_at,
        seq: i64::from_be_bytes(seq.try_into().ok()?),
    })
}

/// The page bounds of a list query: `limit` and `cursor`.
pub struct Page {
    pub limit: usize,
    pub cursor: Option<ListCursor>,
    max: usize,
}

impl Page {
    pub fn new(default: usize, max: usize) -> Page {
        Page {
            limit: default,
            cursor: None,
            max,
        }
    }

    /// The cursor and how many rows to fetch (one extra tells whether another page exists), or
    /// the refusal of the query when a parameter was invalid.
    pub fn bounds(&self, errors: Vec<FieldError>) -> Result<(Option<ListCursor>, usize), ApiError> {
        if errors.is_empty() {
            Ok((self.cursor, self.limit + 1))
        } else {
            Err(ApiError::Validation(errors))
        }
    }

    /// The page out of `rows` (fetched with one extra row) and the cursor of the next page.
    pub fn split<T>(
        &self,
        mut rows: Vec<T>,
        key: impl Fn(&T) -> ListCursor,
    ) -> (Vec<T>, Option<String>) {
        let more = rows.len() > self.limit;
        rows.truncate(self.limit);
        let next = if more {
            rows.last().map(|r| encode_cursor(key(r)))
        } else {
            None
        };
        (rows, next)
    }
}

/// The workspaces a scoped token lists (`None` for every workspace), and whether the workspace
/// asked for lies outside them: the answer is then empty, exactly as for a workspace with nothing
/// in it.
pub fn list_scope(access: &Access, asked: Option<&str>) -> (Option<Vec<String>>, bool) {
    match access.workspace_filter() {
        Some(allowed) => (
            Some(allowed.iter().cloned().collect()),
            asked.is_some_and(|w| !allowed.contains(w)),
        ),
        None => (None, false),
    }
}

/// Reads `limit` and `cursor` into `page`; `false` for any other parameter.
pub fn page_param(page: &mut Page, key: &str, value: &str, errors: &mut Vec<FieldError>) -> bool {
    match key {
        "limit" => match value.parse::<usize>() {
            Ok(n) if (1..=page.max).contains(&n) => page.limit = n,
            _ => errors.push(FieldError::query(
                "limit",
                "int_range",
                format!("Input should be a whole number from 1 to {}", page.max),
            )),
        },
        "cursor" => match decode_cursor(value) {
            Some(cursor) => page.cursor = Some(cursor),
            None => errors.push(FieldError::query(
                "cursor",
                "value_error",
                "cursor is not one this server issued; pass next_cursor from the previous page unchanged",
            )),
        },
        _ => return false,
    }
    true
}

/// A time parameter (RFC 3339 or Unix seconds); `None` after recording the error.
pub fn time_param(key: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<f64> {
    let t = parse_time(value);
    if t.is_none() {
        errors.push(FieldError::query(
            key,
            "datetime_parsing",
            "Input should be an RFC 3339 time such as 2025-12-13T19:30:45Z, or Unix seconds",
        ));
    }
    t
}

fn parse_time(value: &str) -> Option<f64> {
    if let Ok(secs) = value.parse::<f64>() {
        return secs.is_finite().then_some(secs);
    }
    humantime::parse_rfc3339_weak(value)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
}

#[cfg(test)]
mod cursor_tests {
    use super::*;

    #[test]
    fn cursors_round_trip_exactly_and_refuse_anything_else() {
        for at in [
            ListCursor {
                submitted_at: 1_764_355_200.123_456_7,
                seq: 1,
            },
            ListCursor {
                submitted_at: 0.1 + 0.2,
                seq: i64::MAX,
            },
            ListCursor {
                submitted_at: -0.0,
                seq: -5,
            },
        ] {
            let decoded = decode_cursor(&encode_cursor(at)).unwrap();
            assert_eq!(decoded.submitted_at.to_bits(), at.submitted_at.to_bits());
            assert_eq!(decoded.seq, at.seq);
        }
        let nan = format!(
            "c2{}{}",
            hex::encode(f64::NAN.to_bits().to_be_bytes()),
            "00".repeat(8)
        );
        for bad in [
            "",
            "c2",
            "c1000000000000000a",
            "c2zz",
            &nan,
            "c200000000000000000000000000000000ff",
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
