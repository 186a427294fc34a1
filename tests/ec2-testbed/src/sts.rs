//! STS through the proxy: moto serves `AssumeRoleWithWebIdentity` (IRSA's
//! exchange) on the same endpoint, unsigned, and honours `DurationSeconds`
//! (no 900 s floor, unlike AWS). The SDK sends no DurationSeconds for web
//! identity, so the proxy may set one to make keys expire within a test.
//! Every key moto issues is recorded with its expiry, and EC2 calls signed
//! with an expired one are refused as AWS does (`ExpiredToken`), with an
//! unknown one as `AuthFailure`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::wire::{encode_form, value};

/// What the proxy saw of temporary keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// STS calls forwarded to moto.
    pub sts_calls: u64,
    /// Keys moto issued.
    pub issued: u64,
    /// Distinct issued keys that signed EC2 calls.
    pub used: u64,
    /// EC2 calls refused: signed with an expired key.
    pub expired_refusals: u64,
    /// EC2 calls refused: signed with a key STS never issued.
    pub unknown_refusals: u64,
}

/// Issued keys and their use.
#[derive(Debug, Default)]
pub struct SessionKeys {
    issued: Mutex<HashMap<String, OffsetDateTime>>,
    used: Mutex<BTreeSet<String>>,
    stats: Mutex<SessionStats>,
}

impl SessionKeys {
    /// Forwards an STS call to moto (with `duration` as DurationSeconds when
    /// given) and records the key it issues.
    pub async fn forward(
        &self,
        http: &reqwest::Client,
        upstream: &str,
        mut form: Vec<(String, String)>,
        duration: Option<Duration>,
    ) -> (u16, String) {
        if let Some(d) = duration {
            form.retain(|(k, _)| k != "DurationSeconds");
            form.push(("DurationSeconds".into(), d.as_secs().to_string()));
        }
        let pairs: Vec<(&str, String)> = form.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let response = http
            .post(upstream)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode_form(&pairs))
            .send()
            .await
            .expect("moto answers STS");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        self.stats.lock().expect("stats lock").sts_calls += 1;
        let expiry = value(&text, "Expiration").and_then(|e| OffsetDateTime::parse(&e, &Rfc3339).ok());
        if let (Some(key), Some(expiry)) = (value(&text, "AccessKeyId"), expiry) {
            self.issued.lock().expect("issued lock").insert(key, expiry);
            self.stats.lock().expect("stats lock").issued += 1;
        }
        (status, text)
    }

    /// `Err((status, code, message))` when an EC2 call signed with `key` must be refused.
    pub fn check(&self, key: &str, now: OffsetDateTime) -> Result<(), (u16, &'static str, String)> {
        let expiry = self.issued.lock().expect("issued lock").get(key).copied();
        let mut stats = self.stats.lock().expect("stats lock");
        match expiry {
            None => {
                stats.unknown_refusals += 1;
                Err((401, "AuthFailure", format!("access key {key} was not issued by STS")))
            }
            Some(at) if now >= at => {
                stats.expired_refusals += 1;
                Err((403, "ExpiredToken", "The security token included in the request is expired".into()))
            }
            Some(_) => {
                if self.used.lock().expect("used lock").insert(key.to_owned()) {
                    stats.used += 1;
                }
                Ok(())
            }
        }
    }

    /// What happened so far.
    pub fn stats(&self) -> SessionStats {
        self.stats.lock().expect("stats lock").clone()
    }
}
