//! EC2's query protocol, the little of it the test bed needs: form-encoded
//! calls (moto routes on the Authorization header's service name and checks
//! no signature), XML values, and EC2-shaped error bodies.

/// A form-encoded EC2 call to `base`. Returns (status, body).
pub async fn call(http: &reqwest::Client, base: &str, params: &[(&str, String)]) -> (u16, String) {
    let mut form: Vec<(&str, String)> = vec![("Version", "2016-11-15".to_owned())];
    form.extend(params.iter().cloned());
    let response = http
        .post(base)
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testbed/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0",
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode_form(&form))
        .send()
        .await
        .expect("moto answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// `k=v&k=v`, percent-encoded.
pub fn encode_form(form: &[(&str, String)]) -> String {
    form.iter().map(|(k, v)| format!("{}={}", escape(k), escape(v))).collect::<Vec<_>>().join("&")
}

fn escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes a form body into pairs.
pub fn decode_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every text between `<tag>` and `</tag>`.
pub fn values(body: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(after[..end].to_owned());
        rest = &after[end + close.len()..];
    }
    out
}

/// The first text of `<tag>`.
pub fn value(body: &str, tag: &str) -> Option<String> {
    values(body, tag).into_iter().next()
}

/// The top-level `<item>`s of `<set>...</set>`, and the text before and after them.
pub fn items<'a>(body: &'a str, set: &str) -> Option<(&'a str, Vec<&'a str>, &'a str)> {
    let open = format!("<{set}>");
    let start = body.find(&open)? + open.len();
    // The set's closing tag is unique (sets do not nest in themselves): find it once.
    let end = start + body[start..].find(&format!("</{set}>"))?;
    let region = &body[start..end];
    let mut items = Vec::new();
    let (mut depth, mut item_start, mut pos) = (0usize, 0usize, 0usize);
    while let Some(offset) = region[pos..].find('<') {
        let at = pos + offset;
        let rest = &region[at..];
        if rest.starts_with("<item>") {
            if depth == 0 {
                item_start = at;
            }
            depth += 1;
            pos = at + "<item>".len();
        } else if rest.starts_with("</item>") {
            depth = depth.saturating_sub(1);
            pos = at + "</item>".len();
            if depth == 0 {
                items.push(&region[item_start..pos]);
            }
        } else {
            pos = at + 1;
        }
    }
    Some((&body[..start], items, &body[end..]))
}

/// An EC2 error body.
pub fn error_body(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>testbed</RequestID></Response>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_items_ignore_nested_ones() {
        let body = "<r><set><item><id>a</id><tags><item>x</item></tags></item><item><id>b</id></item></set><next/></r>";
        let (before, items, after) = items(body, "set").unwrap();
        assert_eq!(before, "<r><set>");
        assert_eq!(
            items,
            vec!["<item><id>a</id><tags><item>x</item></tags></item>", "<item><id>b</id></item>"]
        );
        assert_eq!(after, "</set><next/></r>");
        assert_eq!(values(body, "id"), vec!["a", "b"]);
    }

    #[test]
    fn forms_round_trip() {
        let form = [("Filter.1.Value.1", "vpc-1 &x".to_owned())];
        assert_eq!(
            decode_form(&encode_form(&form)),
            vec![("Filter.1.Value.1".to_owned(), "vpc-1 &x".to_owned())]
        );
    }
}
