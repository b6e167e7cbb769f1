//! Credential strings: bearer tokens `wt.<id>.<secret>` and API keys
//! `wk.<id>.<secret>`. The id (8 random bytes, 16 lowercase hex characters)
//! is public: it names the credential in listings, revocation and logs. The
//! secret is 32 random bytes in base64url without padding (43 characters);
//! only its argon2 hash is stored.
//!
//! Parsing is a decoder over untrusted input: a length check first, then
//! borrowed slices, typed errors, no allocation.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

use crate::error::ParseError;

pub const TOKEN_PREFIX: &str = "wt";
pub const KEY_PREFIX: &str = "wk";
pub const ID_HEX_LEN: usize = 16;
pub const SECRET_B64_LEN: usize = 43;
/// `wt.` + id + `.` + secret.
pub const CREDENTIAL_LEN: usize = 3 + ID_HEX_LEN + 1 + SECRET_B64_LEN;
/// Longest input looked at; anything longer is refused before parsing.
pub const MAX_CREDENTIAL_BYTES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CredKind {
    Token,
    Key,
}

impl CredKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredKind::Token => "token",
            CredKind::Key => "key",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            CredKind::Token => TOKEN_PREFIX,
            CredKind::Key => KEY_PREFIX,
        }
    }
}

/// A parsed credential, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential<'a> {
    pub kind: CredKind,
    pub id: &'a str,
    pub secret: &'a str,
    /// The whole string (what the cache digests).
    pub full: &'a str,
}

/// Parse a token or API key.
pub fn parse_credential(s: &str) -> Result<Credential<'_>, ParseError> {
    if s.is_empty() {
        return Err(ParseError::Empty);
    }
    if s.len() > MAX_CREDENTIAL_BYTES {
        return Err(ParseError::TooLong { len: s.len(), max: MAX_CREDENTIAL_BYTES });
    }
    let mut parts = s.split('.');
    let kind = match parts.next() {
        Some(TOKEN_PREFIX) => CredKind::Token,
        Some(KEY_PREFIX) => CredKind::Key,
        _ => return Err(ParseError::UnknownPrefix),
    };
    let (Some(id), Some(secret), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ParseError::Shape);
    };
    if id.len() != ID_HEX_LEN || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(ParseError::BadId { expected: ID_HEX_LEN });
    }
    if secret.len() != SECRET_B64_LEN
        || !secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        // 43 characters carry 258 bits; the last two must be zero for the
        // string to be the canonical encoding of 32 bytes.
        || URL_SAFE_NO_PAD.decode_slice(secret, &mut [0u8; 33]) != Ok(32)
    {
        return Err(ParseError::BadSecret { expected: SECRET_B64_LEN });
    }
    Ok(Credential { kind, id, secret, full: s })
}

/// Parse an HTTP `Authorization` header value: `Bearer <token-or-key>` or
/// `ApiKey <key>` (scheme names are case-insensitive, as in RFC 9110).
pub fn parse_authorization(header: &str) -> Result<Credential<'_>, ParseError> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').ok_or(ParseError::BadScheme)?;
    let cred = parse_credential(rest.trim_start())?;
    if scheme.eq_ignore_ascii_case("bearer") || (scheme.eq_ignore_ascii_case("apikey") && cred.kind == CredKind::Key) {
        Ok(cred)
    } else {
        Err(ParseError::BadScheme)
    }
}

/// A new credential string and its id.
pub fn generate(kind: CredKind) -> (String, String) {
    let mut rng = rand::rngs::OsRng;
    let mut id = [0u8; ID_HEX_LEN / 2];
    rng.fill_bytes(&mut id);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let s = format!("{}.{}.{}", kind.prefix(), id, URL_SAFE_NO_PAD.encode(secret));
    (s, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for kind in [CredKind::Token, CredKind::Key] {
            let (s, id) = generate(kind);
            assert_eq!(s.len(), CREDENTIAL_LEN);
            let c = parse_credential(&s).unwrap();
            assert_eq!((c.kind, c.id), (kind, id.as_str()));
        }
    }

    #[test]
    fn typed_errors() {
        let (s, _) = generate(CredKind::Token);
        assert_eq!(parse_credential(""), Err(ParseError::Empty));
        assert_eq!(parse_credential(&"x".repeat(300)), Err(ParseError::TooLong { len: 300, max: 256 }));
        assert_eq!(parse_credential(&s.replacen("wt", "zz", 1)), Err(ParseError::UnknownPrefix));
        assert_eq!(parse_credential("wt.abc"), Err(ParseError::Shape));
        assert_eq!(parse_credential(&format!("{s}.x")), Err(ParseError::Shape));
        assert_eq!(parse_credential(&s.replacen(".", ".G", 1)), Err(ParseError::BadId { expected: 16 }));
        let mut bad = s.clone();
        bad.pop();
        bad.push('!');
        assert_eq!(parse_credential(&bad), Err(ParseError::BadSecret { expected: 43 }));
        assert!(parse_authorization(&format!("Bearer {s}")).is_ok());
        assert!(parse_authorization(&format!("bearer  {s}")).is_ok());
        assert_eq!(parse_authorization(&format!("ApiKey {s}")), Err(ParseError::BadScheme));
        let (k, _) = generate(CredKind::Key);
        assert!(parse_authorization(&format!("ApiKey {k}")).is_ok());
        assert_eq!(parse_authorization(&format!("Basic {k}")), Err(ParseError::BadScheme));
        assert_eq!(parse_authorization(&k), Err(ParseError::BadScheme));
    }
}
