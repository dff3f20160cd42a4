//! The few DER reads and writes verification needs beyond `spki` and `webpki`: an RSA
//! modulus's size, JWS's fixed-size ECDSA signatures (`r || s`) as the ASN.1 `SEQUENCE`
//! webpki verifies, and a certificate's key usage and extended key usage extensions
//! (RFC 5280 §4.1, §4.2.1.3, §4.2.1.12), which notation checks on the signing certificate
//! and webpki does not. Pure; imports nothing of Cairn.

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BOOLEAN: u8 = 0x01;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const BIT_STRING: u8 = 0x03;
/// `[3] EXPLICIT Extensions` in a `TBSCertificate`.
const EXTENSIONS: u8 = 0xa3;

/// id-ce-keyUsage (2.5.29.15), the OID's content bytes.
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
/// id-ce-extKeyUsage (2.5.29.37).
const OID_EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];

/// Splits one DER element off `input`: (tag, contents, rest). `None` when malformed.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The contents of `input`'s first element when it has `tag`.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match element(input)? {
        (t, contents, rest) if t == tag => Some((contents, rest)),
        _ => None,
    }
}

/// The size in bits of the modulus of a PKCS#1 `RSAPublicKey`.
pub(super) fn rsa_modulus_bits(pkcs1: &[u8]) -> Option<u32> {
    let (key, _) = expect(pkcs1, SEQUENCE)?;
    let (modulus, _) = expect(key, INTEGER)?;
    let first = modulus.iter().position(|b| *b != 0)?;
    let significant = &modulus[first..];
    let bits = (significant.len() - 1) * 8 + (8 - significant[0].leading_zeros() as usize);
    u32::try_from(bits).ok()
}

/// Appends `bytes` (big-endian, unsigned) as a DER `INTEGER`.
fn push_unsigned(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let trimmed = &bytes[start..];
    let pad = trimmed.first().is_none_or(|b| b & 0x80 != 0);
    out.push(INTEGER);
    push_len(out, trimmed.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(trimmed);
}

/// Appends a DER length.
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
}

/// A JWS ECDSA signature (RFC 7518 §3.4: `r || s`, each the curve's size) as the ASN.1
/// `ECDSA-Sig-Value` `SEQUENCE { r INTEGER, s INTEGER }`. `None` when `fixed` is not
/// `2 * field_bytes` long.
pub(super) fn ecdsa_fixed_to_der(fixed: &[u8], field_bytes: usize) -> Option<Vec<u8>> {
    if fixed.len() != 2 * field_bytes {
        return None;
    }
    let (r, s) = fixed.split_at(field_bytes);
    let mut body = Vec::with_capacity(fixed.len() + 6);
    push_unsigned(&mut body, r);
    push_unsigned(&mut body, s);
    let mut out = vec![SEQUENCE];
    push_len(&mut out, body.len());
    out.extend_from_slice(&body);
    Some(out)
}

/// A certificate's key usage extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct KeyUsage {
    /// Whether the extension is marked critical.
    pub critical: bool,
    /// The named bits, bit 0 (`digitalSignature`) first: `KeyUsage ::= BIT STRING`.
    pub bits: u16,
}

impl KeyUsage {
    /// `digitalSignature (0)`.
    pub const DIGITAL_SIGNATURE: u16 = 1 << 0;
    /// The bits notation forbids on a signing certificate, with their RFC 5280 names:
    /// everything but `digitalSignature` and `nonRepudiation`.
    pub const FORBIDDEN_FOR_SIGNING: [(u16, &'static str); 7] = [
        (1 << 2, "keyEncipherment"),
        (1 << 3, "dataEncipherment"),
        (1 << 4, "keyAgreement"),
        (1 << 5, "keyCertSign"),
        (1 << 6, "cRLSign"),
        (1 << 7, "encipherOnly"),
        (1 << 8, "decipherOnly"),
    ];
}

/// The extensions of a certificate that notation's signing-certificate rules read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct UsageExtensions {
    /// The key usage extension, when present.
    pub key_usage: Option<KeyUsage>,
    /// The extended key usage purposes (each an OID's content bytes), when present.
    pub extended_key_usage: Option<Vec<Vec<u8>>>,
}

/// Reads the key usage and extended key usage extensions of a DER certificate. `None`
/// when the certificate (or one of those two extensions) is malformed.
pub(super) fn usage_extensions(cert: &[u8]) -> Option<UsageExtensions> {
    let (cert, _) = expect(cert, SEQUENCE)?;
    let (mut tbs, _) = expect(cert, SEQUENCE)?;
    let mut found = UsageExtensions::default();
    while !tbs.is_empty() {
        let (tag, contents, rest) = element(tbs)?;
        tbs = rest;
        if tag != EXTENSIONS {
            continue;
        }
        let (mut list, _) = expect(contents, SEQUENCE)?;
        while !list.is_empty() {
            let (ext, rest) = expect(list, SEQUENCE)?;
            list = rest;
            let (oid, ext) = expect(ext, OID)?;
            let (critical, ext) = match expect(ext, BOOLEAN) {
                Some((flag, rest)) => (flag.first().is_some_and(|b| *b != 0), rest),
                None => (false, ext),
            };
            let (value, _) = expect(ext, OCTET_STRING)?;
            if oid == OID_KEY_USAGE {
                let (bits, _) = expect(value, BIT_STRING)?;
                let (_unused, bytes) = bits.split_first()?;
                let lo = u16::from(bytes.first().copied().unwrap_or(0).reverse_bits());
                let hi = u16::from(bytes.get(1).copied().unwrap_or(0).reverse_bits());
                found.key_usage = Some(KeyUsage { critical, bits: lo | (hi << 8) });
            } else if oid == OID_EXT_KEY_USAGE {
                let (mut purposes, _) = expect(value, SEQUENCE)?;
                let mut oids = Vec::new();
                while !purposes.is_empty() {
                    let (purpose, rest) = expect(purposes, OID)?;
                    oids.push(purpose.to_vec());
                    purposes = rest;
                }
                found.extended_key_usage = Some(oids);
            }
        }
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_ecdsa_signatures_become_der_integers() {
        // A high bit gets a 0x00 pad; leading zeros are dropped (X.690 §8.3.2).
        let mut fixed = vec![0u8; 64];
        fixed[0] = 0x80;
        fixed[63] = 0x01;
        let der = ecdsa_fixed_to_der(&fixed, 32).expect("64 bytes for P-256");
        assert_eq!(&der[..5], &[0x30, 0x26, 0x02, 0x21, 0x00]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x01]);
        assert_eq!(ecdsa_fixed_to_der(&fixed, 48), None);
        assert_eq!(ecdsa_fixed_to_der(&[0u8; 64], 32).as_deref(), Some(&[0x30, 6, 2, 1, 0, 2, 1, 0][..]));
    }

    #[test]
    fn rsa_modulus_size() {
        // SEQUENCE { INTEGER 0x00 0xc1 0x00 (2 significant bytes, top bit set), INTEGER 3 }
        assert_eq!(rsa_modulus_bits(&[0x30, 0x08, 0x02, 0x03, 0x00, 0xc1, 0x00, 0x02, 0x01, 0x03]), Some(16));
        assert_eq!(rsa_modulus_bits(&[0x30, 0x01]), None);
    }
}
