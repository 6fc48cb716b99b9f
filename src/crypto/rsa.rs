//! RSA-OAEP (SHA-256, MGF1-SHA-256) wrapping of data keys, and the PEM forms of RSA keys.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

use super::CryptoError;
use super::data_key::{DATA_KEY_LEN, DataKey};

/// Bytes of the public key's SHA-256 shown as its fingerprint (16 hex characters).
const FINGERPRINT_BYTES: usize = 8;

/// DER of the AlgorithmIdentifier for rsaEncryption (OID 1.2.840.113549.1.1.1, NULL parameters).
const RSA_ALGORITHM_ID: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// This proxy's RSA private key, which unwraps the data keys sent to it.
pub struct PrivateKey {
    oaep: OaepPrivateDecryptingKey,
    pkcs8_der: Vec<u8>,
    public: RecipientKey,
}

impl PrivateKey {
    /// A new random RSA-2048 key.
    pub fn generate() -> Result<Self, CryptoError> {
        Self::from_key(PrivateDecryptingKey::generate(KeySize::Rsa2048)?)
    }

    /// Parses an unencrypted PEM private key, PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
    pub fn from_pem(text: &str) -> Result<Self, CryptoError> {
        let block = pem::parse(text).map_err(|e| invalid(format!("not a PEM private key: {e}")))?;
        let pkcs8 = match block.tag() {
            "PRIVATE KEY" => block.contents().to_vec(),
            "RSA PRIVATE KEY" => pkcs1_private_to_pkcs8(block.contents()),
            other => return Err(invalid(format!("unexpected PEM block {other:?}"))),
        };
        let key = PrivateDecryptingKey::from_pkcs8(&pkcs8)
            .map_err(|e| invalid(format!("not an RSA private key: {e}")))?;
        Self::from_key(key)
    }

    fn from_key(key: PrivateDecryptingKey) -> Result<Self, CryptoError> {
        let public = RecipientKey::from_key(key.public_key())?;
        let der: Pkcs8V1Der<'static> = key.as_der()?;
        Ok(Self {
            pkcs8_der: der.as_ref().to_vec(),
            oaep: OaepPrivateDecryptingKey::new(key)?,
            public,
        })
    }

    /// The PKCS#8 PEM text of the key.
    pub fn to_pem(&self) -> String {
        encode_pem("PRIVATE KEY", &self.pkcs8_der)
    }

    /// The matching public key.
    pub fn public_key(&self) -> &RecipientKey {
        &self.public
    }

    /// Unwraps a base64 RSA-OAEP ciphertext into the data key it carries.
    ///
    /// The plaintext is the key's 44-character base64 text (what the Python proxy wraps); raw
    /// 32-byte keys are accepted too.
    pub fn unwrap_key(&self, wrapped_base64: &str) -> Result<DataKey, CryptoError> {
        let wrapped = wrapped_base64.trim();
        let ciphertext = STANDARD
            .decode(wrapped)
            .or_else(|_| URL_SAFE.decode(wrapped))
            .map_err(|_| CryptoError::UnwrapFailed)?;
        if ciphertext.len() != self.oaep.key_size_bytes() {
            return Err(CryptoError::UnwrapFailed);
        }
        let mut plaintext = vec![0u8; self.oaep.min_output_size()];
        let opened = self
            .oaep
            .decrypt(&OAEP_SHA256_MGF1SHA256, &ciphertext, &mut plaintext, None)
            .map_err(|_| CryptoError::UnwrapFailed)?;
        match <[u8; DATA_KEY_LEN]>::try_from(&opened[..]) {
            Ok(raw) => Ok(DataKey::from_bytes(raw)),
            Err(_) => DataKey::from_text(opened).map_err(|_| CryptoError::UnwrapFailed),
        }
    }
}

/// A recipient's RSA public key, which wraps data keys for it.
pub struct RecipientKey {
    oaep: OaepPublicEncryptingKey,
    /// SubjectPublicKeyInfo PEM, encoded once: `/key/public` serves it on every request.
    pem: String,
    fingerprint: String,
}

impl RecipientKey {
    /// Parses a PEM public key: SubjectPublicKeyInfo (`PUBLIC KEY`) or PKCS#1 (`RSA PUBLIC KEY`),
    /// of 2048 to 8192 bits.
    pub fn from_pem(text: &str) -> Result<Self, CryptoError> {
        let block =
            pem::parse(text).map_err(|_| invalid("is not a PEM-encoded public key".into()))?;
        let spki = match block.tag() {
            "PUBLIC KEY" => block.contents().to_vec(),
            "RSA PUBLIC KEY" => pkcs1_public_to_spki(block.contents()),
            other => {
                return Err(invalid(format!(
                    "is a PEM {other:?} block, not a public key"
                )));
            }
        };
        let key = PublicEncryptingKey::from_der(&spki)
            .map_err(|_| invalid("is not an RSA public key of 2048 to 8192 bits".into()))?;
        Self::from_key(key)
    }

    /// From a parsed key; aws-lc-rs parses only keys of 2048 to 8192 bits, so the size needs no
    /// check of its own.
    fn from_key(key: PublicEncryptingKey) -> Result<Self, CryptoError> {
        let der: PublicKeyX509Der<'static> = key.as_der()?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
        Ok(Self {
            fingerprint: digest.as_ref()[..FINGERPRINT_BYTES]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            pem: encode_pem("PUBLIC KEY", der.as_ref()),
            oaep: OaepPublicEncryptingKey::new(key)?,
        })
    }

    /// The SubjectPublicKeyInfo PEM text of the key.
    pub fn to_pem(&self) -> &str {
        &self.pem
    }

    /// A short name of the key: the first bytes of the SHA-256 of its SubjectPublicKeyInfo DER,
    /// in hex (`openssl pkey -pubin -outform DER | sha256sum` shows the same prefix).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Wraps a data key for this recipient: standard base64 of RSA-OAEP over the key's text.
    pub fn wrap_key(&self, key: &DataKey) -> Result<String, CryptoError> {
        let mut ciphertext = vec![0u8; self.oaep.ciphertext_size()];
        let sealed = self.oaep.encrypt(
            &OAEP_SHA256_MGF1SHA256,
            key.to_text().as_bytes(),
            &mut ciphertext,
            None,
        )?;
        Ok(STANDARD.encode(sealed))
    }
}

/// PEM with LF line endings, as OpenSSL and Python's `cryptography` write it.
fn encode_pem(tag: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, der), config)
}

fn invalid(message: String) -> CryptoError {
    CryptoError::InvalidRsaKey(message)
}

/// PKCS#8 PrivateKeyInfo { version 0, rsaEncryption, OCTET STRING pkcs1 }.
fn pkcs1_private_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(RSA_ALGORITHM_ID);
    body.extend(der_element(0x04, pkcs1));
    der_element(0x30, &body)
}

/// SubjectPublicKeyInfo { rsaEncryption, BIT STRING pkcs1 }.
fn pkcs1_public_to_spki(pkcs1: &[u8]) -> Vec<u8> {
    let mut bits = vec![0x00];
    bits.extend_from_slice(pkcs1);
    let mut body = RSA_ALGORITHM_ID.to_vec();
    body.extend(der_element(0x03, &bits));
    der_element(0x30, &body)
}

fn der_element(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::LazyLock;

    static KEY: LazyLock<PrivateKey> = LazyLock::new(|| PrivateKey::generate().unwrap());

    #[test]
    fn wrapped_key_unwraps_to_the_same_key() {
        let data_key = DataKey::generate().unwrap();
        let wrapped = KEY.public_key().wrap_key(&data_key).unwrap();
        assert_eq!(KEY.unwrap_key(&wrapped).unwrap(), data_key);
    }

    #[test]
    fn pem_forms_round_trip() {
        let again = PrivateKey::from_pem(&KEY.to_pem()).unwrap();
        assert_eq!(again.public_key().to_pem(), KEY.public_key().to_pem());
        let public = RecipientKey::from_pem(KEY.public_key().to_pem()).unwrap();
        assert_eq!(public.to_pem(), KEY.public_key().to_pem());
    }

    #[test]
    fn fingerprints_name_the_public_key() {
        let fingerprint = KEY.public_key().fingerprint();
        assert_eq!(fingerprint.len(), 2 * FINGERPRINT_BYTES);
        assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
        let der = pem::parse(KEY.public_key().to_pem()).unwrap();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.contents());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert!(hex.starts_with(fingerprint));
        let other = PrivateKey::generate().unwrap();
        assert_ne!(other.public_key().fingerprint(), fingerprint);
    }

    #[test]
    fn garbage_is_not_unwrapped() {
        assert_eq!(
            KEY.unwrap_key("bm90IGEga2V5"),
            Err(CryptoError::UnwrapFailed)
        );
        assert_eq!(KEY.unwrap_key("%%%"), Err(CryptoError::UnwrapFailed));
        let other = PrivateKey::generate().unwrap();
        let wrapped = other
            .public_key()
            .wrap_key(&DataKey::generate().unwrap())
            .unwrap();
        assert_eq!(KEY.unwrap_key(&wrapped), Err(CryptoError::UnwrapFailed));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_wrapped_key_text_is_refused_without_panic(text in ".{0,400}") {
            proptest::prop_assert!(KEY.unwrap_key(&text).is_err());
        }

        #[test]
        fn arbitrary_ciphertexts_of_the_right_length_are_refused(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 256),
        ) {
            proptest::prop_assert!(KEY.unwrap_key(&STANDARD.encode(bytes)).is_err());
        }
    }

    /// An RSA-1024 public key (made with `openssl genrsa 1024`): too small to be a recipient.
    const RSA_1024_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDDlpx7buA95rN3VhjzgM8UT3Fh\n6zYonZLyi0Stz8xlf9iw2ABatenjmdI8KOCPtJZ2XEQgPB7v98iCt8BVyZDptpI/\nfKc/f6BD0GhA14Qhit3b797jXZaNqnH4oMOe9ylhb4ddq6CnusYbvSiWhkFLKdXH\nf1+lkMTvwL0mwOx2uwIDAQAB\n-----END PUBLIC KEY-----\n";

    #[test]
    fn keys_under_2048_bits_are_refused_and_larger_ones_accepted() {
        let refused = RecipientKey::from_pem(RSA_1024_PUBLIC).err().unwrap();
        assert!(
            refused.to_string().contains("2048 to 8192 bits"),
            "{refused}"
        );
        let large = PrivateDecryptingKey::generate(KeySize::Rsa3072).unwrap();
        assert!(RecipientKey::from_key(large.public_key()).is_ok());
    }

    /// The contents of the DER element that starts at `der[at..]`, and where it ends.
    fn der_contents(der: &[u8], at: usize) -> (&[u8], usize) {
        let (len, header) = match der[at + 1] {
            short if short < 0x80 => (usize::from(short), 2),
            long => {
                let count = usize::from(long & 0x7f);
                let len = der[at + 2..at + 2 + count]
                    .iter()
                    .fold(0, |acc, &b| acc << 8 | usize::from(b));
                (len, 2 + count)
            }
        };
        (&der[at + header..at + header + len], at + header + len)
    }

    #[test]
    fn pkcs1_forms_of_both_keys_are_read() {
        // PrivateKeyInfo: SEQUENCE { version, algorithm, OCTET STRING { PKCS#1 } }.
        let (info, _) = der_contents(&KEY.pkcs8_der, 0);
        let (_, after_version) = der_contents(info, 0);
        let (_, after_algorithm) = der_contents(info, after_version);
        let (pkcs1_private, _) = der_contents(info, after_algorithm);
        let pem = encode_pem("RSA PRIVATE KEY", pkcs1_private);
        let again = PrivateKey::from_pem(&pem).unwrap();
        assert_eq!(
            again.public_key().fingerprint(),
            KEY.public_key().fingerprint()
        );

        // SubjectPublicKeyInfo: SEQUENCE { algorithm, BIT STRING { 0, PKCS#1 } }.
        let spki = pem::parse(KEY.public_key().to_pem()).unwrap();
        let (body, _) = der_contents(spki.contents(), 0);
        let (_, after_algorithm) = der_contents(body, 0);
        let (bits, _) = der_contents(body, after_algorithm);
        let pem = encode_pem("RSA PUBLIC KEY", &bits[1..]);
        let public = RecipientKey::from_pem(&pem).unwrap();
        assert_eq!(public.to_pem(), KEY.public_key().to_pem());
    }

    #[test]
    fn der_lengths_use_the_short_form_below_128_bytes_only() {
        assert_eq!(der_element(0x04, &[9; 3]), [0x04, 3, 9, 9, 9]);
        assert_eq!(der_element(0x04, &[0; 127])[..2], [0x04, 0x7f]);
        assert_eq!(der_element(0x04, &[0; 128])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(der_element(0x30, &[0; 256])[..4], [0x30, 0x82, 0x01, 0x00]);
        assert_eq!(der_element(0x30, &[0; 256]).len(), 260);
    }

    #[test]
    fn pem_garbage_is_rejected_with_a_reason() {
        for text in [
            "",
            "hello",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ] {
            assert!(matches!(
                RecipientKey::from_pem(text),
                Err(CryptoError::InvalidRsaKey(_))
            ));
        }
    }
}
