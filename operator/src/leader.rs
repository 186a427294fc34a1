//! Leader election on a `coordination.k8s.io/v1` Lease, the way kube's own
//! controllers do it: the holder renews `spec.renewTime` every retry period; a
//! standby takes the Lease over once it has seen no renewal for a whole lease
//! duration (measured on its own clock from when it saw the record change, so
//! clock skew between machines does not matter); every write is a replace with
//! the resourceVersion read, so two candidates cannot both win. A leader that
//! cannot renew within the renew deadline steps down at once, before anyone
//! else may take over.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This candidate's identity (unique per replica).
    pub identity: String,
    /// How long a standby waits without seeing a renewal before taking over.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// Pause between two attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// Checks the three durations against each other, as an admin would be told.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration < Duration::from_secs(1) {
            return Err("--leader-elect-lease-duration must be at least 1s".into());
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "--leader-elect-renew-deadline ({:?}) must be shorter than --leader-elect-lease-duration ({:?}): \
                 a leader must step down before a standby may take over",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(format!(
                "--leader-elect-retry-period ({:?}) must be above zero and shorter than --leader-elect-renew-deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// We hold the Lease (acquired or renewed).
    Holding,
    /// Someone else holds it and it has not expired.
    HeldBy(String),
}

/// A candidate in the election.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
    /// The holder and renew time last seen, and when (our clock) they were first seen.
    observed: Option<(String, Instant)>,
}

impl LeaderElector {
    /// A candidate using `client`.
    pub fn new(client: kube::Client, config: LeaderConfig) -> Self {
        Self { api: Api::namespaced(client, &config.namespace), config, observed: None }
    }

    /// Runs the election until the returned task is aborted or `shutdown` resolves
    /// (then the Lease is released if held). `true` on the channel = leading.
    pub fn spawn(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut me = self;
            tokio::select! {
                () = me.campaign(&tx) => {}
                () = shutdown => {
                    if *tx.borrow() {
                        let _ = tx.send(false);
                        me.release().await;
                    }
                }
            }
        });
        (rx, task)
    }

    async fn campaign(&mut self, leading: &watch::Sender<bool>) {
        let mut last_renewal: Option<Instant> = None;
        let mut rng = StdRng::seed_from_u64(seed_of(&self.config.identity));
        loop {
            let attempt = tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(Attempt::Holding)) => {
                    last_renewal = Some(Instant::now());
                    if !*leading.borrow() {
                        tracing::info!(identity = %self.config.identity, lease = %self.config.lease_name, "became the leader");
                        let _ = leading.send(true);
                    }
                }
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    if *leading.borrow() {
                        tracing::warn!(identity = %self.config.identity, %holder, "lost the lease to another replica; stopping all cloud calls");
                        let _ = leading.send(false);
                    }
                    last_renewal = None;
                }
                Ok(Err(e)) => {
                    tracing::warn!(identity = %self.config.identity, error = %e, "lease attempt failed; retrying")
                }
                Err(_) => {
                    tracing::warn!(identity = %self.config.identity, "lease attempt timed out; retrying")
                }
            }
            if *leading.borrow() && last_renewal.is_none_or(|t| t.elapsed() > self.config.renew_deadline) {
                tracing::warn!(identity = %self.config.identity, "could not renew the lease within the renew deadline; stepping down");
                let _ = leading.send(false);
            }
            // Candidates retry with up to 20% jitter so replicas started together do not collide every round.
            let jitter = rng.random::<f64>() * 0.2;
            let pause = if *leading.borrow() {
                self.config.retry_period
            } else {
                self.config.retry_period.mul_f64(1.0 + jitter)
            };
            tokio::time::sleep(pause).await;
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let me = self.config.identity.clone();
        let now = MicroTime(Timestamp::now());
        let duration_s = self.config.lease_duration.as_secs_f64().ceil() as i32;
        let Some(current) = self.api.get_opt(&self.config.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.config.lease_name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(duration_s),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Holding),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    Ok(Attempt::HeldBy("a replica that created it first".into()))
                }
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = format!("{holder}|{:?}", spec.renew_time.as_ref().map(|t| t.0));
        let seen_at = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((record, at));
                at
            }
        };
        let their_duration =
            Duration::from_secs(spec.lease_duration_seconds.unwrap_or(duration_s).max(1) as u64);
        let expired = holder.is_empty() || seen_at.elapsed() >= their_duration;
        if holder != me && !expired {
            return Ok(Attempt::HeldBy(holder));
        }
        let taking_over = holder != me;
        let mut next = current;
        next.spec = Some(LeaseSpec {
            holder_identity: Some(me),
            lease_duration_seconds: Some(duration_s),
            acquire_time: if taking_over { Some(now.clone()) } else { spec.acquire_time },
            renew_time: Some(now),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(taking_over)),
            ..spec
        });
        match self.api.replace(&self.config.lease_name, &PostParams::default(), &next).await {
            Ok(_) => Ok(Attempt::Holding),
            // Someone wrote in between: they won this round.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::HeldBy(holder)),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up so a standby takes over at its next attempt instead of a lease duration later.
    async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.lease_name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self.api.replace(&self.config.lease_name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(identity = %self.config.identity, "released the lease"),
            Err(e) => {
                tracing::warn!(identity = %self.config.identity, error = %e, "could not release the lease; it expires by itself")
            }
        }
    }
}

/// Replicas have different identities, hence different jitter.
fn seed_of(identity: &str) -> u64 {
    let mut h = DefaultHasher::new();
    identity.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(lease: u64, renew: u64, retry: u64) -> LeaderConfig {
        LeaderConfig {
            namespace: "ns".into(),
            lease_name: "l".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(lease),
            renew_deadline: Duration::from_secs(renew),
            retry_period: Duration::from_secs(retry),
        }
    }

    #[test]
    fn durations_must_nest_and_the_error_names_the_flags() {
        assert!(config(15, 10, 2).validate().is_ok());
        assert!(config(10, 10, 2).validate().unwrap_err().contains("--leader-elect-renew-deadline"));
        assert!(config(15, 10, 10).validate().unwrap_err().contains("--leader-elect-retry-period"));
        assert!(config(0, 0, 0).validate().unwrap_err().contains("at least 1s"));
    }
}
