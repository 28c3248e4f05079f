//! Field-level encryption of personal data (e-mail addresses).
//!
//! Why encrypt one column when the disk is already encrypted? Because database
//! dumps, replicas, backups and over-broad `SELECT` grants all see plaintext
//! through disk encryption. With field-level encryption the e-mail is only
//! readable by a process holding the key.
//!
//! Encrypted values cannot be searched, so next to each ciphertext we store a
//! keyed hash of the normalized address ([`PiiCipher::email_lookup_hash`]):
//! equal e-mails give equal hashes (so a unique index and `WHERE` look-ups
//! work), but without the key nobody can confirm a guess, which a plain
//! SHA-256 of an e-mail would allow in seconds.
//!
//! One master key is configured; two purpose-bound sub-keys are derived from
//! it (see [`PiiCipher::from_base64`]) so operators manage one secret while
//! the cipher and the hash never share key material.

use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of the AES-GCM nonce prefixed to every blob (96 bits, the size GCM
/// is designed for).
const NONCE_LEN: usize = 12;
/// Length of the GCM authentication tag appended by `aes-gcm`.
const TAG_LEN: usize = 16;
/// Required length of the master key, in bytes.
const MASTER_KEY_LEN: usize = 32;

/// Derivation labels. Versioned so a future change of scheme can coexist with
/// data written under the old one.
const ENCRYPTION_KEY_LABEL: &[u8] = b"pii-encryption-v1";
const LOOKUP_KEY_LABEL: &[u8] = b"email-lookup-v1";

/// Why a key could not be loaded or a blob could not be decrypted.
#[derive(thiserror::Error, Debug)]
pub enum CryptoError {
    /// The configured key is unusable. The message never contains key bytes.
    #[error("bad PII key: {0}")]
    BadKey(String),
    /// The blob is truncated, was tampered with, was written under another
    /// key, or is not UTF-8. GCM cannot tell these apart, and neither should
    /// we: any of them means "do not trust this value".
    #[error("PII decryption failed")]
    Decrypt,
}

/// Encrypts, decrypts and hashes personal data under one master key.
///
/// Cheap to clone (two small key schedules) and `Send + Sync`, so a single
/// instance can be shared by all request handlers.
#[derive(Clone)]
pub struct PiiCipher {
    aead: Aes256Gcm,
    lookup_key: [u8; 32],
}

/// Hand-written so that key material never reaches a log through `{:?}`.
impl fmt::Debug for PiiCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PiiCipher").finish_non_exhaustive()
    }
}

impl PiiCipher {
    /// The fixed development key: base64 of the ASCII text
    /// `INSECURE-DEV-KEY-DO-NOT-USE-0001`.
    ///
    /// It is public (it is in the source), so anything encrypted with it is
    /// effectively plaintext. It exists so the service starts with zero
    /// configuration on a laptop; the caller must log a warning whenever it is
    /// used, and production must configure its own key.
    pub const DEVELOPMENT_KEY_B64: &'static str = "SU5TRUNVUkUtREVWLUtFWS1ETy1OT1QtVVNFLTAwMDE=";

    /// Loads the master key from standard base64 of exactly 32 bytes.
    ///
    /// Surrounding whitespace is ignored because keys usually arrive through
    /// environment variables or secret files, which often end in a newline.
    ///
    /// Two sub-keys are derived as `HMAC-SHA256(master, label)`:
    /// * `"pii-encryption-v1"` → the AES-256-GCM key;
    /// * `"email-lookup-v1"` → the HMAC key for look-up hashes.
    ///
    /// Using the master key directly for both would mean one key serving two
    /// algorithms, which is poor hygiene: a weakness or leak in one use would
    /// touch the other. HMAC with a fixed label is a sound KDF for a uniformly
    /// random 32-byte master key (it is HKDF-Expand with a single block).
    pub fn from_base64(key_b64: &str) -> Result<Self, CryptoError> {
        let master = STANDARD
            .decode(key_b64.trim())
            .map_err(|_| CryptoError::BadKey("not valid standard base64".to_owned()))?;
        if master.len() != MASTER_KEY_LEN {
            return Err(CryptoError::BadKey(format!(
                "expected {MASTER_KEY_LEN} bytes after base64 decoding, got {}",
                master.len()
            )));
        }

        let enc_key = derive(&master, ENCRYPTION_KEY_LABEL);
        let lookup_key = derive(&master, LOOKUP_KEY_LABEL);
        Ok(Self {
            aead: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&enc_key)),
            lookup_key,
        })
    }

    /// A cipher under [`Self::DEVELOPMENT_KEY_B64`]. Insecure by design; see
    /// the constant's documentation.
    pub fn development() -> Self {
        Self::from_base64(Self::DEVELOPMENT_KEY_B64).expect("DEVELOPMENT_KEY_B64 is valid base64 of exactly 32 bytes")
    }

    /// Encrypts with AES-256-GCM under a fresh random 96-bit nonce.
    ///
    /// Output layout: `nonce (12) || ciphertext || tag (16)`, ready for a
    /// `BYTEA` column. A random nonce per call means equal e-mails produce
    /// different blobs (no equality leak; use the look-up hash for that). With
    /// 96-bit random nonces the collision risk stays negligible far beyond the
    /// number of users this service will ever store (NIST's bound is 2^32
    /// encryptions per key).
    pub fn encrypt(&self, plaintext: &str) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .aead
            .encrypt(&nonce, plaintext.as_bytes())
            .expect("AES-GCM only fails for plaintexts over 64 GiB, which a &str here never is");
        let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        blob
    }

    /// Reverses [`Self::encrypt`]. Any truncation, bit flip or wrong key
    /// yields [`CryptoError::Decrypt`]; GCM's tag guarantees we never return
    /// silently corrupted data.
    pub fn decrypt(&self, blob: &[u8]) -> Result<String, CryptoError> {
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let plaintext = self
            .aead
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| CryptoError::Decrypt)?;
        String::from_utf8(plaintext).map_err(|_| CryptoError::Decrypt)
    }

    /// Keyed look-up hash of an e-mail: `HMAC-SHA256(lookup_key,
    /// normalize_email(email))`, 32 bytes.
    ///
    /// Normalization (trim, lowercase) makes `" Alice@Example.COM "` and
    /// `"alice@example.com"` the same account, which is what users expect even
    /// though the local part is technically case-sensitive. The displayed
    /// address is still the encrypted original.
    pub fn email_lookup_hash(&self, email: &str) -> Vec<u8> {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.lookup_key).expect("HMAC-SHA256 accepts keys of any length");
        mac.update(normalize_email(email).as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// The canonical form used for look-up hashes: surrounding whitespace removed
/// and lowercased. Public so callers can validate or compare with the exact
/// rule the hash uses.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// `HMAC-SHA256(master, label)`: a purpose-bound 32-byte sub-key.
fn derive(master: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(master).expect("HMAC-SHA256 accepts keys of any length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key_b64(byte: u8) -> String {
        STANDARD.encode([byte; MASTER_KEY_LEN])
    }

    #[test]
    fn encrypted_text_decrypts_to_the_original() {
        let cipher = PiiCipher::development();
        let blob = cipher.encrypt("alice@example.com");
        assert_eq!(blob.len(), NONCE_LEN + "alice@example.com".len() + TAG_LEN);
        assert_eq!(cipher.decrypt(&blob).expect("round trip"), "alice@example.com");
    }

    #[test]
    fn empty_string_round_trips() {
        let cipher = PiiCipher::development();
        assert_eq!(cipher.decrypt(&cipher.encrypt("")).expect("round trip"), "");
    }

    #[test]
    fn flipping_any_single_byte_makes_decryption_fail() {
        let cipher = PiiCipher::development();
        let blob = cipher.encrypt("bob@example.com");
        for i in 0..blob.len() {
            let mut tampered = blob.clone();
            tampered[i] ^= 0x01;
            assert!(
                matches!(cipher.decrypt(&tampered), Err(CryptoError::Decrypt)),
                "tampering byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn truncated_blobs_are_refused() {
        let cipher = PiiCipher::development();
        let blob = cipher.encrypt("carol@example.com");
        for len in [0, 1, NONCE_LEN, NONCE_LEN + TAG_LEN - 1, blob.len() - 1] {
            assert!(matches!(cipher.decrypt(&blob[..len]), Err(CryptoError::Decrypt)));
        }
    }

    #[test]
    fn blob_from_another_key_is_refused() {
        let a = PiiCipher::from_base64(&key_b64(1)).expect("key");
        let b = PiiCipher::from_base64(&key_b64(2)).expect("key");
        assert!(matches!(
            b.decrypt(&a.encrypt("dave@example.com")),
            Err(CryptoError::Decrypt)
        ));
    }

    #[test]
    fn two_encryptions_of_the_same_text_differ() {
        let cipher = PiiCipher::development();
        let first = cipher.encrypt("erin@example.com");
        let second = cipher.encrypt("erin@example.com");
        assert_ne!(first, second);
        assert_ne!(first[..NONCE_LEN], second[..NONCE_LEN]);
    }

    #[test]
    fn lookup_hash_is_stable_and_ignores_case_and_surrounding_whitespace() {
        let cipher = PiiCipher::development();
        let reference = cipher.email_lookup_hash("frank@example.com");
        assert_eq!(reference.len(), 32);
        assert_eq!(cipher.email_lookup_hash("frank@example.com"), reference);
        assert_eq!(cipher.email_lookup_hash("  Frank@Example.COM\n"), reference);
        // Another clone of the same key agrees (the hash is deterministic).
        assert_eq!(cipher.clone().email_lookup_hash("FRANK@example.com"), reference);
        assert_ne!(cipher.email_lookup_hash("frank2@example.com"), reference);
    }

    #[test]
    fn lookup_hash_depends_on_the_key() {
        let a = PiiCipher::from_base64(&key_b64(1)).expect("key");
        let b = PiiCipher::from_base64(&key_b64(2)).expect("key");
        assert_ne!(
            a.email_lookup_hash("gina@example.com"),
            b.email_lookup_hash("gina@example.com")
        );
    }

    #[test]
    fn lookup_hash_is_not_a_plain_hmac_under_the_master_key() {
        // Guards the key separation: the look-up key must be derived, never
        // the master key itself.
        let master = [7u8; MASTER_KEY_LEN];
        let cipher = PiiCipher::from_base64(&STANDARD.encode(master)).expect("key");
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&master).expect("any length");
        mac.update(b"hank@example.com");
        let with_master = mac.finalize().into_bytes().to_vec();
        assert_ne!(cipher.email_lookup_hash("hank@example.com"), with_master);
    }

    #[test]
    fn wrong_length_key_is_refused() {
        for len in [0usize, 16, 31, 33, 64] {
            let key = STANDARD.encode(vec![0u8; len]);
            assert!(
                matches!(PiiCipher::from_base64(&key), Err(CryptoError::BadKey(_))),
                "{len}-byte key accepted"
            );
        }
    }

    #[test]
    fn non_base64_key_is_refused() {
        assert!(matches!(
            PiiCipher::from_base64("this is not base64!"),
            Err(CryptoError::BadKey(_))
        ));
    }

    #[test]
    fn key_with_trailing_newline_is_accepted() {
        let key = format!("{}\n", key_b64(3));
        assert!(PiiCipher::from_base64(&key).is_ok());
    }

    #[test]
    fn development_key_constant_is_32_bytes() {
        let raw = STANDARD.decode(PiiCipher::DEVELOPMENT_KEY_B64).expect("valid base64");
        assert_eq!(raw.len(), MASTER_KEY_LEN);
    }

    #[test]
    fn debug_output_reveals_no_key_material() {
        let shown = format!("{:?}", PiiCipher::development());
        assert_eq!(shown, "PiiCipher { .. }");
    }

    #[test]
    fn cipher_is_send_sync_and_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<PiiCipher>();
    }

    proptest! {
        #[test]
        fn any_string_round_trips(text in any::<String>()) {
            let cipher = PiiCipher::development();
            let blob = cipher.encrypt(&text);
            prop_assert_eq!(cipher.decrypt(&blob).expect("round trip"), text);
        }

        #[test]
        fn lookup_hash_equals_hash_of_normalized_form(text in any::<String>()) {
            let cipher = PiiCipher::development();
            prop_assert_eq!(
                cipher.email_lookup_hash(&text),
                cipher.email_lookup_hash(&normalize_email(&text))
            );
        }
    }
}
