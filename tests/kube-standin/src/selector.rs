//! Label and field selectors: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.

use serde_json::{Map, Value};

pub(crate) enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// Splits on commas outside parentheses.
fn split(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

fn set(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("selector set {s:?} is not in parentheses"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

pub(crate) fn parse(s: &str) -> Result<Vec<Req>, String> {
    let mut reqs = Vec::new();
    for term in split(s) {
        if let Some((k, v)) = term.split_once("!=") {
            reqs.push(Req::Ne(k.trim().into(), v.trim().into()));
        } else if let Some((k, v)) = term.split_once("==") {
            reqs.push(Req::Eq(k.trim().into(), v.trim().into()));
        } else if let Some((k, v)) = term.split_once('=') {
            reqs.push(Req::Eq(k.trim().into(), v.trim().into()));
        } else if let Some((k, v)) = term.split_once(" notin ") {
            reqs.push(Req::NotIn(k.trim().into(), set(v)?));
        } else if let Some((k, v)) = term.split_once(" in ") {
            reqs.push(Req::In(k.trim().into(), set(v)?));
        } else if let Some(k) = term.strip_prefix('!') {
            reqs.push(Req::NotExists(k.trim().into()));
        } else if term.contains(' ') || term.contains('(') {
            return Err(format!("unable to parse requirement {term:?}"));
        } else {
            reqs.push(Req::Exists(term));
        }
    }
    Ok(reqs)
}

pub(crate) fn matches(reqs: &[Req], labels: &Map<String, Value>) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    reqs.iter().all(|r| match r {
        Req::Eq(k, v) => get(k) == Some(v.as_str()),
        Req::Ne(k, v) => get(k) != Some(v.as_str()),
        Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        Req::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
        Req::Exists(k) => get(k).is_some(),
        Req::NotExists(k) => get(k).is_none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn equality_and_set_based_selectors_match_like_the_apiserver() {
        let l = labels(json!({"zone": "a", "eni-ipam.io/managed": "true"}));
        let yes =
            ["zone=a", "zone==a", "zone!=b", "zone in (a,b)", "zone notin (b)", "eni-ipam.io/managed", "!x"];
        for s in yes {
            assert!(matches(&parse(s).unwrap(), &l), "{s} should match");
        }
        let no = ["zone=b", "zone!=a", "zone in (b,c)", "zone notin (a)", "x", "!zone", "zone=a,x=y"];
        for s in no {
            assert!(!matches(&parse(s).unwrap(), &l), "{s} should not match");
        }
        assert!(parse("zone in a").is_err());
    }
}
