//! Names and label values the operator makes up: profile names, and label values derived from
//! rule references. Kubernetes limits both to 63 characters of a restricted alphabet, so long
//! inputs are shortened and given a stable hash suffix that keeps them distinct.

use herdwatch_api::profile::TargetKind;
use herdwatch_model::sketch::fnv1a64;

/// Longest object name or label value the operator writes.
pub const MAX_NAME: usize = 63;
/// Readable characters kept in front of a hash suffix (`-` plus 16 hex digits fill the rest).
const READABLE: usize = MAX_NAME - 17;

fn sanitize(s: &str, keep: impl Fn(char) -> bool) -> String {
    s.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if keep(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn trim_to_alnum(s: &str) -> &str {
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
}

fn with_hash(readable: &str, key: &str) -> String {
    let hash = fnv1a64(key.as_bytes());
    let cut: String = readable.chars().take(READABLE).collect();
    let cut = trim_to_alnum(&cut);
    if cut.is_empty() {
        format!("h-{hash:016x}")
    } else {
        format!("{cut}-{hash:016x}")
    }
}

/// The readable name of the profile the operator creates for a workload container:
/// `<kind>-<workload>-<container>` in lower case, or `None` when that is not a valid name
/// of at most 63 characters (then [`hashed_profile_name`] is used).
pub fn readable_profile_name(kind: TargetKind, workload: &str, container: &str) -> Option<String> {
    let name = format!(
        "{}-{}-{}",
        kind.as_str().to_ascii_lowercase(),
        workload,
        container
    );
    let valid = name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && trim_to_alnum(&name) == name;
    valid.then_some(name)
}

/// A profile name that always fits and never collides in practice: the readable name
/// shortened, plus a hash of (kind, workload, container). Used when the readable name is too
/// long, not valid, or already taken by a profile of another workload (`web-api` + `x` and
/// `web` + `api-x` read the same).
pub fn hashed_profile_name(kind: TargetKind, workload: &str, container: &str) -> String {
    let readable = sanitize(
        &format!("{}-{}-{}", kind.as_str(), workload, container),
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
    );
    with_hash(
        &readable,
        &format!("{}\0{}\0{}", kind.as_str(), workload, container),
    )
}

/// A label value for a rule reference (`profile/processes`, `policy/baseline/no-shells`):
/// `/` becomes `.`, other characters outside `[a-z0-9._-]` become `-`, and a value longer than
/// 63 characters is shortened with a hash suffix.
pub fn rule_label_value(rule: &str) -> String {
    let s: String = rule
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            '/' => '.',
            c if c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c) => c,
            _ => '-',
        })
        .collect();
    let trimmed = trim_to_alnum(&s);
    if trimmed.len() <= MAX_NAME && !trimmed.is_empty() {
        trimmed.to_owned()
    } else {
        with_hash(trimmed, rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_name(n: &str) -> bool {
        n.len() <= MAX_NAME
            && !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && n.starts_with(|c: char| c.is_ascii_alphanumeric())
            && n.ends_with(|c: char| c.is_ascii_alphanumeric())
    }

    fn valid_label_value(v: &str) -> bool {
        v.len() <= MAX_NAME
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && (v.is_empty()
                || (v.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && v.ends_with(|c: char| c.is_ascii_alphanumeric())))
    }

    #[test]
    fn readable_names_when_they_fit() {
        assert_eq!(
            readable_profile_name(TargetKind::Deployment, "web", "nginx").as_deref(),
            Some("deployment-web-nginx")
        );
        assert_eq!(
            readable_profile_name(TargetKind::StatefulSet, "db", "pg").as_deref(),
            Some("statefulset-db-pg")
        );
        assert_eq!(
            readable_profile_name(TargetKind::Deployment, &"a".repeat(60), "c"),
            None
        );
        assert_eq!(
            readable_profile_name(TargetKind::Deployment, "web.v2", "c"),
            None,
            "dots are valid in workload names but not in this form"
        );
    }

    #[test]
    fn hashed_names_fit_and_tell_lookalikes_apart() {
        let a = hashed_profile_name(TargetKind::Deployment, "web-api", "x");
        let b = hashed_profile_name(TargetKind::Deployment, "web", "api-x");
        assert_ne!(a, b);
        assert!(a.starts_with("deployment-web-api-x-"), "{a}");
        for n in [
            a,
            b,
            hashed_profile_name(TargetKind::DaemonSet, &"Very.Long_Name".repeat(30), "c"),
            hashed_profile_name(TargetKind::Job, "", ""),
        ] {
            assert!(valid_name(&n), "{n}");
        }
        assert_eq!(
            hashed_profile_name(TargetKind::Deployment, "web", "nginx"),
            hashed_profile_name(TargetKind::Deployment, "web", "nginx"),
            "stable"
        );
    }

    #[test]
    fn rule_references_become_label_values() {
        assert_eq!(rule_label_value("profile/processes"), "profile.processes");
        assert_eq!(
            rule_label_value("policy/baseline/no-fetchers"),
            "policy.baseline.no-fetchers"
        );
        let long = format!("policy/{}/rule", "p".repeat(80));
        let v = rule_label_value(&long);
        assert!(valid_label_value(&v), "{v}");
        assert_ne!(
            v,
            rule_label_value(&format!("policy/{}/rule2", "p".repeat(80)))
        );
        assert!(valid_label_value(&rule_label_value("policy/Ünïcode rule!")));
    }
}
