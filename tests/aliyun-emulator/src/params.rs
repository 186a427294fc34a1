//! Reading an action's parameters, and the cloud's error for bad ones:
//! a missing parameter is `MissingParameter`, a malformed one
//! `InvalidParameter`, both with the parameter's name and what is expected.

use std::collections::BTreeMap;

use eni_ipam_cloud::CloudError;
use eni_ipam_cloud::alibaba::codes::http_status;

/// An error answer: the cloud's code, status and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// Error code.
    pub code: String,
    /// HTTP status.
    pub status: u16,
    /// Message.
    pub message: String,
}

impl ApiError {
    /// An error with the status the cloud gives `code`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_owned(), status: http_status(code), message: message.into() }
    }
}

impl From<CloudError> for ApiError {
    fn from(err: CloudError) -> Self {
        Self::new(&err.code, format!("{} ({})", err.message, err.object))
    }
}

/// V1 common parameters: signing, not the action's own.
const COMMON: [&str; 11] = [
    "Action",
    "Format",
    "Version",
    "Timestamp",
    "SignatureNonce",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureType",
    "AccessKeyId",
    "SecurityToken",
    "Signature",
];

/// An action's parameters (first value wins for a repeated name).
#[derive(Clone, Debug, Default)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// The action's own parameters out of everything the request carried.
    pub fn new(all: &[(String, String)]) -> Self {
        let mut map = BTreeMap::new();
        for (k, v) in all.iter().filter(|(k, _)| !COMMON.contains(&k.as_str())) {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Self(map)
    }

    /// Everything, for idempotency fingerprints (ClientToken excluded).
    pub fn fingerprint(&self) -> Vec<(String, String)> {
        self.0.iter().filter(|(k, _)| *k != "ClientToken").map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// An optional parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A required, non-empty parameter.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::new(
                "MissingParameter",
                format!(
                    "the input parameter '{name}' that is mandatory for processing this request is not supplied"
                ),
            )),
        }
    }

    /// An optional number within `range`.
    pub fn number(&self, name: &str, range: std::ops::RangeInclusive<u32>) -> Result<Option<u32>, ApiError> {
        let Some(text) = self.get(name).filter(|t| !t.is_empty()) else { return Ok(None) };
        match text.parse::<u32>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::new(
                &format!("InvalidParameter.{name}"),
                format!(
                    "'{text}' is not valid for {name}: give a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    /// `Name.1`, `Name.2`, ... in index order.
    pub fn list(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}.");
        let mut items: Vec<(u32, String)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let index = k.strip_prefix(&prefix)?.parse::<u32>().ok()?;
                Some((index, v.clone()))
            })
            .collect();
        items.sort();
        items.into_iter().map(|(_, v)| v).collect()
    }

    /// `Tag.N.Key` / `Tag.N.Value` pairs.
    pub fn tags(&self) -> Result<BTreeMap<String, String>, ApiError> {
        let mut out = BTreeMap::new();
        for n in 1..=20 {
            let Some(key) = self.get(&format!("Tag.{n}.Key")) else { continue };
            if key.is_empty() || key.starts_with("aliyun") || key.starts_with("acs:") {
                return Err(ApiError::new(
                    "InvalidTagKey.Malformed",
                    format!("tag key '{key}' is empty or reserved (aliyun, acs:)"),
                ));
            }
            out.insert(key.to_owned(), self.get(&format!("Tag.{n}.Value")).unwrap_or_default().to_owned());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::new(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>())
    }

    #[test]
    fn lists_come_in_index_order_not_text_order() {
        let p = params(&[("Ip.10", "j"), ("Ip.2", "b"), ("Ip.1", "a"), ("Action", "X")]);
        assert_eq!(p.list("Ip"), vec!["a", "b", "j"]);
        assert_eq!(p.get("Action"), None, "common parameters are not the action's");
    }

    #[test]
    fn bad_numbers_and_missing_names_get_the_cloud_codes() {
        let p = params(&[("MaxResults", "501"), ("Empty", "")]);
        assert_eq!(p.number("MaxResults", 1..=500).unwrap_err().code, "InvalidParameter.MaxResults");
        assert_eq!(p.required("Empty").unwrap_err().code, "MissingParameter");
        assert_eq!(p.required("Absent").unwrap_err().status, 400);
    }
}
