//! Public keys for RS256 / ES256: reads a PEM file and tells the algorithm from the key itself, so the operator
//! configures only a path.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};

/// DER body of the rsaEncryption OID (1.2.840.113549.1.1.1).
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// DER body of the id-ecPublicKey OID (1.2.840.10045.2.1).
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER body of the prime256v1 / P-256 curve OID (1.2.840.10045.3.1.7).
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER body of the secp384r1 / P-384 curve OID (1.3.132.0.34).
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER body of the Ed25519 OID (1.3.101.112).
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// Why a public key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Read(std::io::Error),
    /// No `-----BEGIN ...-----` / `-----END ...-----` block, or its body is not base64.
    #[error("not a PEM file")]
    NotPem,
    /// The file holds a private key, which the server must not have.
    #[error(
        "this is a private key; configure its public key instead (openssl pkey -in KEY -pubout)"
    )]
    PrivateKey,
    /// A PEM block of a kind other than a public key (a certificate, parameters, ...).
    #[error("unsupported PEM block {0:?}; expected \"PUBLIC KEY\" or \"RSA PUBLIC KEY\"")]
    UnsupportedBlock(String),
    /// The DER inside the PEM block is not a SubjectPublicKeyInfo.
    #[error("malformed public key: {0}")]
    Malformed(String),
    /// A well-formed key of a type tidings does not verify with.
    #[error("unsupported key type {0}; only RSA (RS256) and EC P-256 (ES256) are supported")]
    Unsupported(&'static str),
}

/// Parses a PEM public key and returns the algorithm it implies with the decoding key.
///
/// `BEGIN RSA PUBLIC KEY` (PKCS#1) and SPKI `BEGIN PUBLIC KEY` holding an RSA key give RS256; an SPKI EC key on
/// P-256 gives ES256. Anything else is refused here rather than failing every token later.
pub fn decoding_key_from_pem(pem: &[u8]) -> Result<(Algorithm, DecodingKey), KeyError> {
    let algorithm = detect_algorithm(pem)?;
    let key = match algorithm {
        Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
        _ => DecodingKey::from_rsa_pem(pem),
    }
    .map_err(|e| KeyError::Malformed(e.to_string()))?;
    Ok((algorithm, key))
}

/// Tells the JWT algorithm from the first PEM block of `pem`.
fn detect_algorithm(pem: &[u8]) -> Result<Algorithm, KeyError> {
    let text = std::str::from_utf8(pem).map_err(|_| KeyError::NotPem)?;
    let (label, der) = first_pem_block(text)?;
    match label {
        "RSA PUBLIC KEY" => Ok(Algorithm::RS256),
        "PUBLIC KEY" => spki_algorithm(&der),
        l if l.ends_with("PRIVATE KEY") => Err(KeyError::PrivateKey),
        l => Err(KeyError::UnsupportedBlock(l.to_owned())),
    }
}

/// The label and decoded body of the first `-----BEGIN <label>-----` block.
fn first_pem_block(text: &str) -> Result<(&str, Vec<u8>), KeyError> {
    let mut lines = text.lines().map(str::trim);
    let label = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .ok_or(KeyError::NotPem)?;
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    for line in lines {
        if line == end {
            let der = STANDARD.decode(body).map_err(|_| KeyError::NotPem)?;
            return Ok((label, der));
        }
        body.push_str(line);
    }
    Err(KeyError::NotPem)
}

/// The algorithm of a DER SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { OID, params }, BIT STRING }.
fn spki_algorithm(der: &[u8]) -> Result<Algorithm, KeyError> {
    let malformed = |what: &str| KeyError::Malformed(format!("{what} not found"));
    let (spki, _) = read_tlv(der, 0x30).ok_or_else(|| malformed("SubjectPublicKeyInfo"))?;
    let (alg_id, _) = read_tlv(spki, 0x30).ok_or_else(|| malformed("AlgorithmIdentifier"))?;
    let (oid, params) = read_tlv(alg_id, 0x06).ok_or_else(|| malformed("algorithm OID"))?;
    match oid {
        OID_RSA => Ok(Algorithm::RS256),
        OID_EC => {
            let (curve, _) = read_tlv(params, 0x06).ok_or_else(|| malformed("EC curve OID"))?;
            match curve {
                OID_P256 => Ok(Algorithm::ES256),
                OID_P384 => Err(KeyError::Unsupported("EC P-384")),
                _ => Err(KeyError::Unsupported("EC (unknown curve)")),
            }
        }
        OID_ED25519 => Err(KeyError::Unsupported("Ed25519")),
        _ => Err(KeyError::Unsupported("(unknown algorithm)")),
    }
}

/// Reads one DER element with tag `tag`; returns its contents and the bytes after it.
fn read_tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (len_bytes, after) = rest.split_at(n);
        rest = after;
        len_bytes
            .iter()
            .fold(0usize, |acc, &b| acc << 8 | usize::from(b))
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()
    }

    #[test]
    fn detects_rsa_and_p256() {
        let alg = |name| decoding_key_from_pem(&key_file(name)).map(|(alg, _)| alg);
        assert_eq!(alg("rsa-test-public.pem").unwrap(), Algorithm::RS256);
        assert_eq!(alg("rsa-test-public-pkcs1.pem").unwrap(), Algorithm::RS256);
        assert_eq!(alg("ec-p256-test-public.pem").unwrap(), Algorithm::ES256);
    }

    #[test]
    fn refuses_other_keys() {
        let err = |name| decoding_key_from_pem(&key_file(name)).err().unwrap();
        assert!(matches!(
            err("ec-p384-test-public.pem"),
            KeyError::Unsupported("EC P-384")
        ));
        assert!(matches!(err("rsa-test-private.pem"), KeyError::PrivateKey));
        assert!(matches!(
            err("ec-p256-test-private.pem"),
            KeyError::PrivateKey
        ));
        assert!(matches!(
            decoding_key_from_pem(b"hello").err().unwrap(),
            KeyError::NotPem
        ));
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            decoding_key_from_pem(cert).err().unwrap(),
            KeyError::UnsupportedBlock(_)
        ));
        let junk = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            decoding_key_from_pem(junk).err().unwrap(),
            KeyError::Malformed(_)
        ));
        let unterminated = b"-----BEGIN PUBLIC KEY-----\nAAAA\n";
        assert!(matches!(
            decoding_key_from_pem(unterminated).err().unwrap(),
            KeyError::NotPem
        ));
    }

    #[test]
    fn der_lengths() {
        assert_eq!(
            read_tlv(&[0x30, 0x01, 0xaa, 0xbb], 0x30),
            Some((&[0xaa][..], &[0xbb][..]))
        );
        let long = [&[0x04, 0x81, 0x02][..], &[1, 2]].concat();
        assert_eq!(read_tlv(&long, 0x04), Some((&[1, 2][..], &[][..])));
        assert_eq!(read_tlv(&[0x30, 0x05, 0x00], 0x30), None);
        assert_eq!(read_tlv(&[0x31, 0x00], 0x30), None);
    }
}
