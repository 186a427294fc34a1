//! Checks a received request's signature the way the cloud does: find the
//! caller's key, check the clock, recompute the signature with
//! [`super::sign`] and compare. Used by the emulator; the nonce cache and the
//! key store are the caller's.

use time::OffsetDateTime;

use super::credentials::Credentials;
use super::encode::decode_pairs;
use super::sign::{
    SignatureVersion, V1_METHOD, V3_ALGORITHM, V3Input, hex_sha256, parse_timestamp, same_signature, sign_v1,
    sign_v3, v1_string_to_sign,
};

/// A request as it arrived.
#[derive(Clone, Copy, Debug)]
pub struct Received<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path.
    pub path: &'a str,
    /// The raw query string (without `?`).
    pub query: &'a str,
    /// Every header, any case.
    pub headers: &'a [(String, String)],
    /// The body bytes.
    pub body: &'a [u8],
}

impl Received<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn form_body(&self) -> Vec<(String, String)> {
        let is_form = self
            .header("content-type")
            .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
        if is_form { decode_pairs(&String::from_utf8_lossy(self.body)) } else { Vec::new() }
    }
}

/// A request whose signature holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The caller's AccessKey id.
    pub access_key_id: String,
    /// Which signature it carried.
    pub version: SignatureVersion,
    /// Its nonce (for the caller's replay check).
    pub nonce: String,
    /// Its timestamp.
    pub timestamp: OffsetDateTime,
    /// Every parameter, query then form body, decoded (V1's common ones included).
    pub params: Vec<(String, String)>,
}

/// Why a request is refused, with the cloud's code and HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    /// The cloud's error code.
    pub code: &'static str,
    /// HTTP status it comes with.
    pub status: u16,
    /// What is wrong and what to do.
    pub message: String,
}

fn reject(code: &'static str, status: u16, message: impl Into<String>) -> Rejection {
    Rejection { code, status, message: message.into() }
}

/// How far a request's time may be from the server's.
pub const MAX_SKEW: time::Duration = time::Duration::minutes(15);

/// Verifies a request's signature. `keys` is the key store; `now` the
/// server's clock.
pub fn verify(
    request: &Received<'_>,
    keys: &dyn Fn(&str) -> Option<Credentials>,
    now: OffsetDateTime,
) -> Result<Verified, Rejection> {
    let query = decode_pairs(request.query);
    match request.header("authorization") {
        Some(auth) if auth.starts_with(V3_ALGORITHM) => verify_v3(request, auth, query, keys, now),
        Some(_) => Err(reject(
            "IncompleteSignature",
            400,
            format!(
                "the Authorization header is not {V3_ALGORITHM}: sign with V3 or put a V1 Signature in the query"
            ),
        )),
        None if query.iter().any(|(k, _)| k == "Signature") => verify_v1(request, query, keys, now),
        None => Err(reject(
            "IncompleteSignature",
            400,
            "the request is not signed: send an ACS3-HMAC-SHA256 Authorization header or a V1 Signature parameter",
        )),
    }
}

struct V3Auth<'a> {
    credential: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_v3_authorization(auth: &str) -> Option<V3Auth<'_>> {
    let rest = auth.strip_prefix(V3_ALGORITHM)?.trim_start();
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => return None,
        }
    }
    Some(V3Auth {
        credential: credential?,
        signed_headers: signed?.split(';').collect(),
        signature: signature?,
    })
}

/// Headers a V3 signature must cover.
const V3_REQUIRED: [&str; 6] =
    ["host", "x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"];

fn verify_v3(
    request: &Received<'_>,
    auth: &str,
    query: Vec<(String, String)>,
    keys: &dyn Fn(&str) -> Option<Credentials>,
    now: OffsetDateTime,
) -> Result<Verified, Rejection> {
    let parsed = parse_v3_authorization(auth).ok_or_else(|| {
        reject(
            "IncompleteSignature",
            400,
            "the Authorization header must be 'ACS3-HMAC-SHA256 Credential=<id>,SignedHeaders=<list>,Signature=<hex>'",
        )
    })?;
    for required in V3_REQUIRED {
        if !parsed.signed_headers.contains(&required) {
            return Err(reject(
                "IncompleteSignature",
                400,
                format!("SignedHeaders lacks '{required}': sign host and every x-acs-* header"),
            ));
        }
    }
    let token = request.header("x-acs-security-token");
    if token.is_some() && !parsed.signed_headers.contains(&"x-acs-security-token") {
        return Err(reject("IncompleteSignature", 400, "x-acs-security-token is sent but not signed"));
    }
    let creds = key_for(parsed.credential, token, keys)?;
    let date = request.header("x-acs-date").unwrap_or_default();
    let timestamp = check_time(date, now)?;
    let mut headers = Vec::with_capacity(parsed.signed_headers.len());
    for name in &parsed.signed_headers {
        let value = request.header(name).ok_or_else(|| {
            reject("IncompleteSignature", 400, format!("signed header '{name}' is not in the request"))
        })?;
        headers.push((name.to_string(), value.to_owned()));
    }
    let hashed_payload = hex_sha256(request.body);
    let input = V3Input {
        method: request.method,
        path: request.path,
        query: &query,
        headers: &headers,
        hashed_payload: &hashed_payload,
    };
    let expected = sign_v3(&input, &creds.access_key_secret);
    if !same_signature(&expected.signature, parsed.signature) {
        return Err(mismatch(&expected.string_to_sign));
    }
    let nonce = request.header("x-acs-signature-nonce").unwrap_or_default().to_owned();
    let mut params = query;
    params.extend(request.form_body());
    Ok(Verified {
        access_key_id: creds.access_key_id,
        version: SignatureVersion::V3,
        nonce,
        timestamp,
        params,
    })
}

fn verify_v1(
    request: &Received<'_>,
    query: Vec<(String, String)>,
    keys: &dyn Fn(&str) -> Option<Credentials>,
    now: OffsetDateTime,
) -> Result<Verified, Rejection> {
    let mut params = query;
    params.extend(request.form_body());
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let missing =
        |name: &str| reject("MissingParameter", 400, format!("V1 request lacks the {name} parameter"));
    let presented = get("Signature").ok_or_else(|| missing("Signature"))?.to_owned();
    let key_id = get("AccessKeyId").ok_or_else(|| missing("AccessKeyId"))?;
    if get("SignatureMethod") != Some(V1_METHOD) {
        return Err(reject("InvalidSignatureMethod", 400, format!("SignatureMethod must be {V1_METHOD}")));
    }
    let creds = key_for(key_id, get("SecurityToken"), keys)?;
    let timestamp = check_time(get("Timestamp").ok_or_else(|| missing("Timestamp"))?, now)?;
    let nonce = get("SignatureNonce").ok_or_else(|| missing("SignatureNonce"))?.to_owned();
    let signed: Vec<(String, String)> = params.iter().filter(|(k, _)| k != "Signature").cloned().collect();
    let string_to_sign = v1_string_to_sign(request.method, &signed);
    if !same_signature(&sign_v1(&string_to_sign, &creds.access_key_secret), &presented) {
        return Err(mismatch(&string_to_sign));
    }
    Ok(Verified {
        access_key_id: creds.access_key_id,
        version: SignatureVersion::V1,
        nonce,
        timestamp,
        params,
    })
}

fn key_for(
    key_id: &str,
    token: Option<&str>,
    keys: &dyn Fn(&str) -> Option<Credentials>,
) -> Result<Credentials, Rejection> {
    let creds = keys(key_id).ok_or_else(|| {
        reject(
            "InvalidAccessKeyId.NotFound",
            404,
            format!("AccessKey id '{key_id}' does not exist: check the key pair"),
        )
    })?;
    match (&creds.security_token, token) {
        (Some(_), None) => Err(reject(
            "MissingSecurityToken",
            400,
            format!("AccessKey '{key_id}' is an STS key: send its security token"),
        )),
        (Some(expected), Some(given)) if expected != given => Err(reject(
            "InvalidSecurityToken.MismatchWithAccessKey",
            400,
            format!(
                "the security token does not belong to AccessKey '{key_id}': refresh the STS credentials"
            ),
        )),
        _ => Ok(creds),
    }
}

fn check_time(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, Rejection> {
    let at = parse_timestamp(text).ok_or_else(|| {
        reject("InvalidTimeStamp.Format", 400, format!("timestamp '{text}' is not UTC yyyy-MM-ddTHH:mm:ssZ"))
    })?;
    if (at - now).abs() > MAX_SKEW {
        return Err(reject(
            "InvalidTimeStamp.Expired",
            400,
            format!(
                "timestamp {text} is more than 15 minutes from the server's clock: fix the client's clock"
            ),
        ));
    }
    Ok(at)
}

fn mismatch(string_to_sign: &str) -> Rejection {
    // The legacy SDK reads the text after the first ':' as the server's string to sign.
    reject(
        "SignatureDoesNotMatch",
        400,
        format!(
            "Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}"
        ),
    )
}
