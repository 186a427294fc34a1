//! The signer and the verifier against the vectors made by Alibaba's official
//! Python SDK (`tests/fixtures/alibaba/signatures.json`, written by
//! `scripts/alibaba-fixtures`). `ALIBABA_SIGNATURE_VECTORS` names one more
//! file of the same schema, checked in addition to the project's own.

use serde_json::Value;

use super::credentials::Credentials;
use super::encode::encode_pairs;
use super::sign::{V3Input, hex_sha256, sign_v1, sign_v3, v1_string_to_sign, v3_authorization};
use super::verify::{Received, verify};

const OWN_VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/alibaba/signatures.json");

fn vectors() -> Vec<Value> {
    let mut vectors = vectors_in(OWN_VECTORS);
    if let Ok(extra) = std::env::var("ALIBABA_SIGNATURE_VECTORS") {
        vectors.extend(vectors_in(&extra));
    }
    vectors
}

fn vectors_in(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!("cannot read signature vectors {path} ({e}): check ALIBABA_SIGNATURE_VECTORS")
    });
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
    let vectors = doc["vectors"].as_array().unwrap_or_else(|| panic!("{path} has no 'vectors' list")).clone();
    assert!(!vectors.is_empty(), "{path} holds no vectors");
    vectors
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .map(|list| {
            list.iter()
                .map(|p| (p[0].as_str().unwrap().to_owned(), p[1].as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_else(|| panic!("vector field '{field}' missing: {v}"))
}

fn creds(v: &Value) -> Credentials {
    let c = &v["credentials"];
    Credentials {
        access_key_id: text(c, "access_key_id").to_owned(),
        access_key_secret: text(c, "access_key_secret").to_owned(),
        security_token: c["security_token"].as_str().map(str::to_owned),
    }
}

fn body(v: &Value) -> Vec<u8> {
    v["request"]["body"].as_str().unwrap_or_default().as_bytes().to_vec()
}

fn now(v: &Value) -> time::OffsetDateTime {
    super::sign::parse_timestamp(text(v, "timestamp")).expect("vector timestamp parses")
}

fn verify_as_received(
    v: &Value,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<super::verify::Verified, super::verify::Rejection> {
    let request = &v["request"];
    let received =
        Received { method: text(request, "method"), path: text(request, "path"), query, headers, body };
    let held = creds(v);
    verify(&received, &|id| (id == held.access_key_id).then(|| held.clone()), now(v))
}

#[test]
fn the_signer_reproduces_every_vector() {
    for v in vectors() {
        let id = text(&v, "id");
        let request = &v["request"];
        let signing = &v["signing"];
        let secret = creds(&v).access_key_secret;
        let method = text(request, "method");
        let body = body(&v);
        if text(&v, "signature_version") == "v3" {
            let signed: Vec<&str> = text(signing, "signed_headers").split(';').collect();
            let headers: Vec<(String, String)> = pairs(&request["headers"])
                .into_iter()
                .filter(|(n, _)| signed.contains(&n.to_ascii_lowercase().as_str()))
                .collect();
            let query = pairs(&request["query_params"]);
            let hashed = hex_sha256(&body);
            assert_eq!(hashed, text(signing, "hashed_payload"), "{id}: payload hash");
            let input = V3Input {
                method,
                path: text(request, "path"),
                query: &query,
                headers: &headers,
                hashed_payload: &hashed,
            };
            let sig = sign_v3(&input, &secret);
            assert_eq!(sig.canonical_request, text(signing, "canonical_request"), "{id}: canonical request");
            assert_eq!(sig.string_to_sign, text(signing, "string_to_sign"), "{id}: string to sign");
            assert_eq!(sig.signature, text(signing, "signature"), "{id}: signature");
            assert_eq!(
                v3_authorization(&creds(&v).access_key_id, &sig),
                text(signing, "authorization"),
                "{id}: Authorization"
            );
        } else {
            let mut params: Vec<(String, String)> =
                pairs(&request["query_params"]).into_iter().filter(|(k, _)| k != "Signature").collect();
            params.extend(pairs(&request["body_params"]));
            let sts = v1_string_to_sign(method, &params);
            assert_eq!(sts, text(signing, "string_to_sign"), "{id}: string to sign");
            assert_eq!(sign_v1(&sts, &secret), text(signing, "signature"), "{id}: signature");
        }
    }
}

#[test]
fn the_verifier_accepts_the_valid_vectors_and_rejects_the_negative_ones() {
    let mut negatives = 0;
    for v in vectors() {
        let id = text(&v, "id");
        let request = &v["request"];
        let headers = pairs(&request["headers"]);
        let outcome = verify_as_received(&v, text(request, "query_string"), &headers, &body(&v));
        if v["expect"]["valid"].as_bool() == Some(true) {
            let ok = outcome.unwrap_or_else(|e| panic!("{id}: valid vector rejected: {e}"));
            assert_eq!(ok.nonce, text(&v, "nonce"), "{id}: nonce");
        } else {
            negatives += 1;
            let err = outcome.err().unwrap_or_else(|| panic!("{id}: negative vector accepted"));
            assert_eq!(err.code, text(&v["expect"], "error_code"), "{id}: {err}");
        }
    }
    assert!(negatives > 0, "the vector file holds no negative vector, so rejection is untested");
}

fn one_byte_changed(value: &str) -> String {
    let mut chars: Vec<char> = value.chars().collect();
    match chars.last_mut() {
        Some(c) => *c = if *c == 'a' { 'b' } else { 'a' },
        None => chars.push('x'),
    }
    chars.into_iter().collect()
}

/// Every signed part of every valid vector, changed by one byte, fails.
#[test]
fn a_one_byte_change_to_any_signed_part_fails_verification() {
    let mut checked = 0;
    for v in vectors().into_iter().filter(|v| v["expect"]["valid"].as_bool() == Some(true)) {
        let id = text(&v, "id");
        let request = &v["request"];
        let headers = pairs(&request["headers"]);
        let body = body(&v);
        let query = pairs(&request["query_params"]);
        for i in 0..query.len() {
            let mut changed = query.clone();
            changed[i].1 = one_byte_changed(&changed[i].1);
            let outcome = verify_as_received(&v, &encode_pairs(&changed), &headers, &body);
            assert!(outcome.is_err(), "{id}: query parameter {} changed, still accepted", query[i].0);
            checked += 1;
        }
        if text(&v, "signature_version") == "v3" {
            let signed = text(&v["signing"], "signed_headers").to_owned();
            for name in signed.split(';') {
                let changed: Vec<(String, String)> = headers
                    .iter()
                    .map(|(n, val)| {
                        let val =
                            if n.eq_ignore_ascii_case(name) { one_byte_changed(val) } else { val.clone() };
                        (n.clone(), val)
                    })
                    .collect();
                let outcome = verify_as_received(&v, text(request, "query_string"), &changed, &body);
                assert!(outcome.is_err(), "{id}: signed header {name} changed, still accepted");
                checked += 1;
            }
        }
        if !body.is_empty() {
            let mut changed = body.clone();
            *changed.last_mut().expect("non-empty") ^= 1;
            let outcome = verify_as_received(&v, text(request, "query_string"), &headers, &changed);
            assert!(outcome.is_err(), "{id}: body changed, still accepted");
            checked += 1;
        }
        let mut wrong_secret = v.clone();
        wrong_secret["credentials"]["access_key_secret"] =
            Value::from(one_byte_changed(text(&v["credentials"], "access_key_secret")));
        let outcome = verify_as_received(&wrong_secret, text(request, "query_string"), &headers, &body);
        assert_eq!(outcome.map_err(|e| e.code), Err("SignatureDoesNotMatch"), "{id}: other secret");
    }
    assert!(checked > 100, "only {checked} mutations were tried");
}
