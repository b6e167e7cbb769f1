//! Just enough DER to name the holder of a verified client certificate: the
//! subject's common name and the subject alternative names. rustls has
//! already verified the certificate; this only reads it. Sans-IO, bounded:
//! every length is checked against the bytes actually present, the nesting
//! is fixed by the walk (no recursion on input), and at most
//! [`MAX_NAMES`] names are kept.

/// Names kept from one certificate (a SAN extension can list thousands).
pub const MAX_NAMES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum X509Error {
    #[error("certificate DER truncated or malformed at {0}")]
    Malformed(&'static str),
}

/// Who a certificate names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    pub common_name: Option<String>,
    /// dNSName, rfc822Name (as `email:`), URI (as given) and IP (as text)
    /// entries of the subject alternative name extension, in order.
    pub alt_names: Vec<String>,
}

impl CertNames {
    /// The identity shown to handlers and logs: the common name, else the
    /// first alternative name.
    pub fn identity(&self) -> Option<String> {
        self.common_name.clone().or_else(|| self.alt_names.first().cloned())
    }
}

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_OCTETS: u8 = 0x04;
const TAG_BOOLEAN: u8 = 0x01;
const TAG_VERSION: u8 = 0xa0;
const TAG_EXTENSIONS: u8 = 0xa3;
/// id-at-commonName, 2.5.4.3.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
/// id-ce-subjectAltName, 2.5.29.17.
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// A cursor over DER TLVs.
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self { rest: b }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next TLV: (tag, contents).
    fn next(&mut self, what: &'static str) -> Result<(u8, &'a [u8]), X509Error> {
        let bad = || X509Error::Malformed(what);
        let (&tag, rest) = self.rest.split_first().ok_or_else(bad)?;
        // High-tag-number form never occurs in the parts we read.
        if tag & 0x1f == 0x1f {
            return Err(bad());
        }
        let (&first, mut rest) = rest.split_first().ok_or_else(bad)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            // At most 4 length bytes: no certificate is 4 GiB.
            if n == 0 || n > 4 {
                return Err(bad());
            }
            let (bytes, after) = rest.split_at_checked(n).ok_or_else(bad)?;
            rest = after;
            bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        };
        let (contents, after) = rest.split_at_checked(len).ok_or_else(bad)?;
        self.rest = after;
        Ok((tag, contents))
    }

    fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], X509Error> {
        match self.next(what)? {
            (t, c) if t == tag => Ok(c),
            _ => Err(X509Error::Malformed(what)),
        }
    }
}

/// The validity period of a DER certificate: (notBefore, notAfter) in
/// seconds since the Unix epoch. Used to refuse loading an expired or not
/// yet valid server certificate (tls_reload.rs) with a clear error.
pub fn cert_validity(der: &[u8]) -> Result<(i64, i64), X509Error> {
    let cert = Der::new(der).expect(TAG_SEQUENCE, "certificate")?;
    let mut tbs = Der::new(Der::new(cert).expect(TAG_SEQUENCE, "tbsCertificate")?);
    if tbs.peek_tag() == Some(TAG_VERSION) {
        tbs.next("version")?;
    }
    tbs.next("serialNumber")?;
    tbs.expect(TAG_SEQUENCE, "signature")?;
    tbs.expect(TAG_SEQUENCE, "issuer")?;
    let mut v = Der::new(tbs.expect(TAG_SEQUENCE, "validity")?);
    let (t1, nb) = v.next("notBefore")?;
    let (t2, na) = v.next("notAfter")?;
    Ok((der_time(t1, nb)?, der_time(t2, na)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`, tag 0x18) as Unix seconds.
fn der_time(tag: u8, b: &[u8]) -> Result<i64, X509Error> {
    let bad = || X509Error::Malformed("validity time");
    let digits = |r: std::ops::Range<usize>| -> Result<i64, X509Error> {
        let s = b.get(r).ok_or_else(bad)?;
        s.iter().try_fold(0i64, |acc, c| if c.is_ascii_digit() { Ok(acc * 10 + i64::from(c - b'0')) } else { Err(bad()) })
    };
    let (year, rest) = match (tag, b.len()) {
        (0x17, 13) => {
            let yy = digits(0..2)?;
            // RFC 5280 4.1.2.5.1: 50..99 are 19xx, 00..49 are 20xx.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        (0x18, 15) => (digits(0..4)?, 4),
        _ => return Err(bad()),
    };
    if b.last() != Some(&b'Z') {
        return Err(bad());
    }
    let (mo, d, h, mi, se) =
        (digits(rest..rest + 2)?, digits(rest + 2..rest + 4)?, digits(rest + 4..rest + 6)?, digits(rest + 6..rest + 8)?, digits(rest + 8..rest + 10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + h * 3600 + mi * 60 + se)
}

/// Reads the subject common name and alternative names of a DER certificate.
pub fn cert_names(der: &[u8]) -> Result<CertNames, X509Error> {
    let cert = Der::new(der).expect(TAG_SEQUENCE, "certificate")?;
    let mut tbs = Der::new(Der::new(cert).expect(TAG_SEQUENCE, "tbsCertificate")?);
    if tbs.peek_tag() == Some(TAG_VERSION) {
        tbs.next("version")?;
    }
    tbs.next("serialNumber")?;
    tbs.expect(TAG_SEQUENCE, "signature")?;
    tbs.expect(TAG_SEQUENCE, "issuer")?;
    tbs.expect(TAG_SEQUENCE, "validity")?;
    let subject = tbs.expect(TAG_SEQUENCE, "subject")?;
    tbs.expect(TAG_SEQUENCE, "subjectPublicKeyInfo")?;
    let mut names = CertNames { common_name: common_name(subject)?, alt_names: vec![] };
    // issuerUniqueID [1], subjectUniqueID [2], then extensions [3].
    while !tbs.is_empty() {
        let (tag, contents) = tbs.next("tbsCertificate tail")?;
        if tag == TAG_EXTENSIONS {
            names.alt_names = alt_names(contents)?;
        }
    }
    Ok(names)
}

fn common_name(subject: &[u8]) -> Result<Option<String>, X509Error> {
    let mut rdns = Der::new(subject);
    while !rdns.is_empty() {
        let mut set = Der::new(rdns.expect(TAG_SET, "RelativeDistinguishedName")?);
        while !set.is_empty() {
            let mut atv = Der::new(set.expect(TAG_SEQUENCE, "AttributeTypeAndValue")?);
            let oid = atv.expect(TAG_OID, "attribute type")?;
            let (tag, value) = atv.next("attribute value")?;
            if oid == OID_CN {
                return Ok(Some(directory_string(tag, value)));
            }
        }
    }
    Ok(None)
}

/// UTF8String, PrintableString, IA5String, TeletexString as text; BMPString
/// as UTF-16BE; anything else lossily.
fn directory_string(tag: u8, value: &[u8]) -> String {
    if tag == 0x1e {
        let units: Vec<u16> = value.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        return String::from_utf16_lossy(&units);
    }
    String::from_utf8_lossy(value).into_owned()
}

fn alt_names(extensions: &[u8]) -> Result<Vec<String>, X509Error> {
    let mut list = Der::new(Der::new(extensions).expect(TAG_SEQUENCE, "extensions")?);
    while !list.is_empty() {
        let mut ext = Der::new(list.expect(TAG_SEQUENCE, "extension")?);
        let oid = ext.expect(TAG_OID, "extension id")?;
        if ext.peek_tag() == Some(TAG_BOOLEAN) {
            ext.next("critical")?;
        }
        let value = ext.expect(TAG_OCTETS, "extension value")?;
        if oid != OID_SAN {
            continue;
        }
        let mut general = Der::new(Der::new(value).expect(TAG_SEQUENCE, "subjectAltName")?);
        let mut out = vec![];
        while !general.is_empty() && out.len() < MAX_NAMES {
            let (tag, v) = general.next("GeneralName")?;
            match tag {
                0x81 => out.push(format!("email:{}", String::from_utf8_lossy(v))),
                0x82 | 0x86 => out.push(String::from_utf8_lossy(v).into_owned()),
                0x87 => {
                    if let Ok(b) = <[u8; 4]>::try_from(v) {
                        out.push(std::net::Ipv4Addr::from(b).to_string());
                    } else if let Ok(b) = <[u8; 16]>::try_from(v) {
                        out.push(std::net::Ipv6Addr::from(b).to_string());
                    }
                }
                _ => {}
            }
        }
        return Ok(out);
    }
    Ok(vec![])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: Option<&str>, sans: &[&str]) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::OrganizationName, "weft tests");
        if let Some(cn) = cn {
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn names_from_rcgen_certificates() {
        let n = cert_names(&cert(Some("alice"), &["alice.example", "127.0.0.1"])).unwrap();
        assert_eq!(n.common_name.as_deref(), Some("alice"));
        assert_eq!(n.alt_names, vec!["alice.example".to_owned(), "127.0.0.1".to_owned()]);
        assert_eq!(n.identity().as_deref(), Some("alice"));
        let n = cert_names(&cert(None, &["bob.example"])).unwrap();
        assert_eq!(n.common_name, None);
        assert_eq!(n.identity().as_deref(), Some("bob.example"));
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let der = cert(Some("carol"), &["carol.example"]);
        for cut in 0..der.len() {
            assert!(cert_names(&der[..cut]).is_err() || cut == der.len(), "prefix {cut} accepted");
        }
        for i in 0..der.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut d = der.clone();
                d[i] ^= flip;
                let _ = cert_names(&d);
            }
        }
        assert!(cert_names(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(cert_names(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
        assert!(cert_names(&[0x3f, 0x00]).is_err());
        assert!(cert_names(&[]).is_err());
    }
}
