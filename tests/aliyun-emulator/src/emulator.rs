//! The emulator's state around the fake cloud: the key store, the nonce
//! cache, ClientToken answers, injected faults, and the request pipeline
//! (verify the signature, check the nonce, inject, dispatch, render).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use eni_ipam_api::{EniId, VpcId};
use eni_ipam_cloud::CloudProfile;
use eni_ipam_cloud::alibaba::Credentials;
use eni_ipam_cloud::alibaba::encode::decode_pairs;
use eni_ipam_cloud::alibaba::sts::ASSUME_ROLE_WITH_OIDC;
use eni_ipam_cloud::alibaba::verify::{MAX_SKEW, Received, verify};
use eni_ipam_cloud::fake::{FakeCloud, Faults};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::identity::Identity;
use crate::params::{ApiError, Params};
use crate::seed::Seeded;

/// Faults to inject, from a file, the flags, or `POST /_emulator/faults`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultPlan {
    /// Added to every answer.
    pub latency_ms: u64,
    /// Share of calls (0..=1) answered `InternalError` (500) before any change.
    pub transient_rate: f64,
    /// Share of calls (0..=1) answered `Throttling.User` although the quota has room.
    pub throttle_rate: f64,
    /// Scripted error answers.
    pub errors: Vec<InjectedError>,
}

/// Answer the next `times` calls of `action` with `code`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectedError {
    /// Action name.
    pub action: String,
    /// Error code to answer.
    pub code: String,
    /// How many calls.
    pub times: u32,
}

/// Actions whose ClientToken makes a repeat return the first answer.
const IDEMPOTENT_BY_TOKEN: [&str; 2] = ["CreateNetworkInterface", "AssignPrivateIpAddresses"];

/// (AccessKey id, action, ClientToken).
type TokenKey = (String, String, String);
/// The parameters a token was first used with, and the answer given.
type TokenAnswer = (Vec<(String, String)>, Value);

/// The emulator.
#[derive(Debug)]
pub struct Emulator {
    pub(crate) cloud: FakeCloud,
    pub(crate) region: String,
    pub(crate) vpc: VpcId,
    pub(crate) security_groups: Mutex<HashMap<EniId, Vec<String>>>,
    nonces: Mutex<HashMap<String, OffsetDateTime>>,
    answers: Mutex<HashMap<TokenKey, TokenAnswer>>,
    faults: Mutex<FaultPlan>,
    /// What the seed created.
    pub seeded: Seeded,
    /// Keys, STS and the metadata service's RAM role.
    pub identity: Identity,
}

/// An answer: status and JSON body.
pub type Answer = (u16, Value);

impl Emulator {
    /// An emulator over `profile` with one VPC.
    pub fn new(profile: CloudProfile, region: String, vpc: VpcId, keys: Vec<Credentials>, seed: u64) -> Self {
        Self {
            cloud: FakeCloud::new(profile, vpc.clone(), seed),
            region,
            vpc,
            security_groups: Mutex::new(HashMap::new()),
            nonces: Mutex::new(HashMap::new()),
            answers: Mutex::new(HashMap::new()),
            faults: Mutex::new(FaultPlan::default()),
            seeded: Seeded::default(),
            identity: Identity::new(keys),
        }
    }

    /// Replaces the identity side (RRSA trust, RAM role, key lifetime); its keys join.
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = identity;
        self
    }

    /// The fake cloud (console access for dumps and tests).
    pub fn cloud(&self) -> &FakeCloud {
        &self.cloud
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, plan: FaultPlan) {
        self.cloud
            .set_faults(Faults { transient_rate: plan.transient_rate, throttle_rate: plan.throttle_rate });
        *self.faults.lock().expect("faults lock") = plan;
    }

    /// The injected faults now.
    pub fn faults(&self) -> FaultPlan {
        self.faults.lock().expect("faults lock").clone()
    }

    fn injected(&self, action: &str) -> Option<ApiError> {
        let mut plan = self.faults.lock().expect("faults lock");
        let slot = plan.errors.iter_mut().find(|e| e.action == action && e.times > 0)?;
        slot.times -= 1;
        Some(ApiError::new(&slot.code, format!("injected by the emulator's fault plan for {action}")))
    }

    fn check_nonce(&self, key: &str, nonce: &str, now: OffsetDateTime) -> Result<(), ApiError> {
        let mut nonces = self.nonces.lock().expect("nonce lock");
        if nonces.len() > 100_000 {
            nonces.retain(|_, at| now - *at < MAX_SKEW * 2);
        }
        if nonces.insert(format!("{key}\n{nonce}"), now).is_some() {
            return Err(ApiError::new(
                "SignatureNonceUsed",
                format!(
                    "nonce '{nonce}' was used already: sign every request, retries included, with a fresh nonce"
                ),
            ));
        }
        Ok(())
    }

    /// Serves one OpenAPI request, whatever it is: never panics on input.
    pub async fn handle(&self, request: &Received<'_>) -> Answer {
        let request_id = uuid::Uuid::new_v4().to_string().to_uppercase();
        let host = request
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let outcome = self.answer(request).await;
        let latency = self.faults.lock().expect("faults lock").latency_ms;
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        match outcome {
            Ok(mut body) => {
                if let Value::Object(map) = &mut body {
                    map.insert("RequestId".into(), Value::from(request_id));
                }
                (200, body)
            }
            Err(err) => {
                tracing::debug!(code = %err.code, status = err.status, message = %err.message, "refused");
                let recommend = format!(
                    "https://api.aliyun.com/troubleshoot?q={}&product=Ecs&requestId={request_id}",
                    err.code
                );
                let body = serde_json::json!({
                    "RequestId": request_id, "HostId": host, "Code": err.code,
                    "Message": err.message, "Recommend": recommend,
                });
                (err.status, body)
            }
        }
    }

    /// STS's anonymous call, recognized before any signature check.
    fn unsigned_sts_call(request: &Received<'_>) -> Option<Vec<(String, String)>> {
        let mut params = decode_pairs(request.query);
        let is_form = request.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("content-type")
                && v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded")
        });
        if is_form {
            params.extend(decode_pairs(&String::from_utf8_lossy(request.body)));
        }
        params.iter().any(|(k, v)| k == "Action" && v == ASSUME_ROLE_WITH_OIDC).then_some(params)
    }

    async fn answer(&self, request: &Received<'_>) -> Result<Value, ApiError> {
        let now = OffsetDateTime::now_utc();
        if let Some(params) = Self::unsigned_sts_call(request) {
            if let Some(err) = self.injected(ASSUME_ROLE_WITH_OIDC) {
                self.identity.counts.sts_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(err);
            }
            return self.identity.assume_role_with_oidc(&params, now);
        }
        let verified = verify(request, &|id| self.identity.key(id), now).map_err(|r| ApiError {
            code: r.code.to_owned(),
            status: r.status,
            message: r.message,
        })?;
        self.identity.check_expiry(&verified.access_key_id, now)?;
        self.check_nonce(&verified.access_key_id, &verified.nonce, now)?;
        let header = |name: &str| {
            request.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
        };
        let param = |name: &str| verified.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let action = header("x-acs-action").or_else(|| param("Action")).ok_or_else(|| {
            ApiError::new("MissingParameter", "no action: send x-acs-action (V3) or Action (V1)")
        })?;
        let version = header("x-acs-version").or_else(|| param("Version")).unwrap_or_default();
        let expected =
            if action == "DescribeVSwitches" { ["2016-04-28", "2014-05-26"] } else { ["2014-05-26"; 2] };
        if !expected.contains(&version.as_str()) {
            return Err(ApiError::new(
                "InvalidVersion",
                format!("{action} is not served for version '{version}': ECS is 2014-05-26, VPC 2016-04-28"),
            ));
        }
        let params = Params::new(&verified.params);
        tracing::debug!(action = %action, key = %verified.access_key_id, "verified request");
        if let Some(err) = self.injected(&action) {
            return Err(err);
        }
        let token = params
            .get("ClientToken")
            .filter(|t| !t.is_empty() && IDEMPOTENT_BY_TOKEN.contains(&action.as_str()));
        let key = token.map(|t| (verified.access_key_id.clone(), action.clone(), t.to_owned()));
        if let Some(key) = &key
            && let Some((fingerprint, answer)) = self.answers.lock().expect("answers lock").get(key)
        {
            if *fingerprint != params.fingerprint() {
                return Err(ApiError::new(
                    "IdempotentParameterMismatch",
                    format!(
                        "ClientToken '{}' was used with other parameters: use a new token for a new request",
                        key.2
                    ),
                ));
            }
            return Ok(answer.clone());
        }
        let answer = self.dispatch(&action, &params)?;
        if let Some(key) = key {
            self.answers.lock().expect("answers lock").insert(key, (params.fingerprint(), answer.clone()));
        }
        Ok(answer)
    }

    /// The whole state, for assertions: vSwitches, instances, ENIs, counts.
    pub fn dump(&self) -> Value {
        let counts: BTreeMap<String, _> =
            self.cloud.counts().into_iter().map(|(api, c)| (api.alibaba_name().to_owned(), c)).collect();
        let console = self.cloud.console();
        serde_json::json!({
            "region": self.region,
            "vpc": self.vpc,
            "seeded": self.seeded,
            "vswitches": console.list_subnets(&self.vpc),
            "instances": console.instances(),
            "enis": console.all_enis().collect::<Vec<_>>(),
            "counts": counts,
            "identity": self.identity.dump(),
        })
    }
}
