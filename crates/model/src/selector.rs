//! Kubernetes label selectors (`matchLabels` plus `matchExpressions`), evaluated as pure
//! functions over a label map.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A `matchExpressions` operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    /// The label's value is one of the values.
    In,
    /// The label is absent, or its value is none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One `matchExpressions` requirement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: Operator,
    /// Values for `In` and `NotIn`; empty for the others.
    #[serde(default)]
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A label selector. The empty selector selects everything, as in Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements, all of which must hold.
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// Checks the rules the API server applies to selectors: `In`/`NotIn` need values,
    /// `Exists`/`DoesNotExist` take none.
    pub fn validate(&self) -> Result<()> {
        for r in &self.match_expressions {
            let needs_values = matches!(r.operator, Operator::In | Operator::NotIn);
            if needs_values == r.values.is_empty() {
                return Err(Error::InvalidSelector(format!(
                    "matchExpressions key {:?}: operator {:?} {}",
                    r.key,
                    r.operator,
                    if needs_values {
                        "needs at least one value"
                    } else {
                        "takes no values"
                    }
                )));
            }
        }
        Ok(())
    }

    /// Reads the string form `kubectl -l` takes: comma-separated requirements `key=value`
    /// (or `==`), `key!=value`, `key`, `!key`, `key in (a,b)` and `key notin (a,b)`. The
    /// empty string selects everything.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |why: &str| Error::InvalidSelector(format!("{text:?}: {why}"));
        let mut sel = LabelSelector::default();
        let mut rest = text.trim();
        while !rest.is_empty() {
            // A requirement ends at the first comma outside parentheses.
            let mut depth = 0usize;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                    c == ',' && depth == 0
                })
                .map_or(rest.len(), |(i, _)| i);
            let part = rest[..end].trim();
            rest = rest.get(end + 1..).unwrap_or("").trim();
            if part.is_empty() {
                return Err(invalid("empty requirement"));
            }
            let key_ok = |k: &str| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            };
            let set = |key: &str, op: Operator, list: &str| -> Result<Requirement> {
                let inner = list
                    .trim()
                    .strip_prefix('(')
                    .and_then(|l| l.strip_suffix(')'))
                    .ok_or_else(|| invalid("values go in parentheses: key in (a,b)"))?;
                let values: Vec<String> = inner
                    .split(',')
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .collect();
                if !key_ok(key) || values.is_empty() {
                    return Err(invalid(
                        "a set requirement needs a key and at least one value",
                    ));
                }
                Ok(Requirement {
                    key: key.to_owned(),
                    operator: op,
                    values,
                })
            };
            let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
            let req = if let [key, tail] = words.as_slice() {
                let tail = tail.trim_start();
                if let Some(list) = tail.strip_prefix("notin") {
                    set(key, Operator::NotIn, list)?
                } else if let Some(list) = tail.strip_prefix("in") {
                    set(key, Operator::In, list)?
                } else {
                    return Err(invalid(&format!("cannot read {part:?}")));
                }
            } else if let Some((k, v)) = part.split_once("!=") {
                let (k, v) = (k.trim(), v.trim());
                if !key_ok(k) {
                    return Err(invalid(&format!("bad key {k:?}")));
                }
                Requirement {
                    key: k.to_owned(),
                    operator: Operator::NotIn,
                    values: vec![v.to_owned()],
                }
            } else if let Some((k, v)) = part.split_once('=') {
                let k = k.trim();
                let v = v.strip_prefix('=').unwrap_or(v).trim();
                if !key_ok(k) {
                    return Err(invalid(&format!("bad key {k:?}")));
                }
                sel.match_labels.insert(k.to_owned(), v.to_owned());
                continue;
            } else if let Some(k) = part.strip_prefix('!') {
                let k = k.trim();
                if !key_ok(k) {
                    return Err(invalid(&format!("bad key {k:?}")));
                }
                Requirement {
                    key: k.to_owned(),
                    operator: Operator::DoesNotExist,
                    values: vec![],
                }
            } else if key_ok(part) {
                Requirement {
                    key: part.to_owned(),
                    operator: Operator::Exists,
                    values: vec![],
                }
            } else {
                return Err(invalid(&format!("cannot read {part:?}")));
            };
            sel.match_expressions.push(req);
        }
        Ok(sel)
    }

    /// Whether `labels` are selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    #[test]
    fn empty_selects_everything() {
        assert!(LabelSelector::default().matches(&BTreeMap::new()));
    }

    #[test]
    fn match_labels_and_expressions() {
        let sel = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![
                req("tier", Operator::In, &["frontend", "edge"]),
                req("env", Operator::NotIn, &["dev"]),
                req("team", Operator::Exists, &[]),
                req("legacy", Operator::DoesNotExist, &[]),
            ],
        };
        sel.validate().unwrap();
        let ok = labels(&[("app", "web"), ("tier", "edge"), ("team", "a")]);
        assert!(sel.matches(&ok));
        let mut dev = ok.clone();
        dev.insert("env".into(), "dev".into());
        assert!(!sel.matches(&dev));
        let mut legacy = ok.clone();
        legacy.insert("legacy".into(), "".into());
        assert!(!sel.matches(&legacy));
        assert!(!sel.matches(&labels(&[
            ("app", "web"),
            ("tier", "backend"),
            ("team", "a")
        ])));
        assert!(!sel.matches(&labels(&[("app", "api"), ("tier", "edge"), ("team", "a")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "edge")])));
    }

    #[test]
    fn parses_the_kubectl_string_form() {
        let sel = LabelSelector::parse(
            "env=prod, tier==edge, team, !legacy, zone in (a, b), stage notin (dev), owner!=bob",
        )
        .unwrap();
        sel.validate().unwrap();
        assert_eq!(
            sel.match_labels,
            labels(&[("env", "prod"), ("tier", "edge")])
        );
        assert_eq!(
            sel.match_expressions,
            vec![
                req("team", Operator::Exists, &[]),
                req("legacy", Operator::DoesNotExist, &[]),
                req("zone", Operator::In, &["a", "b"]),
                req("stage", Operator::NotIn, &["dev"]),
                req("owner", Operator::NotIn, &["bob"]),
            ]
        );
        assert_eq!(LabelSelector::parse("").unwrap(), LabelSelector::default());
        assert_eq!(
            LabelSelector::parse("herdwatch.dev/agent-test=yes")
                .unwrap()
                .match_labels,
            labels(&[("herdwatch.dev/agent-test", "yes")])
        );
        for bad in ["a,,b", "zone in a,b", "zone in ()", "a b c", "=x", "!"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validation_matches_the_api_server() {
        let bad_in = LabelSelector {
            match_expressions: vec![req("a", Operator::In, &[])],
            ..Default::default()
        };
        assert!(bad_in.validate().is_err());
        let bad_exists = LabelSelector {
            match_expressions: vec![req("a", Operator::Exists, &["x"])],
            ..Default::default()
        };
        assert!(bad_exists.validate().is_err());
    }
}
