//! The small toolkit the pages are written with: HTML escaping, URL path
//! segments, and the time and number formats (the same as `assets/app.js`
//! uses when it refreshes a page).
//!
//! Every value that is not a literal of this crate goes through [`esc`]
//! (text and attribute values alike) or [`segment`] (inside a URL path):
//! job ids, kinds, payloads and errors are written by producers and are
//! untrusted.

use std::fmt::Write as _;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes one URL path segment (everything but the unreserved
/// characters), as JavaScript's `encodeURIComponent` does.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A duration in milliseconds, short: `850ms`, `12s`, `4m 3s`, `2h 5m`, `3d 4h`.
pub fn duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A point in time relative to `now_ms`: `12s ago`, `in 4m 3s`.
pub fn relative(at_ms: u64, now_ms: u64) -> String {
    if at_ms > now_ms {
        format!("in {}", duration_ms(at_ms - now_ms))
    } else {
        format!("{} ago", duration_ms(now_ms - at_ms))
    }
}

/// A UTC timestamp, `2026-12-04 01:02:03Z`.
pub fn timestamp(at_ms: u64) -> String {
    i64::try_from(at_ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(|| at_ms.to_string(), |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
}

/// A `<time>` element showing `at_ms` relative to now, with the timestamp
/// as its tooltip; `assets/app.js` keeps the text current.
pub fn time(at_ms: Option<u64>, now_ms: u64) -> String {
    match at_ms {
        None => "–".to_owned(),
        Some(at) => format!(
            r#"<time data-ms="{at}" title="{stamp}">{text}</time>"#,
            stamp = esc(&timestamp(at)),
            text = esc(&relative(at, now_ms)),
        ),
    }
}

/// A rate per second, `0.52/s`.
pub fn rate(per_sec: Option<f64>) -> String {
    per_sec.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}/s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            esc(r#"<script>alert("x" + 'y') & </script>"#),
            "&lt;script&gt;alert(&quot;x&quot; + &#39;y&#39;) &amp; &lt;/script&gt;"
        );
        assert_eq!(segment("job/1 ?#<é"), "job%2F1%20%3F%23%3C%C3%A9");
        assert_eq!(segment("outbox-12_a.b~c"), "outbox-12_a.b~c");
    }

    #[test]
    fn times_read_well() {
        assert_eq!(duration_ms(850), "850ms");
        assert_eq!(duration_ms(12_000), "12s");
        assert_eq!(duration_ms(243_000), "4m 3s");
        assert_eq!(duration_ms(7_500_000), "2h 5m");
        assert_eq!(duration_ms(273_600_000), "3d 4h");
        assert_eq!(relative(1_000, 13_000), "12s ago");
        assert_eq!(relative(13_000, 1_000), "in 12s");
        assert_eq!(timestamp(0), "1970-01-01 00:00:00Z");
        assert_eq!(rate(Some(0.5234)), "0.52/s");
        assert_eq!(rate(None), "–");
    }
}
