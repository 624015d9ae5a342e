//! The text the bridge sends a browser, and the query string it reads: JSON written by
//! hand (two shapes of object, no parser needed), base64, and percent-decoding.

use std::fmt::Write;

/// What the browser is told of one publication: its topic, its sequence number in the
/// publisher's session with the bridge, and its payload, as UTF-8 text when it is, and in
/// base64 otherwise.
pub(crate) fn publication(topic: &str, seq: u64, payload: &[u8]) -> String {
    let mut out = String::with_capacity(64 + topic.len() + payload.len() * 4 / 3);
    out.push_str(r#"{"type":"message","topic":"#);
    string(&mut out, topic);
    let _ = write!(out, r#","seq":{seq},"#);
    match std::str::from_utf8(payload) {
        Ok(text) => {
            out.push_str(r#""encoding":"utf8","payload":"#);
            string(&mut out, text);
        }
        Err(_) => {
            out.push_str(r#""encoding":"base64","payload":""#);
            base64(&mut out, payload);
            out.push('"');
        }
    }
    out.push('}');
    out
}

/// One publication as a binary WebSocket message: the topic's length (u16, big endian),
/// the topic, the sequence number (u64, big endian), then the payload as it is.
pub(crate) fn binary_publication(topic: &str, seq: u64, payload: &[u8]) -> bytes::Bytes {
    use bytes::BufMut;
    // A topic is at most 65,535 bytes: the wire's bound, checked by the publisher.
    let mut out = bytes::BytesMut::with_capacity(2 + topic.len() + 8 + payload.len());
    out.put_u16(topic.len() as u16);
    out.put_slice(topic.as_bytes());
    out.put_u64(seq);
    out.put_slice(payload);
    out.freeze()
}

/// What the browser is told of messages it did not get: `count` of them, since the last
/// one it got.
pub(crate) fn dropped(count: u64) -> String {
    format!(r#"{{"type":"dropped","count":{count}}}"#)
}

/// Writes `text` as a JSON string, quotes included.
fn string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Writes `bytes` in standard base64, padded, as the browser's `atob` reads it.
fn base64(out: &mut String, bytes: &[u8]) {
    let char_of = |six: u32| char::from(BASE64[(six & 0x3f) as usize]);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        out.push(char_of(n >> 18));
        out.push(char_of(n >> 12));
        out.push(if chunk.len() > 1 {
            char_of(n >> 6)
        } else {
            '='
        });
        out.push(if chunk.len() > 2 { char_of(n) } else { '=' });
    }
}

/// The values of parameter `name` in a query string (`a=1&pattern=x&pattern=y`),
/// percent-decoded, `+` read as a space; `None` for one that does not decode to UTF-8.
pub(crate) fn query_values<'q>(
    query: &'q str,
    name: &'q str,
) -> impl Iterator<Item = Option<String>> + 'q {
    query.split('&').filter_map(move |pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key).as_deref() == Some(name)).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_payload_is_a_json_string() {
        assert_eq!(
            publication("prices.eu", 7, b"say \"hi\"\n\x01"),
            r#"{"type":"message","topic":"prices.eu","seq":7,"encoding":"utf8","payload":"say \"hi\"\n\u0001"}"#
        );
    }

    #[test]
    fn a_binary_payload_is_base64() {
        assert_eq!(
            publication("t", 1, &[0xff, 0x00, 0x10, 0x80]),
            r#"{"type":"message","topic":"t","seq":1,"encoding":"base64","payload":"/wAQgA=="}"#
        );
        let mut out = String::new();
        for (input, expected) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ] {
            out.clear();
            base64(&mut out, input);
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn query_values_are_percent_decoded_and_repeatable() {
        let query = "x=1&pattern=prices.%3E&pattern=news.*&pattern=a+b";
        let values: Vec<_> = query_values(query, "pattern").collect();
        assert_eq!(
            values,
            vec![
                Some("prices.>".to_string()),
                Some("news.*".to_string()),
                Some("a b".to_string())
            ]
        );
        assert_eq!(query_values("pattern=%zz", "pattern").next(), Some(None));
        assert_eq!(query_values("pattern=%+f", "pattern").next(), Some(None));
        assert_eq!(query_values("pattern=%4", "pattern").next(), Some(None));
        assert_eq!(query_values("pattern=%e2", "pattern").next(), Some(None));
        assert_eq!(
            query_values("pattern", "pattern").next(),
            Some(Some(String::new()))
        );
        assert_eq!(query_values("other=1", "pattern").next(), None);
    }

    #[test]
    fn drops_are_an_object_of_their_own() {
        assert_eq!(dropped(3), r#"{"type":"dropped","count":3}"#);
    }
}
