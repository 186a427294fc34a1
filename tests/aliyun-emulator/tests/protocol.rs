//! The emulator's answers to requests the cloud refuses: replayed nonces,
//! stale timestamps, unsigned or malformed requests, all in the cloud's error
//! shape, never a crash.

mod common;

use eni_ipam_cloud::alibaba::Credentials;
use eni_ipam_cloud::alibaba::encode::encode_pairs;
use eni_ipam_cloud::alibaba::sign::{RpcCall, SignatureVersion, Stamp, format_timestamp, sign_rpc};
use serde_json::Value;

async fn send(emulator: &common::Emulator, stamp: &Stamp, version: SignatureVersion) -> (u16, Value) {
    let params = vec![("RegionId".to_owned(), "cn-hangzhou".to_owned())];
    let call =
        RpcCall { host: &emulator.addr, action: "DescribeVSwitches", version: "2016-04-28", params: &params };
    let signed = sign_rpc(&call, &Credentials::access_key("testid", "testsecret"), version, stamp);
    let mut request =
        reqwest::Client::new().post(format!("{}/?{}", emulator.url(), encode_pairs(&signed.query)));
    for (name, value) in &signed.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn assert_error_shape(body: &Value, code: &str) {
    assert_eq!(body["Code"], code, "{body}");
    for field in ["RequestId", "HostId", "Message", "Recommend"] {
        assert!(body[field].is_string(), "error body lacks {field}: {body}");
    }
}

#[tokio::test]
async fn a_replayed_nonce_and_a_stale_timestamp_are_refused_with_the_cloud_codes() {
    let emulator = common::Emulator::start(&common::seed("ecs.g7.large", 1, 0), &[]);
    for version in [SignatureVersion::V3, SignatureVersion::V1] {
        let stamp = Stamp::now();
        let (status, _) = send(&emulator, &stamp, version).await;
        assert_eq!(status, 200, "{version:?}");
        let (status, body) = send(&emulator, &stamp, version).await;
        assert_eq!(status, 400);
        assert_error_shape(&body, "SignatureNonceUsed");
        let old = Stamp {
            timestamp: format_timestamp(time::OffsetDateTime::now_utc() - time::Duration::minutes(20)),
            nonce: format!("old-{version:?}"),
        };
        let (status, body) = send(&emulator, &old, version).await;
        assert_eq!(status, 400);
        assert_error_shape(&body, "InvalidTimeStamp.Expired");
    }
}

#[tokio::test]
async fn unsigned_and_malformed_requests_get_the_error_shape() {
    let emulator = common::Emulator::start(&common::seed("ecs.g7.large", 1, 0), &[]);
    let client = reqwest::Client::new();
    // (path and query, extra header, expected code)
    let cases = [
        ("/?Action=DescribeVSwitches&RegionId=cn-hangzhou", None, "IncompleteSignature"),
        ("/?%ZZ=%%&&=", None, "IncompleteSignature"),
        ("/", Some(("authorization", "ACS3-HMAC-SHA256 garbage")), "IncompleteSignature"),
        ("/?Signature=x&AccessKeyId=testid&SignatureMethod=HMAC-SHA1", None, "MissingParameter"),
    ];
    for (path, header, code) in cases {
        let mut request = client.post(format!("{}{path}", emulator.url()));
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 400, "{path}");
        assert_error_shape(&response.json().await.unwrap(), code);
    }
    // Still serving after all that.
    assert_eq!(send(&emulator, &Stamp::now(), SignatureVersion::V3).await.0, 200);
}
