//! Clone credentials: [`SecretUrl`], the one type that holds a git URL with its credentials (it
//! cannot be printed or serialised), and their sealing for the job store ([`CredentialKeys`],
//! [`SealedCredentials`]), so that whichever replica claims a scan can open them with the key the
//! replicas share. Pure: the key text comes from the caller (`App::build` reads the file), and the
//! only I/O is the OS random source.
//!
//! Envelope encryption with AES-256-GCM (ring): each seal draws a random 256-bit data key, encrypts
//! the URL with it (a zero nonce is safe: the data key encrypts one message and is then dropped),
//! and encrypts ("wraps") the data key with the active key under a random 96-bit nonce. A key
//! therefore only ever encrypts 32 random bytes per scan, with random nonces far below GCM's
//! 2^32-messages bound for random nonces, and a later key service would replace the wrap alone.
//! The authenticated data of both steps names the key id and the scan's test id, so a sealed
//! value copied to another scan, or relabelled with another key id, does not open.
//!
//! Stored form: `v1.<key id>.<base64url(wrap nonce | wrapped data key | sealed URL)>`.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// A git URL that may carry credentials (`https://user:token@host/...`). `Debug` shows
/// `SecretUrl([redacted])`; there is no `Display` and no `Serialize`: the value is read only
/// through [`SecretUrl::expose`], by the code that clones, seals or redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    /// The URL with its credentials, for the clone, the seal and the redaction.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretUrl([redacted])")
    }
}

/// Length of a credential key and of a data key.
const KEY_LEN: usize = 32;
/// Length of an AES-GCM tag.
const TAG_LEN: usize = 16;
/// The version prefix of the stored form.
const VERSION: &str = "v1";

/// One named key of the key list.
struct CredentialKey {
    id: String,
    key: LessSafeKey,
}

/// The credential keys of this replica: the first seals (the active key), every one opens.
/// `Debug` shows the key ids only.
pub struct CredentialKeys {
    keys: Vec<CredentialKey>,
}

impl std::fmt::Debug for CredentialKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialKeys")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

/// Whether `id` is a key id: 1 to 64 of `A-Z a-z 0-9 - _`.
fn valid_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl CredentialKeys {
    /// Reads a key list: one key per line, `<key-id> <base64 of 32 random bytes>`; blank lines
    /// and lines starting with `#` are skipped; the first key is the active one. An error names
    /// the line and what is wrong, never the text of the line (it may hold key material).
    pub fn parse(text: &str) -> Result<CredentialKeys, String> {
        let mut keys: Vec<CredentialKey> = Vec::new();
        let mut lines_of: Vec<usize> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(id), Some(encoded), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!(
                    "line {n} is not `<key-id> <base64 of 32 random bytes>` (two fields \
                     separated by a space; make a key with `openssl rand -base64 32`)"
                ));
            };
            if !valid_key_id(id) {
                return Err(format!(
                    "line {n}: the key id must be 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'"
                ));
            }
            if let Some(first) = keys.iter().position(|k| k.id == id) {
                return Err(format!(
                    "line {n} repeats the key id of line {}; give each key its own id",
                    lines_of[first]
                ));
            }
            let bytes = STANDARD
                .decode(encoded)
                .or_else(|_| URL_SAFE_NO_PAD.decode(encoded))
                .map_err(|_| {
                    format!(
                        "line {n}: the key is not base64 (make one with `openssl rand -base64 32`)"
                    )
                })?;
            if bytes.len() != KEY_LEN {
                return Err(format!(
                    "line {n}: the key is {} bytes long; it must be 32 random bytes, base64 \
                     encoded (`openssl rand -base64 32`)",
                    bytes.len()
                ));
            }
            keys.push(CredentialKey {
                id: id.to_string(),
                key: aes_key(&bytes),
            });
            lines_of.push(n);
        }
        if keys.is_empty() {
            return Err(
                "it holds no key; add a line `<key-id> <base64 of 32 random bytes>` \
                 (`openssl rand -base64 32` makes a key)"
                    .into(),
            );
        }
        Ok(CredentialKeys { keys })
    }

    /// The id of the key that seals.
    pub fn active_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Every key id, the active one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Seals `url` for the scan `test_id` with the active key.
    pub fn seal(&self, test_id: &str, url: &SecretUrl) -> SealedCredentials {
        let active = &self.keys[0];
        let rng = SystemRandom::new();
        let mut data_key = [0u8; KEY_LEN];
        let mut wrap_nonce = [0u8; NONCE_LEN];
        rng.fill(&mut data_key)
            .and_then(|()| rng.fill(&mut wrap_nonce))
            .expect("the OS random source is available");
        let aad = associated_data(&active.id, test_id);
        let mut sealed_url = url.expose().as_bytes().to_vec();
        aes_key(&data_key)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0u8; NONCE_LEN]),
                Aad::from(&aad),
                &mut sealed_url,
            )
            .expect("AES-GCM seals any message under 64 GiB");
        let mut wrapped = data_key.to_vec();
        active
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(wrap_nonce),
                Aad::from(&aad),
                &mut wrapped,
            )
            .expect("AES-GCM seals 32 bytes");
        let mut blob = Vec::with_capacity(NONCE_LEN + wrapped.len() + sealed_url.len());
        blob.extend_from_slice(&wrap_nonce);
        blob.extend_from_slice(&wrapped);
        blob.extend_from_slice(&sealed_url);
        SealedCredentials(format!(
            "{VERSION}.{}.{}",
            active.id,
            URL_SAFE_NO_PAD.encode(blob)
        ))
    }

    /// Opens credentials sealed for the scan `test_id`.
    pub fn open(&self, test_id: &str, sealed: &SealedCredentials) -> Result<SecretUrl, OpenError> {
        let (key_id, blob) = sealed.parts().ok_or(OpenError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or_else(|| OpenError::UnknownKey(key_id.to_string()))?;
        let not_authentic = || OpenError::NotAuthentic(key_id.to_string());
        if blob.len() < NONCE_LEN + KEY_LEN + TAG_LEN + TAG_LEN {
            return Err(OpenError::Malformed);
        }
        let aad = associated_data(key_id, test_id);
        let (nonce, rest) = blob.split_at(NONCE_LEN);
        let (wrapped, sealed_url) = rest.split_at(KEY_LEN + TAG_LEN);
        let mut wrapped = wrapped.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Malformed)?;
        let data_key = key
            .key
            .open_in_place(nonce, Aad::from(&aad), &mut wrapped)
            .map_err(|_| not_authentic())?;
        let mut sealed_url = sealed_url.to_vec();
        let url = aes_key(data_key)
            .open_in_place(
                Nonce::assume_unique_for_key([0u8; NONCE_LEN]),
                Aad::from(&aad),
                &mut sealed_url,
            )
            .map_err(|_| not_authentic())?;
        let url = String::from_utf8(url.to_vec()).map_err(|_| not_authentic())?;
        Ok(SecretUrl(url))
    }
}

fn aes_key(bytes: &[u8]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES-256 key"))
}

/// What both encryptions authenticate: the purpose, the key id and the scan's test id.
fn associated_data(key_id: &str, test_id: &str) -> Vec<u8> {
    format!("certus-assurance clone credentials {VERSION}\0{key_id}\0{test_id}").into_bytes()
}

/// Clone credentials as stored with their scan: ciphertext, with the id of the key that sealed
/// it. Not a secret without the key; `Debug` shows only the key id all the same.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedCredentials(String);

impl SealedCredentials {
    /// The stored text, as read back from the store.
    pub fn from_stored(text: String) -> SealedCredentials {
        SealedCredentials(text)
    }

    /// The text to store.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of the key that sealed it, if the stored text has the expected shape.
    pub fn key_id(&self) -> Option<&str> {
        let mut parts = self.0.splitn(3, '.');
        match (parts.next(), parts.next()) {
            (Some(VERSION), Some(id)) if valid_key_id(id) => Some(id),
            _ => None,
        }
    }

    fn parts(&self) -> Option<(&str, Vec<u8>)> {
        let id = self.key_id()?;
        let encoded = self.0.splitn(3, '.').nth(2)?;
        Some((id, URL_SAFE_NO_PAD.decode(encoded).ok()?))
    }
}

impl std::fmt::Debug for SealedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedCredentials(key {:?})", self.key_id())
    }
}

/// Why sealed credentials did not open. The messages say what to do and hold no key material
/// and no part of the credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the clone credentials of this scan were sealed with credential key `{0}`, which this replica does not have; give every replica the same key list (CERTUS_ASSURANCE_CREDENTIAL_KEYS_FILE or CERTUS_ASSURANCE_CREDENTIAL_KEYS), keeping a retired key until no scan sealed with it remains, or submit the scan again")]
    UnknownKey(String),
    #[error("the clone credentials of this scan do not open with credential key `{0}` (the replicas hold different keys under that id, or the sealed value belongs to another scan); give every replica the same key list, or submit the scan again")]
    NotAuthentic(String),
    #[error("the stored clone credentials of this scan are damaged; submit the scan again")]
    Malformed,
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "test_0123456789ab";
    const OTHER_ID: &str = "test_ba9876543210";

    fn key_line(id: &str, byte: u8) -> String {
        format!("{id} {}", STANDARD.encode([byte; KEY_LEN]))
    }

    fn url() -> SecretUrl {
        SecretUrl::new("https://deploy:t0ken-Zq8vW3n@git.example.com/org/repo.git")
    }

    #[test]
    fn sealed_credentials_open_for_their_scan_only() {
        let keys = CredentialKeys::parse(&key_line("k1", 7)).unwrap();
        let sealed = keys.seal(ID, &url());
        assert!(sealed.as_str().starts_with("v1.k1."), "{sealed:?}");
        assert!(!sealed.as_str().contains("t0ken"));
        assert_eq!(keys.open(ID, &sealed).unwrap(), url());
        // Copied to another scan: the authenticated data names the test id.
        assert_eq!(
            keys.open(OTHER_ID, &sealed),
            Err(OpenError::NotAuthentic("k1".into()))
        );
        // Two seals of the same URL differ (random data key and nonce).
        assert_ne!(keys.seal(ID, &url()), sealed);
    }

    #[test]
    fn a_relabelled_or_damaged_value_does_not_open() {
        let keys = CredentialKeys::parse(&format!("{}\n{}", key_line("k1", 7), key_line("k2", 7)))
            .unwrap();
        let sealed = keys.seal(ID, &url());
        // The same key material under another id: the id is authenticated too.
        let relabelled = SealedCredentials::from_stored(sealed.as_str().replacen("k1", "k2", 1));
        assert_eq!(
            keys.open(ID, &relabelled),
            Err(OpenError::NotAuthentic("k2".into()))
        );
        let mut text = sealed.as_str().to_string();
        let last = text.pop().unwrap();
        text.push(if last == 'A' { 'B' } else { 'A' });
        assert!(keys
            .open(ID, &SealedCredentials::from_stored(text))
            .is_err());
        for bad in ["", "v1", "v1.k1", "v1.k1.", "v2.k1.AAAA", "v1.k1.!!!"] {
            let err = keys
                .open(ID, &SealedCredentials::from_stored(bad.into()))
                .unwrap_err();
            assert!(
                matches!(err, OpenError::Malformed | OpenError::UnknownKey(_)),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn rotation_keeps_old_seals_open_and_seals_with_the_new_key() {
        let old = CredentialKeys::parse(&key_line("old", 1)).unwrap();
        let sealed = old.seal(ID, &url());
        let rotated =
            CredentialKeys::parse(&format!("{}\n{}\n", key_line("new", 2), key_line("old", 1)))
                .unwrap();
        assert_eq!(rotated.active_id(), "new");
        assert_eq!(rotated.open(ID, &sealed).unwrap(), url());
        let resealed = rotated.seal(ID, &url());
        assert_eq!(resealed.key_id(), Some("new"));
        // A replica that still has only the old key cannot open the new seal, and says which key.
        let err = old.open(ID, &resealed).unwrap_err();
        assert_eq!(err, OpenError::UnknownKey("new".into()));
        assert!(err.to_string().contains("`new`"), "{err}");
        // The same id with other key material: not authentic, not a crash.
        let impostor = CredentialKeys::parse(&key_line("old", 9)).unwrap();
        assert_eq!(
            impostor.open(ID, &sealed),
            Err(OpenError::NotAuthentic("old".into()))
        );
    }

    #[test]
    fn key_lists_are_checked_without_repeating_key_material() {
        let good = STANDARD.encode([3u8; KEY_LEN]);
        let short = STANDARD.encode([3u8; 16]);
        let cases = [
            (String::new(), "holds no key"),
            ("# only a comment\n\n".to_string(), "holds no key"),
            (good.clone(), "line 1 is not"),
            (format!("k1 {good} extra"), "line 1 is not"),
            (format!("bad.id {good}"), "line 1: the key id"),
            (format!("k1 {short}"), "16 bytes long"),
            (format!("k1 not*base64{good}"), "not base64"),
            (
                format!("k1 {good}\n\nk1 {good}"),
                "line 3 repeats the key id of line 1",
            ),
        ];
        for (text, expected) in cases {
            let err = CredentialKeys::parse(&text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains(&good) && !err.contains(&short), "{err}");
        }
        let keys =
            CredentialKeys::parse(&format!("# rotation\nk2 {good}\n  k1 {good}  \n")).unwrap();
        assert_eq!(keys.ids().collect::<Vec<_>>(), ["k2", "k1"]);
        assert_eq!(
            format!("{keys:?}"),
            "CredentialKeys { ids: [\"k2\", \"k1\"] }"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", url()), "SecretUrl([redacted])");
        let keys = CredentialKeys::parse(&key_line("k1", 7)).unwrap();
        let sealed = keys.seal(ID, &url());
        assert_eq!(format!("{sealed:?}"), "SealedCredentials(key Some(\"k1\"))");
    }
}
