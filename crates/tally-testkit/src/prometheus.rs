//! Reading a Prometheus text page (`/metrics`) in tests.

use std::collections::HashMap;

/// The sum of every series of the metric `name` whose labels include
/// `labels`; `None` when no series matches (the `metrics` crate shows a
/// counter only from its first increment, so "no series" and "0" differ).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut matched = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            let pairs: HashMap<&str, &str> = rest
                .trim_end_matches('}')
                .split(',')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            (metric == name && labels.iter().all(|(k, v)| pairs.get(k) == Some(v)))
                .then(|| value.parse::<f64>().ok())?
        })
        .peekable();
    matched.peek()?;
    Some(matched.sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_matching_series_and_tells_none_from_zero() {
        let text = "# TYPE a counter\na{q=\"x\",k=\"1\"} 2\na{q=\"x\",k=\"2\"} 3\na{q=\"y\"} 7\nb 0\n";
        assert_eq!(sum(text, "a", &[("q", "x")]), Some(5.0));
        assert_eq!(sum(text, "a", &[]), Some(12.0));
        assert_eq!(sum(text, "b", &[]), Some(0.0));
        assert_eq!(sum(text, "a", &[("q", "z")]), None);
        assert_eq!(sum(text, "c", &[]), None);
    }
}
