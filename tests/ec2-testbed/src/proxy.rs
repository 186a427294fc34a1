//! A fault-injecting HTTP/1.1 proxy between the EC2 client and moto. It adds
//! what moto lacks, on the wire, so the real SDK meets it: pagination of
//! DescribeNetworkInterfaces (moto ignores MaxResults), the ENI-per-instance,
//! IP-per-ENI and subnet-size limits (moto enforces none), EC2's request-rate
//! buckets, ClientToken idempotency of CreateNetworkInterface; and it
//! injects throttling, 500s, latency and connection resets.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eni_ipam_cloud::{Api, BucketId, CloudProfile, TokenBucket};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::sts::{SessionKeys, SessionStats};
use crate::wire::{call, decode_form, error_body, items, value, values};

/// What to inject.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Share of mutating calls answered `RequestLimitExceeded` (HTTP 503).
    pub throttle_mutating: f64,
    /// Share of calls answered `InternalError` (HTTP 500), before reaching moto.
    pub internal_error: f64,
    /// Share of calls whose connection is reset instead of answered.
    pub reset: f64,
    /// Added to every call.
    pub latency: Duration,
    /// Only these actions get faults (None: all).
    pub actions: Option<Vec<String>>,
    /// Enforce EC2's request-rate buckets (mutating 200 / 5 per s, describe 100 / 20 per s).
    pub quotas: bool,
    /// Refuse (AuthFailure) requests signed with another access key id.
    pub expect_access_key: Option<String>,
    /// Make STS keys last this long (DurationSeconds set on the SDK's behalf).
    pub sts_duration: Option<Duration>,
    /// Accept EC2 calls only when signed with a live key STS issued through this proxy.
    pub require_session_keys: bool,
}

/// What the proxy did with one action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActionCounts {
    /// Calls that reached the proxy.
    pub received: u64,
    /// Forwarded to moto.
    pub forwarded: u64,
    /// Answered RequestLimitExceeded (injected or by quota).
    pub throttled: u64,
    /// Answered InternalError.
    pub internal_errors: u64,
    /// Connections reset.
    pub resets: u64,
    /// Refused for a limit moto does not enforce (named in `limit_refusals`).
    pub limit_refusals: u64,
    /// Creates answered from the ClientToken cache, not forwarded.
    pub idempotent_replays: u64,
}

struct State {
    upstream: String,
    http: reqwest::Client,
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
    counts: Mutex<BTreeMap<String, ActionCounts>>,
    refusals: Mutex<BTreeMap<String, u64>>,
    /// Limit checks and the call they guard happen as one step.
    mutating: tokio::sync::Mutex<()>,
    limits: Mutex<HashMap<String, (u32, u32)>>,
    /// CreateNetworkInterface answers by ClientToken (EC2 is idempotent on it; moto is not).
    created: Mutex<HashMap<String, String>>,
    buckets: BTreeMap<BucketId, TokenBucket>,
    profile: CloudProfile,
    sessions: SessionKeys,
}

/// The running proxy.
#[derive(Clone)]
pub struct Ec2Proxy {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    state: Arc<State>,
}

enum Reply {
    Answer(u16, String),
    Reset,
}

impl Ec2Proxy {
    /// Starts the proxy in front of `upstream`, on a free loopback port.
    pub async fn start(upstream: &str, faults: Faults, seed: u64) -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), upstream, faults, seed).await
    }

    /// Starts the proxy in front of `upstream`, listening on `listen` (e.g. `0.0.0.0:0`, so
    /// that clients in network namespaces reach it at a host address). `url` stays on
    /// loopback.
    pub async fn start_on(listen: SocketAddr, upstream: &str, faults: Faults, seed: u64) -> Self {
        crate::install_ring();
        let profile = CloudProfile::aws();
        let buckets = profile.buckets.iter().map(|(id, spec)| (*id, TokenBucket::new(*spec))).collect();
        let state = Arc::new(State {
            upstream: upstream.to_owned(),
            http: reqwest::Client::new(),
            faults: Mutex::new(faults),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            counts: Mutex::new(BTreeMap::new()),
            refusals: Mutex::new(BTreeMap::new()),
            mutating: tokio::sync::Mutex::new(()),
            limits: Mutex::new(HashMap::new()),
            created: Mutex::new(HashMap::new()),
            buckets,
            profile,
            sessions: SessionKeys::default(),
        });
        let listener =
            TcpListener::bind(listen).await.unwrap_or_else(|e| panic!("bind the proxy on {listen}: {e}"));
        let port = listener.local_addr().expect("local addr").port();
        let url = format!("http://127.0.0.1:{port}");
        let serving = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_connection(serving.clone(), stream));
            }
        });
        Self { url, state }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("the url ends in its port")
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) {
        *self.state.faults.lock().expect("faults lock") = faults;
    }

    /// Counts per action.
    pub fn counts(&self) -> BTreeMap<String, ActionCounts> {
        self.state.counts.lock().expect("counts lock").clone()
    }

    /// STS keys issued through the proxy and their use.
    pub fn sessions(&self) -> SessionStats {
        self.state.sessions.stats()
    }

    /// Limit refusals by error code (which limit moto would not have enforced).
    pub fn limit_refusals(&self) -> BTreeMap<String, u64> {
        self.state.refusals.lock().expect("refusals lock").clone()
    }
}

async fn serve_connection(state: Arc<State>, mut stream: TcpStream) {
    let mut buffer = Vec::new();
    loop {
        let Some((head, body)) = read_request(&mut stream, &mut buffer).await else { return };
        match handle(&state, &head, &body).await {
            Reply::Answer(status, text) => {
                let reason = match status {
                    200 => "OK",
                    400 => "Bad Request",
                    401 => "Unauthorized",
                    403 => "Forbidden",
                    500 => "Internal Server Error",
                    503 => "Service Unavailable",
                    _ => "Status",
                };
                let response = format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-type: text/xml;charset=UTF-8\r\ncontent-length: {}\r\n\r\n{text}",
                    text.len()
                );
                if stream.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
            Reply::Reset => {
                // Linger 0 makes the close an RST: the client sees a reset connection.
                // (Closing a socket with nothing left to send does not block.)
                #[allow(deprecated)]
                let _ = stream.set_linger(Some(Duration::ZERO));
                return;
            }
        }
    }
}

/// Reads one request: (head, body). `None` at EOF or on a malformed request.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<(String, String)> {
    let head_end = loop {
        if let Some(pos) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buffer[head_end..head_end + length]).into_owned();
    buffer.drain(..head_end + length);
    Some((head, body))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn count(state: &State, action: &str, update: impl FnOnce(&mut ActionCounts)) {
    update(state.counts.lock().expect("counts lock").entry(action.to_owned()).or_default());
}

fn roll(state: &State, share: f64) -> bool {
    share > 0.0 && state.rng.lock().expect("rng lock").random_bool(share.min(1.0))
}

fn api_of(action: &str) -> Option<Api> {
    Api::ALL.into_iter().find(|a| a.aws_name() == action)
}

async fn handle(state: &State, head: &str, body: &str) -> Reply {
    let mut form = decode_form(body);
    let get =
        |form: &[(String, String)], key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let action = get(&form, "Action").unwrap_or_default();
    count(state, &action, |c| c.received += 1);
    let faults = state.faults.lock().expect("faults lock").clone();
    let mutating = !action.starts_with("Describe");
    if action.starts_with("AssumeRole") {
        let (status, text) =
            state.sessions.forward(&state.http, &state.upstream, form, faults.sts_duration).await;
        count(state, &action, |c| c.forwarded += 1);
        return Reply::Answer(status, text);
    }
    let key = header(head, "authorization")
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .unwrap_or_default();
    if faults.require_session_keys
        && let Err((status, code, message)) = state.sessions.check(key, time::OffsetDateTime::now_utc())
    {
        return Reply::Answer(status, error_body(code, &message));
    }
    if let Some(expected) = &faults.expect_access_key
        && key != expected
    {
        return Reply::Answer(
            401,
            error_body("AuthFailure", "AWS was not able to validate the provided access credentials"),
        );
    }
    let faulty = faults.actions.as_ref().is_none_or(|only| only.contains(&action));
    if faulty && !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    if faulty && roll(state, faults.reset) {
        count(state, &action, |c| c.resets += 1);
        return Reply::Reset;
    }
    let over_quota = faults.quotas
        && api_of(&action)
            .and_then(|api| state.buckets.get(&state.profile.bucket_of(api)))
            .is_some_and(|bucket| !bucket.try_acquire());
    if over_quota || (faulty && mutating && roll(state, faults.throttle_mutating)) {
        count(state, &action, |c| c.throttled += 1);
        return Reply::Answer(503, error_body("RequestLimitExceeded", "Request limit exceeded."));
    }
    if faulty && roll(state, faults.internal_error) {
        count(state, &action, |c| c.internal_errors += 1);
        return Reply::Answer(500, error_body("InternalError", "An internal error has occurred"));
    }

    let _serial = if mutating { Some(state.mutating.lock().await) } else { None };
    let token = (action == "CreateNetworkInterface").then(|| get(&form, "ClientToken")).flatten();
    if let Some(answer) =
        token.as_ref().and_then(|t| state.created.lock().expect("created lock").get(t).cloned())
    {
        count(state, &action, |c| c.idempotent_replays += 1);
        return Reply::Answer(200, answer);
    }
    if let Some((code, message)) = limit_refusal(state, &action, &form).await {
        count(state, &action, |c| c.limit_refusals += 1);
        *state.refusals.lock().expect("refusals lock").entry(code.to_owned()).or_default() += 1;
        return Reply::Answer(400, error_body(code, &message));
    }
    rewrite_counts(state, &action, &mut form).await;
    let page = if action == "DescribeNetworkInterfaces" {
        let size = get(&form, "MaxResults").and_then(|v| v.parse::<usize>().ok());
        let from =
            get(&form, "NextToken").and_then(|t| t.strip_prefix('p')?.parse::<usize>().ok()).unwrap_or(0);
        form.retain(|(k, _)| k != "MaxResults" && k != "NextToken");
        size.map(|size| (from, size))
    } else {
        None
    };
    let params: Vec<(&str, String)> =
        form.iter().filter(|(k, _)| k != "Version").map(|(k, v)| (k.as_str(), v.clone())).collect();
    let (status, text) = call(&state.http, &state.upstream, &params).await;
    count(state, &action, |c| c.forwarded += 1);
    if let Some(token) = token
        && status == 200
    {
        state.created.lock().expect("created lock").insert(token, text.clone());
    }
    match page {
        Some((from, size)) if status == 200 => Reply::Answer(status, paginate(&text, from, size)),
        _ if status == 200 && action == "AssignPrivateIpAddresses" => {
            Reply::Answer(status, only_assigned(&text, &requested_addresses(&form)))
        }
        _ => Reply::Answer(status, text),
    }
}

/// The explicit addresses of an AssignPrivateIpAddresses request (`PrivateIpAddress.N`).
fn requested_addresses(form: &[(String, String)]) -> Vec<String> {
    form.iter().filter(|(k, _)| k.starts_with("PrivateIpAddress.")).map(|(_, v)| v.clone()).collect()
}

/// EC2 answers AssignPrivateIpAddresses with the addresses that call assigned; moto
/// answers with every address of the ENI (its primary included). A client that trusts
/// the answer, as eni-ipam does to know which IPs on an ENI it did not create are its
/// own, would take the others for its own: so the set is cut to what was requested.
fn only_assigned(text: &str, requested: &[String]) -> String {
    let Some((before, all, after)) = items(text, "assignedPrivateIpAddressesSet") else {
        return text.to_owned();
    };
    let kept: String = all
        .into_iter()
        .filter(|item| value(item, "privateIpAddress").is_some_and(|ip| requested.contains(&ip)))
        .collect();
    format!("{before}{kept}{after}")
}

/// Cuts a full DescribeNetworkInterfaces answer to one page and adds the token.
fn paginate(text: &str, from: usize, size: usize) -> String {
    let Some((before, all, after)) = items(text, "networkInterfaceSet") else { return text.to_owned() };
    let end = (from + size).min(all.len());
    let page: String = all[from.min(end)..end].concat();
    let token = if end < all.len() { format!("<nextToken>p{end}</nextToken>") } else { String::new() };
    let after = after.replacen("</networkInterfaceSet>", &format!("</networkInterfaceSet>{token}"), 1);
    format!("{before}{page}{after}")
}

async fn ec2(state: &State, params: &[(&str, String)]) -> String {
    call(&state.http, &state.upstream, params).await.1
}

async fn type_limits(state: &State, instance: &str) -> Option<(u32, u32)> {
    let described =
        ec2(state, &[("Action", "DescribeInstances".into()), ("InstanceId.1", instance.into())]).await;
    let ty = value(&described, "instanceType")?;
    if let Some(l) = state.limits.lock().expect("limits lock").get(&ty) {
        return Some(*l);
    }
    let info =
        ec2(state, &[("Action", "DescribeInstanceTypes".into()), ("InstanceType.1", ty.clone())]).await;
    let limits = (
        value(&info, "maximumNetworkInterfaces")?.parse().ok()?,
        value(&info, "ipv4AddressesPerInterface")?.parse().ok()?,
    );
    state.limits.lock().expect("limits lock").insert(ty, limits);
    Some(limits)
}

async fn subnet_free(state: &State, subnet: &str) -> Option<u32> {
    let s = ec2(state, &[("Action", "DescribeSubnets".into()), ("SubnetId.1", subnet.into())]).await;
    value(&s, "availableIpAddressCount")?.parse::<i64>().ok().map(|n| n.max(0) as u32)
}

/// moto picks addresses at random and hands the same one to two ENIs (a
/// birthday collision within a few hundred addresses of a /19). EC2 never
/// does; so requests by count are rewritten into explicit addresses that
/// are free in the subnet, lowest first, skipping EC2's reserved ones.
async fn rewrite_counts(state: &State, action: &str, form: &mut Vec<(String, String)>) {
    let get =
        |form: &[(String, String)], key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let Some(count) = get(form, "SecondaryPrivateIpAddressCount").and_then(|n| n.parse::<usize>().ok())
    else {
        return;
    };
    let (subnet, with_primary) = match action {
        "CreateNetworkInterface" if get(form, "PrivateIpAddress").is_none() => (get(form, "SubnetId"), true),
        "AssignPrivateIpAddresses" => {
            let eni = get(form, "NetworkInterfaceId").unwrap_or_default();
            let d =
                ec2(state, &[("Action", "DescribeNetworkInterfaces".into()), ("NetworkInterfaceId.1", eni)])
                    .await;
            (value(&d, "subnetId"), false)
        }
        _ => return,
    };
    let Some(subnet) = subnet else { return };
    let Some(free) = free_addresses(state, &subnet, count + usize::from(with_primary)).await else { return };
    form.retain(|(k, _)| k != "SecondaryPrivateIpAddressCount");
    if with_primary {
        for (n, ip) in free.iter().enumerate() {
            form.push((format!("PrivateIpAddresses.{}.PrivateIpAddress", n + 1), ip.clone()));
            form.push((format!("PrivateIpAddresses.{}.Primary", n + 1), (n == 0).to_string()));
        }
    } else {
        for (n, ip) in free.iter().enumerate() {
            form.push((format!("PrivateIpAddress.{}", n + 1), ip.clone()));
        }
    }
}

/// `count` addresses of the subnet no ENI holds, or `None` if it has fewer.
async fn free_addresses(state: &State, subnet: &str, count: usize) -> Option<Vec<String>> {
    let s = ec2(state, &[("Action", "DescribeSubnets".into()), ("SubnetId.1", subnet.into())]).await;
    let cidr = value(&s, "cidrBlock")?;
    let held = ec2(
        state,
        &[
            ("Action", "DescribeNetworkInterfaces".into()),
            ("Filter.1.Name", "subnet-id".into()),
            ("Filter.1.Value.1", subnet.into()),
        ],
    )
    .await;
    let used: std::collections::HashSet<String> = values(&held, "privateIpAddress").into_iter().collect();
    let free: Vec<String> = unheld_addresses(&cidr, &used)?.into_iter().take(count).collect();
    (free.len() == count).then_some(free)
}

/// The addresses of `cidr` EC2 may hand out (none of the four first, not the last) that are
/// not in `held`, lowest first; `None` for a CIDR that does not parse.
pub(crate) fn unheld_addresses(cidr: &str, held: &std::collections::HashSet<String>) -> Option<Vec<String>> {
    let (base, prefix) = cidr.split_once('/')?;
    let base = u32::from(base.parse::<std::net::Ipv4Addr>().ok()?);
    let size = 1u32 << (32 - prefix.parse::<u32>().ok()?);
    Some(
        (4..size - 1)
            .map(|offset| std::net::Ipv4Addr::from(base + offset).to_string())
            .filter(|ip| !held.contains(ip))
            .collect(),
    )
}

/// The error EC2 would answer for a limit moto does not enforce.
async fn limit_refusal(
    state: &State,
    action: &str,
    form: &[(String, String)],
) -> Option<(&'static str, String)> {
    let get = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    match action {
        "AttachNetworkInterface" => {
            let instance = get("InstanceId")?;
            let (max_enis, _) = type_limits(state, &instance).await?;
            let attached = ec2(
                state,
                &[
                    ("Action", "DescribeNetworkInterfaces".into()),
                    ("Filter.1.Name", "attachment.instance-id".into()),
                    ("Filter.1.Value.1", instance.clone()),
                ],
            )
            .await;
            let count = items(&attached, "networkInterfaceSet").map_or(0, |(_, i, _)| i.len()) as u32;
            (count >= max_enis).then(|| {
                (
                    "AttachmentLimitExceeded",
                    format!("Interface count {} exceeds the limit for {instance}", count + 1),
                )
            })
        }
        "AssignPrivateIpAddresses" => {
            let eni = get("NetworkInterfaceId")?;
            let adding: u32 = match get("SecondaryPrivateIpAddressCount") {
                Some(n) => n.parse().ok()?,
                None => form.iter().filter(|(k, _)| k.starts_with("PrivateIpAddress.")).count() as u32,
            };
            let described = ec2(
                state,
                &[("Action", "DescribeNetworkInterfaces".into()), ("NetworkInterfaceId.1", eni.clone())],
            )
            .await;
            let (_, found, _) = items(&described, "networkInterfaceSet")?;
            let item = found.first()?;
            let held =
                values(item, "privateIpAddress").into_iter().collect::<std::collections::BTreeSet<_>>().len()
                    as u32;
            if let Some(instance) = value(item, "instanceId")
                && let Some((_, per_eni)) = type_limits(state, &instance).await
                && held + adding > per_eni
            {
                return Some((
                    "PrivateIpAddressLimitExceeded",
                    format!("Number of private addresses will exceed limit for {eni}"),
                ));
            }
            let subnet = value(item, "subnetId")?;
            (subnet_free(state, &subnet).await? < adding).then(|| {
                ("InsufficientFreeAddressesInSubnet", format!("Subnet {subnet} has too few free addresses"))
            })
        }
        "CreateNetworkInterface" => {
            let subnet = get("SubnetId")?;
            let adding: u32 =
                get("SecondaryPrivateIpAddressCount").and_then(|n| n.parse().ok()).unwrap_or(0) + 1;
            (subnet_free(state, &subnet).await? < adding).then(|| {
                ("InsufficientFreeAddressesInSubnet", format!("Subnet {subnet} has too few free addresses"))
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assign_answer_names_only_the_addresses_it_assigned() {
        let moto = "<AssignPrivateIpAddressesResponse><networkInterfaceId>eni-1</networkInterfaceId>\
            <assignedPrivateIpAddressesSet><item><privateIpAddress>10.0.0.44</privateIpAddress></item>\
            <item><privateIpAddress>10.0.0.50</privateIpAddress></item>\
            <item><privateIpAddress>10.0.0.51</privateIpAddress></item></assignedPrivateIpAddressesSet>\
            </AssignPrivateIpAddressesResponse>";
        let form = vec![
            ("NetworkInterfaceId".to_owned(), "eni-1".to_owned()),
            ("PrivateIpAddress.1".to_owned(), "10.0.0.50".to_owned()),
            ("PrivateIpAddress.2".to_owned(), "10.0.0.51".to_owned()),
        ];
        let cut = only_assigned(moto, &requested_addresses(&form));
        assert_eq!(values(&cut, "privateIpAddress"), ["10.0.0.50", "10.0.0.51"], "{cut}");
        assert!(cut.contains("<networkInterfaceId>eni-1</networkInterfaceId>"));
    }

    #[test]
    fn pages_cut_the_set_and_carry_a_token() {
        let text = "<R><networkInterfaceSet><item>a</item><item>b</item><item>c</item></networkInterfaceSet><requestId>x</requestId></R>";
        let first = paginate(text, 0, 2);
        assert!(
            first.contains("<item>a</item><item>b</item></networkInterfaceSet><nextToken>p2</nextToken>"),
            "{first}"
        );
        let last = paginate(text, 2, 2);
        assert!(
            last.contains("<networkInterfaceSet><item>c</item></networkInterfaceSet><requestId>"),
            "{last}"
        );
        assert!(!last.contains("nextToken"));
    }
}
