//! The percent-encoding both signature versions use (RFC 3986 unreserved
//! characters stay, everything else is `%XX` upper-case, space is `%20`),
//! and the decoding of what arrives on the wire (`+` is a space there).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Everything but `A-Z a-z 0-9 - _ . ~` is encoded.
const SIGNING: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Encodes a name or value the way Alibaba's signers do.
pub fn encode(text: &str) -> String {
    utf8_percent_encode(text, SIGNING).to_string()
}

/// Decodes one form-encoded component (`+` is a space, `%XX` a byte).
/// Invalid UTF-8 is replaced, so a malformed request fails verification
/// instead of crashing the reader.
pub fn decode_component(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// Splits a query string or form body into decoded `(name, value)` pairs, in
/// wire order. A pair without `=` has an empty value.
pub fn decode_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) => (decode_component(name), decode_component(value)),
            None => (decode_component(pair), String::new()),
        })
        .collect()
}

/// Encodes pairs for the wire with the signing rule (so what is sent is
/// exactly what was signed, `%20` for space).
pub fn encode_pairs(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_stay_and_the_rest_is_upper_hex() {
        assert_eq!(encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(encode("a b*c/d+e=f&"), "a%20b%2Ac%2Fd%2Be%3Df%26");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn wire_plus_is_a_space_and_encoded_plus_is_a_plus() {
        let pairs = decode_pairs("A=x+y&B=x%2By&C&D=");
        assert_eq!(
            pairs,
            vec![
                ("A".into(), "x y".into()),
                ("B".into(), "x+y".into()),
                ("C".into(), String::new()),
                ("D".into(), String::new())
            ]
        );
    }
}
