//! The bundle's attestation: an in-toto v1 statement whose subjects are the bundle's files
//! with their sha256 digests, written to `reports/signing/attestation.intoto.json`. When a
//! signing key is configured the statement is wrapped in a DSSE envelope signed with ed25519;
//! otherwise the bare statement is written (integrity without authenticity).
//!
//! Two files are not subjects: the attestation itself, and `stream.jsonl`, which the job engine
//! completes with the terminal event after the bundle is sealed.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Bundle path of the attestation.
pub const ATTESTATION_PATH: &str = "reports/signing/attestation.intoto.json";
/// `_type` of an in-toto v1 statement.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// `payloadType` of a DSSE envelope holding an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// `predicateType` of the scan predicate.
pub const PREDICATE_TYPE: &str = "urn:certus-assurance:scan-bundle:v1";

/// An ed25519 key used to sign attestations (ring, the one ed25519 implementation linked; the
/// upload signer derives its key pair from the same seed).
#[derive(Clone)]
pub struct AttestationKey {
    /// Wiped from memory when the last clone is dropped.
    seed: Arc<Zeroizing<[u8; 32]>>,
    key: Arc<Ed25519KeyPair>,
}

impl std::fmt::Debug for AttestationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestationKey")
            .field("keyid", &self.keyid())
            .finish()
    }
}

/// DER prefix of a PKCS#8 ed25519 private key (RFC 8410), followed by the 32-byte seed.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl AttestationKey {
    /// Reads a key file: PKCS#8 PEM (`openssl genpkey -algorithm ed25519`), or the 32-byte seed
    /// as raw bytes, 64 hex digits or base64.
    pub fn from_file(path: &Path) -> anyhow::Result<AttestationKey> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<AttestationKey> {
        let seed: [u8; 32] = if bytes.len() == 32 {
            bytes.try_into().expect("length checked")
        } else {
            let text = std::str::from_utf8(bytes)
                .context("the key is neither 32 raw bytes nor text")?
                .trim();
            if text.starts_with("-----BEGIN PRIVATE KEY-----") {
                let body: String = text
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<Vec<_>>()
                    .concat();
                let der = B64
                    .decode(body.trim())
                    .context("the PEM body is not base64")?;
                // PKCS#8 v1 (48 bytes, as openssl writes it) or v2 (with the public key
                // appended, as ring writes it): the algorithm and seed sit at the same offsets.
                if der.len() < 48 || der[0] != 0x30 || der[5..16] != PKCS8_ED25519_PREFIX[5..] {
                    bail!("the PEM key is not an ed25519 private key (generate one with `openssl genpkey -algorithm ed25519`)");
                }
                der[16..48].try_into().expect("length checked")
            } else if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                hex::decode(text)?.try_into().expect("length checked")
            } else if let Ok(raw) = B64.decode(text) {
                raw.try_into()
                    .map_err(|_| anyhow::anyhow!("the base64 key does not decode to 32 bytes"))?
            } else {
                bail!("unrecognised key format: use a PKCS#8 PEM ed25519 key, or a 32-byte seed as raw bytes, hex or base64");
            }
        };
        let seed = Zeroizing::new(seed);
        let key = Ed25519KeyPair::from_seed_unchecked(seed.as_ref())
            .map_err(|e| anyhow::anyhow!("not a usable ed25519 seed ({e})"))?;
        Ok(AttestationKey {
            seed: Arc::new(seed),
            key: Arc::new(key),
        })
    }

    /// The 32-byte seed (the private key); the upload signer derives its key pair from it.
    pub fn seed(&self) -> [u8; 32] {
        **self.seed
    }

    /// hex sha256 of the raw public key: the DSSE `keyid`.
    pub fn keyid(&self) -> String {
        hex::encode(Sha256::digest(self.public_key()))
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key
            .public_key()
            .as_ref()
            .try_into()
            .expect("an ed25519 public key has 32 bytes")
    }
}

/// DSSE pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// sha256 of every file of `bundle_dir` except the attestation and `stream.jsonl`.
pub fn subjects(bundle_dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for rel in super::artifacts::list_files(bundle_dir)? {
        if rel == ATTESTATION_PATH || rel == super::artifacts::STREAM_JSONL || rel.ends_with(".tmp")
        {
            continue;
        }
        let mut file =
            std::fs::File::open(bundle_dir.join(&rel)).with_context(|| format!("hashing {rel}"))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).with_context(|| format!("hashing {rel}"))?;
        out.push(json!({"name": rel, "digest": {"sha256": hex::encode(hasher.finalize())}}));
    }
    Ok(out)
}

/// The statement over the bundle, signed into a DSSE envelope when `key` is given; written to
/// [`ATTESTATION_PATH`]. Returns what was written.
pub fn write(
    bundle_dir: &Path,
    predicate: Value,
    key: Option<&AttestationKey>,
) -> anyhow::Result<Value> {
    let statement = json!({
        "_type": STATEMENT_TYPE,
        "subject": subjects(bundle_dir)?,
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    });
    let document = match key {
        None => statement,
        Some(key) => {
            let payload = serde_json::to_vec(&statement).expect("plain data serializes");
            let sig = key.key.sign(&pae(PAYLOAD_TYPE, &payload));
            json!({
                "payloadType": PAYLOAD_TYPE,
                "payload": B64.encode(&payload),
                "signatures": [{"keyid": key.keyid(), "sig": B64.encode(sig.as_ref())}],
            })
        }
    };
    super::artifacts::write_json(bundle_dir, ATTESTATION_PATH, &document)?;
    Ok(document)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ED25519};

    fn pem_for(seed: [u8; 32]) -> String {
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            B64.encode(der)
        )
    }

    #[test]
    fn key_formats() {
        let seed = [7u8; 32];
        let a = AttestationKey::from_bytes(pem_for(seed).as_bytes()).unwrap();
        let b = AttestationKey::from_bytes(hex::encode(seed).as_bytes()).unwrap();
        let c = AttestationKey::from_bytes(&seed).unwrap();
        let d = AttestationKey::from_bytes(B64.encode(seed).as_bytes()).unwrap();
        assert_eq!(a.keyid(), b.keyid());
        assert_eq!(b.keyid(), c.keyid());
        assert_eq!(c.keyid(), d.keyid());
        assert!(AttestationKey::from_bytes(b"not a key").is_err());
        let rsa_like = "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n";
        assert!(AttestationKey::from_bytes(rsa_like.as_bytes()).is_err());
        assert!(!format!("{a:?}").contains("07070707"), "debug shows no key");
    }

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn signed_envelope_verifies_and_covers_every_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("scan.json"), "{}").unwrap();
        std::fs::create_dir_all(dir.path().join("reports/sast")).unwrap();
        std::fs::write(dir.path().join("reports/sast/x.sarif.json"), "{\"a\":1}").unwrap();
        std::fs::write(dir.path().join("stream.jsonl"), "").unwrap();
        let key = AttestationKey::from_bytes(&[9u8; 32]).unwrap();
        let env = write(dir.path(), json!({"test_id": "t"}), Some(&key)).unwrap();
        let payload = B64.decode(env["payload"].as_str().unwrap()).unwrap();
        let sig = B64
            .decode(env["signatures"][0]["sig"].as_str().unwrap())
            .unwrap();
        let public_key = key.public_key();
        let vk = UnparsedPublicKey::new(&ED25519, &public_key);
        vk.verify(&pae(PAYLOAD_TYPE, &payload), &sig).unwrap();
        let statement: Value = serde_json::from_slice(&payload).unwrap();
        let names: Vec<_> = statement["subject"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, vec!["reports/sast/x.sarif.json", "scan.json"]);
        assert_eq!(
            statement["subject"][1]["digest"]["sha256"],
            hex::encode(Sha256::digest(b"{}"))
        );
        // Tampering breaks the signature.
        let mut bad = pae(PAYLOAD_TYPE, &payload);
        bad[40] ^= 1;
        assert!(vk.verify(&bad, &sig).is_err());
        // Unsigned: the bare statement.
        let bare = write(dir.path(), json!({}), None).unwrap();
        assert_eq!(bare["_type"], STATEMENT_TYPE);
    }
}
