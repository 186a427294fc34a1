//! Property test with a seeded generator: random bytes, byte-mutated fixture
//! bodies and structurally mutated reviews. Whatever comes in, the answer is
//! 2xx or 4xx with a JSON body, never a panic; and any patch it returns applies
//! strictly to the pod it was computed for, and re-reviewing the patched pod
//! yields no second patch.
//!
//! `ENI_IPAM_FUZZ_SEED` and `ENI_IPAM_FUZZ_ROUNDS` run other or longer series.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::support::{all_cases, apply_patch, fixture_state, post_to_router};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Bytes that move a JSON parser into interesting states.
const JSON_BYTES: &[u8] = b"{}[]\",:\\ 0123456789-.eEtrufalsn\x00\xff";

fn mutate_bytes(rng: &mut StdRng, body: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..=8) {
        let at = if body.is_empty() { 0 } else { rng.random_range(0..body.len()) };
        match rng.random_range(0..5) {
            0 if !body.is_empty() => body[at] ^= 1 << rng.random_range(0..8),
            1 if !body.is_empty() => {
                let end = (at + rng.random_range(1..=16)).min(body.len());
                body.drain(at..end);
            }
            2 => {
                for _ in 0..rng.random_range(1..=4) {
                    body.insert(at, JSON_BYTES[rng.random_range(0..JSON_BYTES.len())]);
                }
            }
            3 => body.truncate(at),
            _ if !body.is_empty() => {
                let end = (at + rng.random_range(1..=64)).min(body.len());
                let slice = body[at..end].to_vec();
                let to = rng.random_range(0..=body.len());
                body.splice(to..to, slice);
            }
            _ => body.push(rng.random()),
        }
    }
}

/// Values that hit the decision's branches: wrong types, empty containers,
/// the resource itself, Windows, other operations.
fn interesting_value(rng: &mut StdRng) -> Value {
    let choices = [
        Value::Null,
        json!(true),
        json!(false),
        json!(0),
        json!(-1.5e300),
        json!(""),
        json!("windows"),
        json!("CREATE"),
        json!("UPDATE"),
        json!("kube-system"),
        json!([]),
        json!({}),
        json!([{}]),
        json!([null]),
        json!({ "eni-ipam.io/ip": "1" }),
        json!({ "requests": null, "limits": {} }),
        json!({ "name": "windows" }),
        json!({ "kubernetes.io/os": "windows" }),
        json!("a~b/c\u{0}\u{ffff}"),
    ];
    choices[rng.random_range(0..choices.len())].clone()
}

/// Replaces one node reached by a random walk from the root.
fn mutate_structure(rng: &mut StdRng, value: &mut Value) {
    let mut node = value;
    loop {
        let stop = rng.random_bool(0.15);
        let len = match &*node {
            Value::Object(map) => map.len(),
            Value::Array(items) => items.len(),
            _ => 0,
        };
        if stop || len == 0 {
            break;
        }
        let pick = rng.random_range(0..len);
        node = match node {
            Value::Object(map) => map.values_mut().nth(pick).unwrap(),
            Value::Array(items) => &mut items[pick],
            _ => unreachable!("only containers have children"),
        };
    }
    *node = interesting_value(rng);
}

/// Posts `body`; checks the properties; panics naming the seed and round.
async fn check_property(body: Vec<u8>, label: &str) {
    let sent: Option<Value> = serde_json::from_slice(&body).ok();
    let (status, _, answer) = post_to_router(fixture_state(), body).await;
    assert!(
        (200..300).contains(&status) || (400..500).contains(&status),
        "{label}: status {status} answer {}",
        String::from_utf8_lossy(&answer)
    );
    let answer: Value =
        serde_json::from_slice(&answer).unwrap_or_else(|e| panic!("{label}: answer is not JSON: {e}"));
    if status != 200 {
        assert!(answer["message"].is_string(), "{label}: refusal without a message: {answer}");
        return;
    }
    let response = &answer["response"];
    assert_eq!(response["allowed"], true, "{label}: {answer}");
    let sent = sent.unwrap_or_else(|| panic!("{label}: 200 for a body that is not JSON"));
    assert_eq!(response["uid"], sent["request"]["uid"], "{label}: uid echo");
    if response["patch"].is_null() {
        assert!(response["patchType"].is_null(), "{label}: patchType without patch");
        return;
    }
    let mut patched = sent.clone();
    apply_patch(label, &mut patched["request"]["object"], response);
    let (status, _, again) = post_to_router(fixture_state(), patched.to_string().into_bytes()).await;
    let again: Value = serde_json::from_slice(&again).unwrap();
    assert_eq!(status, 200, "{label}: re-review of the patched pod: {again}");
    assert!(again["response"]["patch"].is_null(), "{label}: second patch on re-review: {again}");
}

#[tokio::test]
async fn random_and_mutated_bodies_never_panic_and_get_2xx_or_4xx() {
    let seed = env_or("ENI_IPAM_FUZZ_SEED", 0x5eed_0010);
    let rounds = env_or("ENI_IPAM_FUZZ_ROUNDS", 600);
    let mut rng = StdRng::seed_from_u64(seed);
    let corpus: Vec<Vec<u8>> =
        all_cases().into_iter().filter(|c| c.name != "bad-huge-5mb").map(|c| c.body).collect();
    let reviews: Vec<Value> = corpus.iter().filter_map(|b| serde_json::from_slice(b).ok()).collect();

    for round in 0..rounds {
        let label = format!("seed {seed:#x} round {round}");
        // Random bytes, mostly short.
        let len = rng.random_range(0..512);
        let noise: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        check_property(noise, &format!("{label} (random bytes)")).await;

        let mut body = corpus[rng.random_range(0..corpus.len())].clone();
        mutate_bytes(&mut rng, &mut body);
        check_property(body, &format!("{label} (byte mutation)")).await;

        let mut review = reviews[rng.random_range(0..reviews.len())].clone();
        for _ in 0..rng.random_range(1..=3) {
            mutate_structure(&mut rng, &mut review);
        }
        check_property(review.to_string().into_bytes(), &format!("{label} (structure mutation)")).await;
    }
}
