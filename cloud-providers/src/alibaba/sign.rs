//! Alibaba Cloud OpenAPI request signing, V3 (`ACS3-HMAC-SHA256`) and V1
//! (`HMAC-SHA1`, RPC style). The one implementation: the client signs with
//! it and the emulator verifies by recomputing with it (`verify.rs`).
//! The rules are those observed in the official SDKs and written down in
//! `tests/fixtures/alibaba/README.md`.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::credentials::Credentials;
use super::encode::encode;

/// V3 algorithm name, also the `Authorization` scheme.
pub const V3_ALGORITHM: &str = "ACS3-HMAC-SHA256";
/// V1 `SignatureMethod`.
pub const V1_METHOD: &str = "HMAC-SHA1";
/// SHA-256 of an empty body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Which signature a request carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureVersion {
    /// `ACS3-HMAC-SHA256` in the `Authorization` header (the SDKs' default).
    #[default]
    V3,
    /// `HMAC-SHA1` in the `Signature` query parameter.
    V1,
}

impl std::str::FromStr for SignatureVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v3" | "V3" => Ok(Self::V3),
            "v1" | "V1" => Ok(Self::V1),
            other => Err(format!("unknown signature version '{other}': use v3 or v1")),
        }
    }
}

/// Lower-case hex SHA-256.
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes).as_slice())
}

fn hmac_sha256_hex(key: &[u8], message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes().as_slice())
}

/// `name=encoded(value)` pairs sorted by name (code-point order), then value,
/// joined with `&`. Used by V3 for the canonical query and by V1 (with names
/// encoded too, which changes nothing for the names the APIs use).
pub fn canonical_query(pairs: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
    sorted.sort();
    sorted.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

/// The V3 canonical headers (`name:value\n` lines, names lower-cased, values
/// trimmed, sorted) and the `SignedHeaders` list, over the given headers.
pub fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut lines: Vec<(String, &str)> =
        headers.iter().map(|(name, value)| (name.to_ascii_lowercase(), value.trim())).collect();
    lines.sort();
    let canonical = lines.iter().map(|(name, value)| format!("{name}:{value}\n")).collect();
    let signed = lines.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(";");
    (canonical, signed)
}

/// What a V3 signature is computed over.
#[derive(Clone, Copy, Debug)]
pub struct V3Input<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Request path (`/` for every RPC call).
    pub path: &'a str,
    /// Decoded query parameters.
    pub query: &'a [(String, String)],
    /// The signed headers, with their values as sent.
    pub headers: &'a [(String, String)],
    /// Lower-case hex SHA-256 of the body.
    pub hashed_payload: &'a str,
}

/// A V3 signature and the strings it came from (for diagnostics and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V3Signature {
    /// The canonical request.
    pub canonical_request: String,
    /// `ACS3-HMAC-SHA256\n` + hex SHA-256 of the canonical request.
    pub string_to_sign: String,
    /// `SignedHeaders` list.
    pub signed_headers: String,
    /// Lower-case hex HMAC-SHA256.
    pub signature: String,
}

/// Computes a V3 signature with `secret`.
pub fn sign_v3(input: &V3Input<'_>, secret: &str) -> V3Signature {
    let (headers, signed_headers) = canonical_headers(input.headers);
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        input.method,
        input.path,
        canonical_query(input.query),
        headers,
        signed_headers,
        input.hashed_payload
    );
    let string_to_sign = format!("{V3_ALGORITHM}\n{}", hex_sha256(canonical_request.as_bytes()));
    let signature = hmac_sha256_hex(secret.as_bytes(), &string_to_sign);
    V3Signature { canonical_request, string_to_sign, signed_headers, signature }
}

/// The V3 `Authorization` header value.
pub fn v3_authorization(access_key_id: &str, signature: &V3Signature) -> String {
    format!(
        "{V3_ALGORITHM} Credential={access_key_id},SignedHeaders={},Signature={}",
        signature.signed_headers, signature.signature
    )
}

/// The V1 string to sign over every signed parameter (all but `Signature`).
pub fn v1_string_to_sign(method: &str, params: &[(String, String)]) -> String {
    format!("{method}&{}&{}", encode("/"), encode(&canonical_query(params)))
}

/// Base64 HMAC-SHA1 of the V1 string to sign, key = secret + `&`.
pub fn sign_v1(string_to_sign: &str, secret: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes()).expect("any key length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes().as_slice())
}

/// Compares two signatures without an early exit.
pub fn same_signature(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One RPC call to sign: the operation's own parameters, flattened.
#[derive(Clone, Copy, Debug)]
pub struct RpcCall<'a> {
    /// `host[:port]` as the `Host` header carries it.
    pub host: &'a str,
    /// Action name (`CreateNetworkInterface`).
    pub action: &'a str,
    /// API version (`2014-05-26`).
    pub version: &'a str,
    /// Parameters (`Name.N`, `Tag.N.Key`), values as strings.
    pub params: &'a [(String, String)],
}

/// What makes one signature unique: the time and a never-reused nonce.
#[derive(Clone, Debug)]
pub struct Stamp {
    /// UTC `yyyy-MM-ddTHH:mm:ssZ`.
    pub timestamp: String,
    /// A fresh random nonce.
    pub nonce: String,
}

impl Stamp {
    /// Now, with a random UUID nonce.
    pub fn now() -> Self {
        Self {
            timestamp: format_timestamp(time::OffsetDateTime::now_utc()),
            nonce: uuid::Uuid::new_v4().to_string(),
        }
    }
}

const TIMESTAMP: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// Formats a UTC instant as the signers want it.
pub fn format_timestamp(at: time::OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC).format(TIMESTAMP).expect("a UTC instant always formats")
}

/// Parses `yyyy-MM-ddTHH:mm:ssZ`.
pub fn parse_timestamp(text: &str) -> Option<time::OffsetDateTime> {
    time::PrimitiveDateTime::parse(text, TIMESTAMP).ok().map(|t| t.assume_utc())
}

/// A request ready for the wire: `POST /` with these query pairs (to be
/// encoded with [`super::encode::encode_pairs`]), these headers, no body.
#[derive(Clone, Debug)]
pub struct SignedRpc {
    /// Query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Headers to send (including `host`).
    pub headers: Vec<(String, String)>,
}

/// Signs an RPC call as `POST /` with every parameter in the query.
pub fn sign_rpc(
    call: &RpcCall<'_>,
    creds: &Credentials,
    version: SignatureVersion,
    stamp: &Stamp,
) -> SignedRpc {
    match version {
        SignatureVersion::V3 => {
            let mut headers: Vec<(String, String)> = vec![
                ("host".into(), call.host.into()),
                ("x-acs-action".into(), call.action.into()),
                ("x-acs-version".into(), call.version.into()),
                ("x-acs-date".into(), stamp.timestamp.clone()),
                ("x-acs-signature-nonce".into(), stamp.nonce.clone()),
                ("accept".into(), "application/json".into()),
                ("x-acs-content-sha256".into(), EMPTY_SHA256.into()),
            ];
            if let Some(token) = &creds.security_token {
                headers.push(("x-acs-accesskey-id".into(), creds.access_key_id.clone()));
                headers.push(("x-acs-security-token".into(), token.clone()));
            }
            let input = V3Input {
                method: "POST",
                path: "/",
                query: call.params,
                headers: &headers,
                hashed_payload: EMPTY_SHA256,
            };
            let signature = sign_v3(&input, &creds.access_key_secret);
            headers.push(("authorization".into(), v3_authorization(&creds.access_key_id, &signature)));
            SignedRpc { query: call.params.to_vec(), headers }
        }
        SignatureVersion::V1 => {
            let mut query = call.params.to_vec();
            let common = [
                ("Action", call.action),
                ("Format", "JSON"),
                ("Version", call.version),
                ("Timestamp", &stamp.timestamp),
                ("SignatureNonce", &stamp.nonce),
                ("SignatureMethod", V1_METHOD),
                ("SignatureVersion", "1.0"),
                ("AccessKeyId", &creds.access_key_id),
            ];
            query.extend(common.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            if let Some(token) = &creds.security_token {
                query.push(("SecurityToken".into(), token.clone()));
            }
            let signature = sign_v1(&v1_string_to_sign("POST", &query), &creds.access_key_secret);
            query.push(("Signature".into(), signature));
            let headers = vec![
                ("host".into(), call.host.into()),
                ("x-acs-action".into(), call.action.into()),
                ("x-acs-version".into(), call.version.into()),
                ("accept".into(), "application/json".into()),
            ];
            SignedRpc { query, headers }
        }
    }
}
