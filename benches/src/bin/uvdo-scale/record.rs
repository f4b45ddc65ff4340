//! What a child process reports to its parent: one `key value` pair per line on stdout
//! (keys without spaces, values to the end of the line), so a crashing child that exits
//! without cleaning up has already said everything, and the parent needs no parser crate.

use std::collections::BTreeMap;
use std::fmt::Display;

/// Named figures, kept as text until asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Record(BTreeMap<String, String>);

impl Record {
    pub(crate) fn put(&mut self, key: &str, value: impl Display) {
        assert!(
            !key.is_empty() && !key.contains(char::is_whitespace),
            "record key {key:?}"
        );
        let value = value.to_string();
        assert!(!value.contains('\n'), "record value {value:?} for {key}");
        self.0.insert(key.to_owned(), value);
    }

    /// The lines a child prints.
    pub(crate) fn emit(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k} {v}\n")).collect()
    }

    /// Reads a child's output back; lines that are not `key value` are ignored.
    pub(crate) fn parse(text: &str) -> Self {
        let pairs = text.lines().filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (!key.is_empty()).then(|| (key.to_owned(), value.to_owned()))
        });
        Self(pairs.collect())
    }

    /// Adds every figure of `other` under `prefix.`.
    pub(crate) fn merge(&mut self, prefix: &str, other: &Self) {
        for (key, value) in &other.0 {
            self.0.insert(format!("{prefix}.{key}"), value.clone());
        }
    }

    pub(crate) fn text(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub(crate) fn number(&self, key: &str) -> Option<f64> {
        self.text(key)?.parse().ok().filter(|v: &f64| v.is_finite())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text_and_merges_under_a_prefix() {
        let mut child = Record::default();
        child.put("open_s", 1.25);
        child.put("mode", "recovering");
        child.put("entries", 5_471_000_u64);
        let back = Record::parse(&format!("noise\n{}", child.emit()));
        assert_eq!(back, child);
        let mut all = Record::default();
        all.merge("recover", &back);
        assert_eq!(all.number("recover.open_s"), Some(1.25));
        assert_eq!(all.number("recover.entries"), Some(5_471_000.0));
        assert_eq!(all.text("recover.mode"), Some("recovering"));
        assert_eq!(all.number("recover.mode"), None);
        assert_eq!(all.number("open_s"), None);
    }

    #[test]
    #[should_panic(expected = "record key")]
    fn keys_have_no_spaces() {
        Record::default().put("open s", 1);
    }
}
