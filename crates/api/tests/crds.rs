//! The generated CRDs: their schemas carry the CEL rules, every rule compiles, the example of
//! each resource passes them and round-trips through JSON and YAML, and invalid objects are
//! refused with a message that says what to change. CEL is evaluated client-side (kube's
//! `cel` feature); the e2e cluster checks the same rules in a real API server.

use herdwatch_api::common::{Mode, ResponseAction};
use herdwatch_api::examples;
use herdwatch_api::policy::DenyKind;
use herdwatch_api::profile::TargetKind;
use herdwatch_api::{
    BehaviorObservation, BehaviorProfile, BehaviorViolation, ClusterBehaviorPolicy,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::cel::{self, compile_schema, CompiledSchema};
use kube::CustomResourceExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn schema_json(crd: &CustomResourceDefinition) -> serde_json::Value {
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

/// Every `rule` string in a schema.
fn rules(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k == "x-kubernetes-validations" {
                    for r in v.as_array().unwrap() {
                        out.push(r["rule"].as_str().unwrap().to_owned());
                        assert!(
                            r["message"].as_str().is_some_and(|m| !m.is_empty()),
                            "rule {r} has no message"
                        );
                    }
                } else {
                    rules(v, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| rules(v, out)),
        _ => {}
    }
}

fn compile_errors(s: &CompiledSchema, out: &mut Vec<String>) {
    out.extend(s.compilation_errors().iter().map(|e| e.to_string()));
    for child in s.properties.values() {
        compile_errors(child, out);
    }
    if let Some(items) = &s.items {
        compile_errors(items, out);
    }
}

fn cost_warnings(s: &CompiledSchema, out: &mut Vec<String>) {
    for r in s.validations.iter().flatten() {
        out.extend(
            cel::estimate_rule_cost(&r.rule.rule, s)
                .into_iter()
                .map(|w| format!("{}: {}", w.rule, w.message)),
        );
    }
    for child in s.properties.values() {
        cost_warnings(child, out);
    }
    if let Some(items) = &s.items {
        cost_warnings(items, out);
    }
}

#[test]
fn every_crd_has_names_scope_and_printer_columns() {
    let crds = herdwatch_api::crds();
    let names: Vec<_> = crds
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "behaviorprofiles.herdwatch.dev",
            "clusterbehaviorpolicies.herdwatch.dev",
            "behaviorviolations.herdwatch.dev",
            "behaviorobservations.herdwatch.dev"
        ]
    );
    let short = |c: &CustomResourceDefinition| c.spec.names.short_names.clone().unwrap_or_default();
    assert_eq!(short(&crds[0]), ["bp"]);
    assert_eq!(short(&crds[1]), ["cbp"]);
    assert_eq!(short(&crds[2]), ["bv"]);
    assert_eq!(crds[0].spec.scope, "Namespaced");
    assert_eq!(crds[1].spec.scope, "Cluster");
    assert_eq!(crds[2].spec.scope, "Namespaced");
    for c in &crds {
        assert_eq!(c.spec.group, "herdwatch.dev");
        assert_eq!(c.spec.versions[0].name, "v1alpha1");
    }
    let columns: Vec<_> = crds[0].spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    for wanted in ["Target", "Mode", "Phase", "Age"] {
        assert!(
            columns.contains(&wanted),
            "BehaviorProfile lacks printer column {wanted}: {columns:?}"
        );
    }
    assert!(
        crds[0].spec.versions[0]
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "profile has a status subresource"
    );
}

#[test]
fn schemas_carry_the_cel_rules() {
    let mut profile_rules = Vec::new();
    rules(&schema_json(&BehaviorProfile::crd()), &mut profile_rules);
    for wanted in [
        "!(self.mode == 'Learn' && self.response.action == 'Kill')",
        "self.matches('^([0-9]+(h|m|s))+$')",
        "self >= 1",
        "isIP(self) || isCIDR(self)",
        "self.startsWith('/')",
        "self == oldSelf",
    ] {
        assert!(
            profile_rules.iter().any(|r| r == wanted),
            "BehaviorProfile schema lacks rule {wanted}; has {profile_rules:#?}"
        );
    }
    let yaml = serde_yaml::to_string(&BehaviorProfile::crd()).unwrap();
    assert!(yaml.contains("response.action Kill is not allowed while mode is Learn: set mode to Enforce or action to Tag"));
    assert!(
        yaml.contains("x-kubernetes-list-type: map"),
        "conditions are a list-map"
    );

    let mut policy_rules = Vec::new();
    rules(
        &schema_json(&ClusterBehaviorPolicy::crd()),
        &mut policy_rules,
    );
    assert!(policy_rules
        .iter()
        .any(|r| r.contains("self.deny != 'Binaries'")));
    assert!(policy_rules.iter().any(|r| r.contains("isCIDR(c)")));
}

#[test]
fn every_rule_compiles_and_stays_within_the_cost_budget() {
    for crd in herdwatch_api::crds() {
        let compiled = compile_schema(&schema_json(&crd));
        let mut errors = Vec::new();
        compile_errors(&compiled, &mut errors);
        assert!(
            errors.is_empty(),
            "{}: {errors:#?}",
            crd.metadata.name.unwrap()
        );
        let mut warnings = Vec::new();
        cost_warnings(&compiled, &mut warnings);
        assert!(
            warnings.is_empty(),
            "{}: {warnings:#?}",
            crd.metadata.name.unwrap()
        );
    }
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(obj: &T) {
    let json = serde_json::to_string(obj).unwrap();
    assert_eq!(
        &serde_json::from_str::<T>(&json).unwrap(),
        obj,
        "JSON round trip"
    );
    let yaml = serde_yaml::to_string(obj).unwrap();
    assert_eq!(
        &serde_yaml::from_str::<T>(&yaml).unwrap(),
        obj,
        "YAML round trip"
    );
}

#[test]
fn examples_round_trip_and_pass_validation() {
    round_trip(&examples::profile());
    round_trip(&examples::policy());
    round_trip(&examples::violation());
    round_trip(&examples::observation());
    cel::validate_cel(&examples::profile()).unwrap();
    cel::validate_cel(&examples::policy()).unwrap();
    cel::validate_cel(&examples::violation()).unwrap();
    cel::validate_cel(&examples::observation()).unwrap();
}

#[test]
fn a_hand_written_profile_in_yaml_reads_with_defaults() {
    let yaml = r#"
apiVersion: herdwatch.dev/v1alpha1
kind: BehaviorProfile
metadata: {name: api, namespace: shop}
spec:
  targetRef: {kind: Deployment, name: api}
  container: api
  mode: Enforce
  learning: {autoPromote: false}
  allowed:
    processes:
    - exe: /app/api
      uid: 1000
    files:
    - prefix: /app
      access: [read]
"#;
    let bp: BehaviorProfile = serde_yaml::from_str(yaml).unwrap();
    assert_eq!(bp.spec.learning.min_duration, "24h");
    assert_eq!(bp.spec.learning.min_replicas, 2);
    assert_eq!(bp.spec.response.action, ResponseAction::Tag);
    assert_eq!(bp.spec.response.limits.max_kills_per_hour, 3);
    cel::validate_cel(&bp).unwrap();
}

/// Validates `obj` and returns the messages of the rules it breaks.
fn refusals<T: CustomResourceExt + Serialize>(obj: &T) -> Vec<String> {
    match cel::validate_cel(obj) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

fn assert_refused<T: CustomResourceExt + Serialize>(obj: &T, message: &str) {
    let got = refusals(obj);
    assert!(
        got.iter().any(|m| m.contains(message)),
        "expected a refusal containing {message:?}, got {got:?}"
    );
}

#[test]
fn invalid_profiles_are_refused_with_what_to_change() {
    let mut kill_in_learn = examples::profile();
    kill_in_learn.spec.mode = Mode::Learn;
    kill_in_learn.spec.response.kill_process = false;
    assert_refused(&kill_in_learn, "response.action Kill is not allowed while mode is Learn: set mode to Enforce or action to Tag");
    kill_in_learn.spec.response.action = ResponseAction::Tag;
    assert!(refusals(&kill_in_learn).is_empty(), "Tag in Learn is fine");
    kill_in_learn.spec.response.kill_process = true;
    assert_refused(
        &kill_in_learn,
        "response.killProcess is not allowed while mode is Learn",
    );

    let mut bad_duration = examples::profile();
    bad_duration.spec.learning.min_duration = "1 day".into();
    assert_refused(&bad_duration, "learning.minDuration must be a duration");
    let mut bad_stable = examples::profile();
    bad_stable.spec.learning.stable_for = "90".into();
    assert_refused(&bad_stable, "learning.stableFor must be a duration");

    let mut no_replicas = examples::profile();
    no_replicas.spec.learning.min_replicas = 0;
    assert_refused(&no_replicas, "learning.minReplicas must be at least 1");

    let mut relative = examples::profile();
    relative.spec.allowed.processes[0].exe = "nginx".into();
    assert_refused(&relative, "exe must be an absolute path");
    let mut bad_peer = examples::profile();
    bad_peer.spec.allowed.network.egress[0].peer = "10.0.0.0/33".into();
    assert_refused(&bad_peer, "peer must be an IP address");
    let mut no_access = examples::profile();
    no_access.spec.allowed.files[0].access.clear();
    assert_refused(
        &no_access,
        "access needs at least one of read, write, create",
    );
}

#[test]
fn target_and_container_are_immutable() {
    let old = examples::profile();
    let mut moved = old.clone();
    moved.spec.target_ref.kind = TargetKind::StatefulSet;
    let err = cel::validate_cel_update(&moved, &old).unwrap_err();
    assert!(
        err.iter()
            .any(|e| e.message.contains("targetRef is immutable")),
        "{err}"
    );
    let mut renamed = old.clone();
    renamed.spec.container = "sidecar".into();
    assert!(cel::validate_cel_update(&renamed, &old).is_err());
    let mut promoted = old.clone();
    promoted.spec.mode = Mode::Monitor;
    cel::validate_cel_update(&promoted, &old).unwrap();
}

#[test]
fn invalid_policies_are_refused_with_what_to_change() {
    let mut p = examples::policy();
    p.spec.rules[1].binaries = None;
    assert_refused(&p, "deny Binaries needs a non-empty binaries list");
    let mut p = examples::policy();
    p.spec.rules[4].cidrs = Some(vec!["everywhere".into()]);
    assert_refused(&p, "cidrs must be IP addresses or CIDRs");
    let mut p = examples::policy();
    p.spec.rules[4].cidrs = None;
    assert_refused(&p, "deny EgressOutside needs cidrs");
    let mut p = examples::policy();
    p.spec.rules[0].cidrs = Some(vec!["10.0.0.0/8".into()]);
    assert_refused(&p, "cidrs is only used with deny EgressOutside");
    let mut p = examples::policy();
    p.spec.rules[0].deny = DenyKind::Root;
    p.spec.rules[0].binaries = Some(vec!["curl".into()]);
    assert_refused(&p, "binaries is only used with deny Binaries");
    let mut p = examples::policy();
    p.spec.rules.clear();
    assert_refused(&p, "rules needs at least one rule");
    // Process kills never reach every namespace by default.
    let kills = "a rule with killProcess needs a non-empty namespaceSelector";
    let mut p = examples::policy();
    assert!(p.spec.rules.iter().any(|r| r.kill_process));
    p.spec.namespace_selector = None;
    assert_refused(&p, kills);
    p.spec.namespace_selector = Some(LabelSelector::default());
    assert_refused(&p, kills);
    for r in &mut p.spec.rules {
        r.kill_process = false;
    }
    cel::validate_cel(&p).expect("without process kills, every namespace may be selected");
    let mut p = examples::policy();
    let r = p
        .spec
        .rules
        .iter_mut()
        .find(|r| !r.kill_process)
        .expect("a rule without killProcess");
    r.kill_container_init = true;
    assert_refused(&p, "killContainerInit only applies with killProcess: true");
}

#[test]
fn invalid_violations_and_observations_are_refused() {
    let mut v = examples::violation();
    v.spec.count = 0;
    assert_refused(&v, "count must be at least 1");
    let mut v = examples::violation();
    std::mem::swap(&mut v.spec.first_seen, &mut v.spec.last_seen);
    assert_refused(&v, "lastSeen must not be before firstSeen");
    let mut v = examples::violation();
    v.spec.profile = None;
    assert_refused(
        &v,
        "a Policy violation names its policy, a Profile violation its profile",
    );

    let old = examples::observation();
    let mut moved = old.clone();
    moved.spec.node = "node-2".into();
    let err = cel::validate_cel_update(&moved, &old).unwrap_err();
    assert!(
        err.iter().any(|e| e.message.contains("node is immutable")),
        "{err}"
    );
}

#[test]
fn a_violations_identity_is_immutable() {
    let old = examples::violation();
    const IMMUTABLE: &str = "a record's identity (node, pod, podUid, workload, source, profile, policy, rule, subject, container, imageDigest) is immutable";
    type Change<'a> = (&'a str, &'a dyn Fn(&mut BehaviorViolation));
    let changes: [Change; 10] = [
        ("node", &|v| v.spec.node = "node-2".into()),
        ("pod", &|v| v.spec.pod = "other".into()),
        ("podUid", &|v| v.spec.pod_uid = "other".into()),
        ("container", &|v| v.spec.container = "other".into()),
        ("imageDigest", &|v| v.spec.image_digest = "other".into()),
        ("workload", &|v| v.spec.workload.name = "other".into()),
        ("rule", &|v| v.spec.rule = "profile/files".into()),
        ("subject", &|v| v.spec.subject = "/bin/bash".into()),
        ("profile", &|v| v.spec.profile = Some("other".into())),
        // Adding an optional field the old record did not have is a change too.
        ("policy", &|v| v.spec.policy = Some("baseline".into())),
    ];
    for (field, change) in changes {
        let mut new = old.clone();
        change(&mut new);
        let err = cel::validate_cel_update(&new, &old)
            .expect_err(&format!("changing {field} is refused"));
        assert!(
            err.iter().any(|e| e.message.contains(IMMUTABLE)),
            "{field}: {err}"
        );
    }
    // What the agent updates as the violation goes on stays writable.
    let mut seen_again = old.clone();
    seen_again.spec.count += 1;
    let last = herdwatch_api::convert::from_time(&old.spec.last_seen);
    seen_again.spec.last_seen =
        herdwatch_api::convert::to_time(last + std::time::Duration::from_secs(60));
    cel::validate_cel_update(&seen_again, &old).unwrap();
}

#[test]
fn observation_objects_stay_small() {
    // An observation at the schema's maxima, serialised: well under the 1.5 MiB object limit.
    let mut o = examples::observation();
    let entry = o.spec.observed.processes[0].clone();
    o.spec.observed.processes = (0..1024)
        .map(|i| herdwatch_api::common::ProcessEntry {
            exe: format!("/opt/application/bin/tool-{i:05}"),
            ..entry.clone()
        })
        .collect();
    let file = o.spec.observed.files[0].clone();
    o.spec.observed.files = (0..1024)
        .map(|i| herdwatch_api::common::FileEntry {
            path: Some(format!("/var/lib/application/data/{i:05}")),
            prefix: None,
            ..file.clone()
        })
        .collect();
    let size = serde_json::to_vec(&o).unwrap().len();
    assert!(size < 600_000, "{size} bytes");
    let _: BehaviorObservation = serde_json::from_slice(&serde_json::to_vec(&o).unwrap()).unwrap();
    let _: BehaviorViolation = examples::violation();
}

#[test]
fn the_rule_checks_above_can_fail() {
    // Guards the guards: a broken rule and an unbounded list are caught by the walkers used
    // in every_rule_compiles_and_stays_within_the_cost_budget.
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "broken": {"type": "string", "x-kubernetes-validations": [{"rule": "self.startsWith(", "message": "m"}]},
            "holder": {
                "type": "object",
                "properties": {"unbounded": {"type": "array", "items": {"type": "string"}}},
                "x-kubernetes-validations": [{"rule": "self.unbounded.all(x, x.startsWith('a'))", "message": "m"}]
            }
        }
    });
    let compiled = compile_schema(&schema);
    let mut errors = Vec::new();
    compile_errors(&compiled, &mut errors);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let mut warnings = Vec::new();
    cost_warnings(&compiled, &mut warnings);
    assert!(
        !warnings.is_empty(),
        "an unbounded list under a rule is reported"
    );
}

/// Every schema of a property named `name`, wherever it sits.
fn properties_named<'a>(
    v: &'a serde_json::Value,
    name: &str,
    out: &mut Vec<&'a serde_json::Value>,
) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(p) = m.get("properties").and_then(|p| p.get(name)) {
                out.push(p);
            }
            m.values().for_each(|v| properties_named(v, name, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| properties_named(v, name, out)),
        _ => {}
    }
}

/// Learning writes argument patterns for multi-call binaries, bounded by the model's limits;
/// if those drifted from the schema's, the API server would refuse a whole observation.
#[test]
fn learned_argument_patterns_fit_the_schema() {
    use herdwatch_model::pattern::{MAX_TOKENS, MAX_TOKEN_LEN};
    for crd in [BehaviorProfile::crd(), BehaviorObservation::crd()] {
        let schema = schema_json(&crd);
        let mut argvs = Vec::new();
        properties_named(&schema, "argv", &mut argvs);
        // The allowed processes' patterns are bounded; diffs in the status only repeat them.
        argvs.retain(|argv| argv.get("maxItems").is_some());
        assert!(
            !argvs.is_empty(),
            "{}: no bounded argv property",
            crd.spec.names.kind
        );
        for argv in argvs {
            assert_eq!(
                argv["maxItems"], MAX_TOKENS,
                "{}: {argv}",
                crd.spec.names.kind
            );
            assert_eq!(
                argv["items"]["maxLength"], MAX_TOKEN_LEN,
                "{}: {argv}",
                crd.spec.names.kind
            );
        }
    }
}
