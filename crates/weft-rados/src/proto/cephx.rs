//! CephX: keys and keyrings, AES-128-CBC "encode_encrypt" envelopes, the
//! client side of GET_AUTH_SESSION_KEY (server challenge), service tickets
//! (also GET_PRINCIPAL_SESSION_KEY), and authorizers with the v2 challenge.
//! Randomness (challenges, nonces) and time come in as arguments.

use super::enc::{DResult, DecodeError, Put, Reader};
use super::types::{EntityName, UTime};
use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use std::collections::BTreeMap;

type CbcEnc = cbc::Encryptor<aes::Aes128>;
type CbcDec = cbc::Decryptor<aes::Aes128>;

const CEPH_AES_IV: &[u8; 16] = b"cephsageyudagreg";
const AUTH_ENC_MAGIC: u64 = 0xff00_9cad_8826_aa55;
pub const CEPH_AUTH_CEPHX: u32 = 2;
pub const CEPHX_GET_AUTH_SESSION_KEY: u16 = 0x0100;
pub const CEPHX_GET_PRINCIPAL_SESSION_KEY: u16 = 0x0200;
const CRYPTO_AES: u16 = 1;
/// AUTH_MODE_MON: the boilerplate marker of a mon auth request.
pub const AUTH_MODE_MON: u8 = 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CephxError {
    #[error("bad key: {0}")]
    BadKey(String),
    #[error("keyring: {0}")]
    Keyring(String),
    #[error("decryption failed (wrong key?)")]
    Decrypt,
    #[error("bad magic in decrypted block (wrong key?)")]
    Magic,
    #[error("malformed cephx payload: {0}")]
    Decode(#[from] DecodeError),
    #[error("server refused authentication: {0}")]
    Refused(String),
    #[error("authorizer reply nonce mismatch")]
    Nonce,
}

/// A CryptoKey (AES-128 only, as Ceph uses).
#[derive(Clone, PartialEq, Eq)]
pub struct CryptoKey {
    pub created: UTime,
    pub secret: [u8; 16],
}

impl std::fmt::Debug for CryptoKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CryptoKey(..)") // never print secrets
    }
}

impl CryptoKey {
    /// Parses the base64 form used in keyrings and `--key`.
    pub fn from_base64(s: &str) -> Result<Self, CephxError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| CephxError::BadKey(format!("base64: {e}")))?;
        Self::decode(&mut Reader::new(&raw)).map_err(|e| CephxError::BadKey(e.to_string()))
    }
    /// The keyring form (base64 of type, created, length, secret).
    pub fn to_base64(&self) -> String {
        let mut b = Vec::with_capacity(28);
        b.put_u16_le(CRYPTO_AES);
        self.created.encode(&mut b);
        b.put_u16_le(16);
        b.extend_from_slice(&self.secret);
        base64::engine::general_purpose::STANDARD.encode(b)
    }
    pub fn decode(r: &mut Reader<'_>) -> DResult<Self> {
        let ty = r.u16("crypto_key.type")?;
        let created = UTime::decode(r)?;
        let len = r.u16("crypto_key.len")? as usize;
        let s = r.take(len, "crypto_key.secret")?;
        if ty != CRYPTO_AES || len != 16 {
            return Err(DecodeError::invalid("crypto_key", format!("type {ty} len {len}: only AES-128 is supported")));
        }
        let mut secret = [0u8; 16];
        secret.copy_from_slice(s);
        Ok(CryptoKey { created, secret })
    }
    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        CbcEnc::new(&self.secret.into(), CEPH_AES_IV.into()).encrypt_padded_vec_mut::<Pkcs7>(plain)
    }
    pub fn decrypt(&self, ct: &[u8]) -> Result<Vec<u8>, CephxError> {
        CbcDec::new(&self.secret.into(), CEPH_AES_IV.into())
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .map_err(|_| CephxError::Decrypt)
    }
    /// encode_encrypt_enc_bl: [u8 1][u64 magic][payload] encrypted.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let mut p = Vec::with_capacity(9 + payload.len());
        p.push(1);
        p.extend_from_slice(&AUTH_ENC_MAGIC.to_le_bytes());
        p.extend_from_slice(payload);
        self.encrypt(&p)
    }
    /// decode_decrypt_enc_bl: the inverse of `seal`, returns the payload.
    pub fn unseal(&self, ct: &[u8]) -> Result<Vec<u8>, CephxError> {
        let p = self.decrypt(ct)?;
        let mut r = Reader::new(&p);
        r.u8("enc.struct_v")?;
        if r.u64("enc.magic")? != AUTH_ENC_MAGIC {
            return Err(CephxError::Magic);
        }
        Ok(r.rest().to_vec())
    }
    /// encode_encrypt: `seal` wrapped in a u32 length.
    pub fn seal_blob(&self, payload: &[u8]) -> Vec<u8> {
        let c = self.seal(payload);
        let mut out = Vec::with_capacity(4 + c.len());
        out.put_blob(&c);
        out
    }
}

/// Parses a keyring file (`[client.admin]\n\tkey = ...`) and returns the
/// key for `name`.
pub fn keyring_lookup(text: &str, name: &EntityName) -> Result<CryptoKey, CephxError> {
    let want = name.to_string();
    let mut section = String::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.trim().to_string();
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            if k.trim() == "key" && section == want {
                return CryptoKey::from_base64(v.trim());
            }
        }
    }
    Err(CephxError::Keyring(format!("no key for {want}")))
}

/// A ticket for one service: session key, opaque blob, validity.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub service: u32,
    pub session_key: CryptoKey,
    pub secret_id: u64,
    pub blob: Vec<u8>,
    /// Validity in seconds as the server granted it; the driver turns it
    /// into a renewal deadline with its own clock.
    pub validity: UTime,
}

impl Ticket {
    /// CephXTicketBlob encoding.
    pub fn encode_blob(&self, out: &mut Vec<u8>) {
        out.push(1);
        out.extend_from_slice(&self.secret_id.to_le_bytes());
        out.put_blob(&self.blob);
    }
}

fn empty_ticket_blob(out: &mut Vec<u8>) {
    out.push(1);
    out.extend_from_slice(&0u64.to_le_bytes());
    out.put_u32_le(0);
}

use bytes::BufMut;

/// Decodes a CephXServiceTicketReply whose session keys are sealed with
/// `key`; `old` supplies session keys for encrypted (renewed) tickets.
pub fn decode_ticket_reply(
    r: &mut Reader<'_>,
    key: &CryptoKey,
    old: &BTreeMap<u32, Ticket>,
) -> Result<Vec<Ticket>, CephxError> {
    r.u8("ticket_reply.v")?;
    let n = r.count(5, "ticket_reply.count")?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let service = r.u32("ticket.service")?;
        r.u8("ticket.v")?;
        let sealed = r.blob("ticket.msg_a")?;
        let plain = key.unseal(sealed)?;
        let mut a = Reader::new(&plain);
        a.u8("service_ticket.v")?;
        let session_key = CryptoKey::decode(&mut a)?;
        let validity = UTime::decode(&mut a)?;
        let enc = r.u8("ticket.enc")?;
        let blob_bl: Vec<u8> = if enc != 0 {
            let sealed = r.blob("ticket.enc_blob")?;
            let k = old.get(&service).map(|t| &t.session_key).ok_or(CephxError::Decrypt)?;
            let p = k.unseal(sealed)?;
            // the sealed payload is itself a bufferlist
            let mut pr = Reader::new(&p);
            pr.blob("ticket.blob_bl")?.to_vec()
        } else {
            r.blob("ticket.blob_bl")?.to_vec()
        };
        let mut br = Reader::new(&blob_bl);
        br.u8("ticket_blob.v")?;
        let secret_id = br.u64("ticket_blob.secret_id")?;
        let blob = br.blob("ticket_blob.blob")?.to_vec();
        out.push(Ticket { service, session_key, secret_id, blob, validity });
    }
    Ok(out)
}

/// Client-side CephX state for a session with the monitors.
#[derive(Debug, Clone)]
pub struct CephxClient {
    pub name: EntityName,
    pub key: CryptoKey,
    /// Services we want tickets for (entity_type bits).
    pub want: u32,
    pub global_id: u64,
    pub server_challenge: Option<u64>,
    pub tickets: BTreeMap<u32, Ticket>,
}

/// What the mon told us at AUTH_DONE.
#[derive(Debug, Clone)]
pub struct AuthDone {
    pub session_key: CryptoKey,
    pub connection_secret: Vec<u8>,
}

impl CephxClient {
    pub fn new(name: EntityName, key: CryptoKey, want: u32) -> Self {
        CephxClient { name, key, want, global_id: 0, server_challenge: None, tickets: BTreeMap::new() }
    }

    /// The initial AUTH_REQUEST payload to a monitor.
    pub fn mon_initial_request(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.push(AUTH_MODE_MON);
        self.name.encode(&mut b);
        b.put_u64_le(self.global_id);
        b
    }

    /// Handles the server challenge (AUTH_REPLY_MORE payload) and builds
    /// GET_AUTH_SESSION_KEY. `client_challenge` is a fresh random u64.
    pub fn handle_challenge(&mut self, payload: &[u8], client_challenge: u64) -> Result<Vec<u8>, CephxError> {
        let mut r = Reader::new(payload);
        r.u8("server_challenge.v")?;
        let sc = r.u64("server_challenge")?;
        self.server_challenge = Some(sc);
        // key = xor-fold of the encrypted challenge blob (length prefix included)
        let mut blob = Vec::with_capacity(16);
        blob.put_u64_le(sc);
        blob.put_u64_le(client_challenge);
        let enc = self.key.seal_blob(&blob);
        let mut k = 0u64;
        for ch in enc.chunks_exact(8) {
            let mut a = [0u8; 8];
            a.copy_from_slice(ch);
            k ^= u64::from_le_bytes(a);
        }
        let mut b = Vec::new();
        b.put_u16_le(CEPHX_GET_AUTH_SESSION_KEY);
        b.push(3); // CephXAuthenticate v3: old_ticket always populated on reconnect
        b.put_u64_le(client_challenge);
        b.put_u64_le(k);
        match self.tickets.get(&super::types::entity_type::AUTH) {
            Some(t) => t.encode_blob(&mut b),
            None => empty_ticket_blob(&mut b),
        }
        b.put_u32_le(self.want | super::types::entity_type::AUTH);
        Ok(b)
    }

    /// Handles the AUTH_DONE payload from a monitor.
    pub fn handle_done(&mut self, global_id: u64, payload: &[u8]) -> Result<AuthDone, CephxError> {
        let mut r = Reader::new(payload);
        let rt = r.u16("cephx.response.type")?;
        let status = r.i32("cephx.response.status")?;
        if status != 0 {
            return Err(CephxError::Refused(format!("status {status}")));
        }
        if rt != CEPHX_GET_AUTH_SESSION_KEY {
            return Err(CephxError::Refused(format!("unexpected response type {rt:#x}")));
        }
        let got = decode_ticket_reply(&mut r, &self.key, &self.tickets)?;
        for t in got {
            self.tickets.insert(t.service, t);
        }
        let auth = self
            .tickets
            .get(&super::types::entity_type::AUTH)
            .cloned()
            .ok_or_else(|| CephxError::Refused("no auth ticket in reply".into()))?;
        let mut connection_secret = Vec::new();
        if !r.is_empty() {
            let cbl = r.blob("cephx.connection_secret")?;
            let extra = r.blob("cephx.extra_tickets")?;
            if !cbl.is_empty() {
                let mut cr = Reader::new(cbl);
                let sealed = cr.blob("connection_secret.enc")?;
                let p = auth.session_key.unseal(sealed)?;
                connection_secret = Reader::new(&p).blob("connection_secret")?.to_vec();
            }
            if !extra.is_empty() {
                let got = decode_ticket_reply(&mut Reader::new(extra), &auth.session_key, &self.tickets)?;
                for t in got {
                    self.tickets.insert(t.service, t);
                }
            }
        }
        self.global_id = global_id;
        Ok(AuthDone { session_key: auth.session_key, connection_secret })
    }

    /// GET_PRINCIPAL_SESSION_KEY request (sent in an MAuth message) for
    /// the services in `keys`.
    pub fn principal_request(&self, keys: u32, nonce: u64) -> Option<Vec<u8>> {
        let auth = self.tickets.get(&super::types::entity_type::AUTH)?;
        let mut b = Vec::new();
        b.put_u16_le(CEPHX_GET_PRINCIPAL_SESSION_KEY);
        let a = Authorizer::build(self.global_id, auth, nonce);
        b.extend_from_slice(&a.bytes);
        b.push(1);
        b.put_u32_le(keys);
        Some(b)
    }

    /// Handles an MAuthReply to GET_PRINCIPAL_SESSION_KEY.
    pub fn handle_principal_reply(&mut self, payload: &[u8]) -> Result<(), CephxError> {
        let mut r = Reader::new(payload);
        let rt = r.u16("cephx.response.type")?;
        let status = r.i32("cephx.response.status")?;
        if status != 0 || rt != CEPHX_GET_PRINCIPAL_SESSION_KEY {
            return Err(CephxError::Refused(format!("principal reply type {rt:#x} status {status}")));
        }
        let auth = self
            .tickets
            .get(&super::types::entity_type::AUTH)
            .cloned()
            .ok_or_else(|| CephxError::Refused("no auth ticket".into()))?;
        let got = decode_ticket_reply(&mut r, &auth.session_key, &self.tickets)?;
        for t in got {
            self.tickets.insert(t.service, t);
        }
        Ok(())
    }
}

/// An authorizer for a service connection (OSD, MGR): the plain part plus
/// the sealed CephXAuthorize, rebuilt when the server sends a challenge.
#[derive(Debug, Clone)]
pub struct Authorizer {
    pub bytes: Vec<u8>,
    base_len: usize,
    pub nonce: u64,
    pub session_key: CryptoKey,
}

impl Authorizer {
    pub fn build(global_id: u64, t: &Ticket, nonce: u64) -> Self {
        let mut b = Vec::new();
        b.push(1);
        b.put_u64_le(global_id);
        b.put_u32_le(t.service);
        t.encode_blob(&mut b);
        let base_len = b.len();
        let mut msg = Vec::new();
        msg.push(2); // CephXAuthorize v2
        msg.put_u64_le(nonce);
        msg.push(0); // have_challenge
        msg.put_u64_le(0);
        b.extend_from_slice(&t.session_key.seal_blob(&msg));
        Authorizer { bytes: b, base_len, nonce, session_key: t.session_key.clone() }
    }

    /// Answers the server's CephXAuthorizeChallenge (AUTH_REPLY_MORE).
    pub fn add_challenge(&mut self, challenge: &[u8]) -> Result<(), CephxError> {
        let p = self.session_key.unseal(challenge)?;
        let mut r = Reader::new(&p);
        r.u8("authorize_challenge.v")?;
        let sc = r.u64("authorize_challenge")?;
        let mut msg = Vec::new();
        msg.push(2);
        msg.put_u64_le(self.nonce);
        msg.push(1);
        msg.put_u64_le(sc.wrapping_add(1));
        self.bytes.truncate(self.base_len);
        self.bytes.extend_from_slice(&self.session_key.seal_blob(&msg));
        Ok(())
    }

    /// Verifies CephXAuthorizeReply (AUTH_DONE payload), returning the
    /// connection secret.
    pub fn verify_reply(&self, payload: &[u8]) -> Result<Vec<u8>, CephxError> {
        let mut r = Reader::new(payload);
        let sealed = r.blob("authorize_reply")?;
        let p = self.session_key.unseal(sealed)?;
        let mut pr = Reader::new(&p);
        let v = pr.u8("authorize_reply.v")?;
        let n = pr.u64("authorize_reply.nonce_plus_one")?;
        if n != self.nonce.wrapping_add(1) {
            return Err(CephxError::Nonce);
        }
        if v >= 2 {
            return Ok(pr.blob("authorize_reply.secret")?.to_vec());
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AQBUQJ9lAAAAABAAsrqjTv2ZSdXcMpmYQhaJzA==";

    #[test]
    fn key_and_keyring() {
        let k = CryptoKey::from_base64(KEY).unwrap();
        assert_eq!(k.to_base64(), KEY);
        let ring = format!("[client.admin]\n\tkey = {KEY}\n\tcaps mon = \"allow *\"\n");
        let k2 = keyring_lookup(&ring, &EntityName::client("admin")).unwrap();
        assert_eq!(k, k2);
        assert!(keyring_lookup(&ring, &EntityName::client("bob")).is_err());
        assert!(CryptoKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn seal_unseal_and_wrong_key() {
        let k = CryptoKey::from_base64(KEY).unwrap();
        let c = k.seal(b"hello");
        assert_eq!(c.len() % 16, 0);
        assert_eq!(k.unseal(&c).unwrap(), b"hello");
        let mut other = k.clone();
        other.secret[0] ^= 1;
        assert!(other.unseal(&c).is_err());
    }

    #[test]
    fn challenge_key_is_xor_of_36_bytes() {
        let k = CryptoKey::from_base64(KEY).unwrap();
        let mut c = CephxClient::new(EntityName::client("admin"), k, 0x15);
        let mut ch = vec![1u8];
        ch.extend_from_slice(&42u64.to_le_bytes());
        let req = c.handle_challenge(&ch, 7).unwrap();
        assert_eq!(&req[..2], &CEPHX_GET_AUTH_SESSION_KEY.to_le_bytes());
        assert_eq!(req[2], 3);
        // 2 + 1 + 8 + 8 + (1 + 8 + 4) + 4
        assert_eq!(req.len(), 36);
    }

    #[test]
    fn authorizer_challenge_roundtrip() {
        let k = CryptoKey::from_base64(KEY).unwrap();
        let t = Ticket { service: 4, session_key: k.clone(), secret_id: 9, blob: vec![1, 2, 3], validity: UTime::default() };
        let mut a = Authorizer::build(4242, &t, 77);
        let before = a.bytes.clone();
        let mut chal = vec![1u8];
        chal.extend_from_slice(&100u64.to_le_bytes());
        a.add_challenge(&k.seal(&chal)).unwrap();
        assert_ne!(a.bytes, before);
        let mut reply = vec![2u8];
        reply.extend_from_slice(&78u64.to_le_bytes());
        reply.put_blob(b"0123456789012345678901234567890123456789");
        let secret = a.verify_reply(&k.seal_blob(&reply)).unwrap();
        assert_eq!(secret.len(), 40);
    }
}
