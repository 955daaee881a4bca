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
