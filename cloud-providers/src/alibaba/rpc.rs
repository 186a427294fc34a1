//! One signed RPC call over HTTP: sign, send, and turn the answer into a
//! typed body or a classified [`CloudError`]. No retry here: the
//! [`crate::CallGuard`] around every call decides that, and each attempt is
//! signed afresh (new nonce and timestamp), as the cloud requires.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::codes::{advice, classify};
use super::credentials::CredentialProvider;
use super::encode::encode_pairs;
use super::sign::{RpcCall, SignatureVersion, Stamp, sign_rpc};
use super::wire::ErrorBody;
use crate::Api;
use crate::error::{CloudError, CloudResult, ErrorClass};

/// ECS API version.
pub const ECS_VERSION: &str = "2014-05-26";
/// VPC API version.
pub const VPC_VERSION: &str = "2016-04-28";

/// Where one product's API answers.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `scheme://host[:port]`, no trailing slash.
    pub base: String,
    /// `host[:port]`, as sent (and signed) in the `Host` header.
    pub host: String,
}

impl Endpoint {
    /// Parses `https://ecs.cn-hangzhou.aliyuncs.com`, `http://127.0.0.1:8080`
    /// or a bare host (HTTPS assumed).
    pub fn parse(text: &str) -> Result<Self, String> {
        let with_scheme = if text.contains("://") { text.to_owned() } else { format!("https://{text}") };
        let url = reqwest::Url::parse(&with_scheme).map_err(|e| {
            format!("endpoint '{text}' is not a URL ({e}): give e.g. https://ecs.cn-hangzhou.aliyuncs.com")
        })?;
        let host = url.host_str().ok_or_else(|| format!("endpoint '{text}' has no host"))?;
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(Self { base: format!("{}://{host}", url.scheme()), host })
    }
}

/// Signs and sends RPC calls.
#[derive(Debug)]
pub struct RpcClient {
    http: reqwest::Client,
    credentials: CredentialProvider,
    signature: SignatureVersion,
    timeout: Duration,
}

/// One call: which API, what about, and its parameters.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    /// The operation (for errors and counters).
    pub api: Api,
    /// Action name on the wire.
    pub action: &'a str,
    /// API version.
    pub version: &'a str,
    /// The object the call is about (for error messages).
    pub object: &'a str,
    /// Parameters.
    pub params: &'a [(String, String)],
}

impl RpcClient {
    /// A client signing with `signature`.
    pub fn new(
        http: reqwest::Client,
        credentials: CredentialProvider,
        signature: SignatureVersion,
        timeout: Duration,
    ) -> Self {
        Self { http, credentials, signature, timeout }
    }

    /// One attempt of `call` at `endpoint`.
    pub async fn send<T: DeserializeOwned>(&self, endpoint: &Endpoint, call: Call<'_>) -> CloudResult<T> {
        let fail =
            |class, code: &str, message: String| CloudError::new(call.api, class, code, call.object, message);
        let creds = self
            .credentials
            .get()
            .await
            .map_err(|e| fail(ErrorClass::Auth, "CredentialsUnavailable", e.to_string()))?;
        let rpc =
            RpcCall { host: &endpoint.host, action: call.action, version: call.version, params: call.params };
        let signed = sign_rpc(&rpc, &creds, self.signature, &Stamp::now());
        let url = format!("{}/?{}", endpoint.base, encode_pairs(&signed.query));
        let mut request = self.http.post(url).timeout(self.timeout);
        for (name, value) in &signed.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request.send().await.map_err(|e| {
            let code = if e.is_timeout() { "RequestTimeout" } else { "RequestFailed" };
            fail(
                ErrorClass::Transient,
                code,
                format!("{} at {}: {e}; check the endpoint and the network", call.action, endpoint.base),
            )
        })?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| {
            fail(
                ErrorClass::Transient,
                "ResponseIncomplete",
                format!("reading the answer to {}: {e}", call.action),
            )
        })?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| {
                fail(
                    ErrorClass::Transient,
                    "MalformedResponse",
                    format!(
                        "the answer to {} is not the expected JSON ({e}); is the endpoint an Alibaba API?",
                        call.action
                    ),
                )
            });
        }
        let error: ErrorBody = serde_json::from_slice(&body).unwrap_or_else(|_| ErrorBody {
            code: format!("Http{status}"),
            message: String::from_utf8_lossy(&body).chars().take(200).collect(),
            ..ErrorBody::default()
        });
        let class = classify(&error.code, status);
        if error.code.starts_with("InvalidSecurityToken") {
            // An expired or revoked STS key: the next attempt fetches new keys
            // instead of signing with these again.
            self.credentials.refused(&creds.access_key_id).await;
        }
        tracing::debug!(op = call.action, object = call.object, code = %error.code, status, request_id = %error.request_id, "cloud call refused");
        Err(fail(
            class,
            &error.code,
            format!("{} (HTTP {status}, request {}); {}", error.message, error.request_id, advice(class)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_an_explicit_port_and_default_to_https() {
        let e = Endpoint::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!((e.base.as_str(), e.host.as_str()), ("http://127.0.0.1:8080", "127.0.0.1:8080"));
        let e = Endpoint::parse("ecs.cn-hangzhou.aliyuncs.com").unwrap();
        assert_eq!(
            (e.base.as_str(), e.host.as_str()),
            ("https://ecs.cn-hangzhou.aliyuncs.com", "ecs.cn-hangzhou.aliyuncs.com")
        );
        assert!(Endpoint::parse("http://").unwrap_err().contains("endpoint"));
    }
}
