//! Evaluation: judging each attributed event locally, against the BehaviorProfile of its
//! workload container (when that profile is Monitoring or Enforcing) and every
//! ClusterBehaviorPolicy that selects its pod.
//!
//! [`watch`] keeps three reflectors (profiles in all namespaces, policies, namespace
//! labels) and compiles what they hold into an [`EvalSnapshot`]: a `ProfileIndex` per
//! judging profile, keyed by (namespace, target kind, target name, container) and rebuilt
//! only when that profile's resourceVersion changes, the policies in model form, and the
//! namespaces' labels. The snapshot is swapped whole into the [`EvalStore`] and its
//! generation bumped. The event loop's [`Evaluator`] holds the current snapshot and, per
//! container, what applies to it (its profile, the policies selecting its pod), recomputed
//! only when the snapshot or the pod store changed. So judging an event is a hash lookup
//! and the model's checks: no API round trip, no lock.
//!
//! [`kernel`] turns the same per-container answers into the executables the kernel itself
//! kills at exec, for the containers whose profile or policies ask for process kills.

pub mod drift;
pub mod kernel;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

use herdwatch_api::common::{Mode, Phase};
use herdwatch_api::{BehaviorProfile, ClusterBehaviorPolicy};
use herdwatch_model::policy::{ClusterPolicy, PolicyViolation};
use herdwatch_model::response::ResponseAction;
use herdwatch_model::selector::LabelSelector;
use herdwatch_model::{BehaviorSet, Event, ProfileIndex, Verdict, Violation};
use kube::ResourceExt;

use crate::attribution::pods::{ContainerMeta, PodMeta};

use self::kernel::{add_policy_denies, kernel_allow, ExecRules, KernelAllow};

/// Which profile judges a workload container.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProfileKey {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub container: String,
}

/// A profile that judges events, compiled.
#[derive(Debug)]
pub struct CompiledProfile {
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub phase: Phase,
    pub index: ProfileIndex,
    /// The response the profile asks for.
    pub action: ResponseAction,
    /// Kill offending processes (only in Enforcing, and not in a dry run).
    pub kill_process: bool,
    /// A container's init (PID 1) too.
    pub kill_container_init: bool,
    /// When it left Learning (the status's `learning.promotedAt`).
    pub promoted_at: Option<herdwatch_model::Timestamp>,
    /// The allow list of its process entries as the kernel can apply it.
    pub kernel_allow: KernelAllow,
}

/// A policy, compiled.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub resource_version: String,
    pub policy: ClusterPolicy,
    /// A dry-run policy changes nothing, so it kills nothing either.
    pub dry_run: bool,
}

/// Everything evaluation needs, as of one moment.
#[derive(Clone, Debug, Default)]
pub struct EvalSnapshot {
    pub profiles: HashMap<ProfileKey, Arc<CompiledProfile>>,
    pub policies: Vec<Arc<CompiledPolicy>>,
    pub namespaces: HashMap<String, BTreeMap<String, String>>,
}

/// The current snapshot, shared by the watches (writers) and the event loop (reader).
#[derive(Debug, Default)]
pub struct EvalStore {
    snapshot: RwLock<Arc<EvalSnapshot>>,
    generation: AtomicU64,
    /// The parts whose watch has listed everything once ([`SnapshotPart`] bits).
    synced: AtomicU8,
}

/// The parts of the snapshot, each kept by its own watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotPart {
    Profiles = 1,
    Policies = 2,
    Namespaces = 4,
}

impl EvalStore {
    /// Records that `part` holds everything its watch listed at start.
    pub fn mark_synced(&self, part: SnapshotPart) {
        self.synced.fetch_or(part as u8, Ordering::AcqRel);
    }

    /// Whether every part has been listed once: until then, a container may be judged by
    /// less than its rules (the kernel's enforcement is not brought down to that).
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire) == 7
    }

    /// Changes whenever the snapshot does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Arc<EvalSnapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces one part of the snapshot.
    pub fn update(&self, f: impl FnOnce(&mut EvalSnapshot)) {
        let mut guard = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        let mut next = (**guard).clone();
        f(&mut next);
        *guard = Arc::new(next);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// The namespaces whose pods this agent learns and judges (`--namespace-selector`).
#[derive(Clone, Debug)]
pub struct Scope {
    selector: LabelSelector,
    store: Arc<EvalStore>,
}

impl Scope {
    pub fn new(selector: LabelSelector, store: Arc<EvalStore>) -> Self {
        Scope { selector, store }
    }

    /// Whether pods of `namespace` are in scope, as of `snapshot`.
    pub fn includes_in(&self, snapshot: &EvalSnapshot, namespace: &str) -> bool {
        if self.selector == LabelSelector::default() {
            return true;
        }
        // Until the namespace watch has delivered a namespace, its labels are unknown.
        snapshot
            .namespaces
            .get(namespace)
            .is_some_and(|labels| self.selector.matches(labels))
    }

    /// Whether pods of `namespace` are in scope now.
    pub fn includes(&self, namespace: &str) -> bool {
        self.includes_in(&self.store.snapshot(), namespace)
    }
}

/// Why an object was left out of evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub namespace: Option<String>,
    pub name: String,
    pub reason: String,
}

/// Compiles the judging profiles among `objects`, reusing from `previous` every profile
/// whose resourceVersion did not change. Profiles still Learning are left out; of two
/// profiles for one workload container the first by name judges.
pub fn compile_profiles(
    objects: &[Arc<BehaviorProfile>],
    previous: &HashMap<ProfileKey, Arc<CompiledProfile>>,
) -> (HashMap<ProfileKey, Arc<CompiledProfile>>, Vec<Skipped>) {
    let mut sorted: Vec<&Arc<BehaviorProfile>> = objects.iter().collect();
    sorted.sort_by_key(|p| (p.namespace(), p.name_any()));
    let mut out = HashMap::new();
    let mut skipped = Vec::new();
    for p in sorted {
        let phase = p.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
        if !matches!(phase, Phase::Monitoring | Phase::Enforcing) {
            continue;
        }
        let key = ProfileKey {
            namespace: p.namespace().unwrap_or_default(),
            kind: p.spec.target_ref.kind.as_str().to_owned(),
            name: p.spec.target_ref.name.clone(),
            container: p.spec.container.clone(),
        };
        if out.contains_key(&key) {
            skipped.push(Skipped {
                namespace: p.namespace(),
                name: p.name_any(),
                reason: format!(
                    "another profile already judges {}/{} container {}",
                    key.kind, key.name, key.container
                ),
            });
            continue;
        }
        let rv = p.resource_version().unwrap_or_default();
        let uid = p.uid().unwrap_or_default();
        if let Some(old) = previous.get(&key) {
            if old.resource_version == rv && old.uid == uid && !rv.is_empty() {
                out.insert(key, old.clone());
                continue;
            }
        }
        let set = match BehaviorSet::try_from(&p.spec.allowed) {
            Ok(set) => set,
            Err(e) => {
                skipped.push(Skipped {
                    namespace: p.namespace(),
                    name: p.name_any(),
                    reason: e.within("spec.allowed").to_string(),
                });
                continue;
            }
        };
        let response = &p.spec.response;
        out.insert(
            key,
            Arc::new(CompiledProfile {
                name: p.name_any(),
                uid,
                resource_version: rv,
                phase,
                index: ProfileIndex::build(&set),
                kernel_allow: kernel_allow(&set),
                action: response.action.into(),
                kill_process: response.kill_process
                    && phase == Phase::Enforcing
                    && !response.dry_run,
                kill_container_init: response.kill_container_init,
                promoted_at: p
                    .status
                    .as_ref()
                    .and_then(|s| s.learning.promoted_at.as_ref())
                    .map(herdwatch_api::convert::from_time),
            }),
        );
    }
    (out, skipped)
}

/// Compiles `objects`, reusing unchanged ones from `previous`; policies sorted by name.
pub fn compile_policies(
    objects: &[Arc<ClusterBehaviorPolicy>],
    previous: &[Arc<CompiledPolicy>],
) -> (Vec<Arc<CompiledPolicy>>, Vec<Skipped>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for p in objects {
        let rv = p.resource_version().unwrap_or_default();
        let name = p.name_any();
        if let Some(old) = previous
            .iter()
            .find(|c| c.policy.name == name && c.resource_version == rv && !rv.is_empty())
        {
            out.push(old.clone());
            continue;
        }
        match ClusterPolicy::try_from(&**p) {
            Ok(policy) => out.push(Arc::new(CompiledPolicy {
                resource_version: rv,
                policy,
                dry_run: p.spec.dry_run,
            })),
            Err(e) => skipped.push(Skipped {
                namespace: None,
                name,
                reason: e.to_string(),
            }),
        }
    }
    out.sort_by(|a, b| a.policy.name.cmp(&b.policy.name));
    (out, skipped)
}

/// Where a rule came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Profile { name: String, uid: String },
    Policy { name: String },
}

/// One violation of one event, with the response its rule asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub violation: Violation,
    pub source: Source,
    pub action: ResponseAction,
    /// Kill the offending process.
    pub kill_process: bool,
    /// Even when it is its container's init (PID 1).
    pub kill_container_init: bool,
    /// The mode of what judged the event, for the violation metric: the profile's phase,
    /// or for a policy (which has no mode) Monitor when it is a dry run, else Enforce.
    pub mode: Mode,
}

/// What judges one container.
#[derive(Clone, Debug, Default)]
struct Applicable {
    /// The namespace is in the agent's scope; when not, nothing else applies.
    in_scope: bool,
    profile: Option<Arc<CompiledProfile>>,
    policies: Vec<Arc<CompiledPolicy>>,
}

/// Per-container answers kept; cleared when full.
const MAX_CACHED: usize = 16_384;

/// The event loop's side: judges events against the current snapshot.
#[derive(Debug)]
pub struct Evaluator {
    store: Arc<EvalStore>,
    scope: Scope,
    generation: u64,
    snapshot: Arc<EvalSnapshot>,
    /// Container id → (pod store generation, what applies).
    cache: HashMap<Arc<str>, (u64, Applicable)>,
}

impl Evaluator {
    /// An evaluator of the snapshots in `store`, for pods of the namespaces `selector`
    /// picks.
    pub fn new(store: Arc<EvalStore>, selector: LabelSelector) -> Self {
        let generation = store.generation();
        let snapshot = store.snapshot();
        Evaluator {
            scope: Scope::new(selector, store.clone()),
            store,
            generation,
            snapshot,
            cache: HashMap::new(),
        }
    }

    /// Judging profiles and policies in the store's current snapshot.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.store.snapshot();
        (s.profiles.len(), s.policies.len())
    }

    fn applicable(
        scope: &Scope,
        snapshot: &EvalSnapshot,
        pod: &PodMeta,
        container: &ContainerMeta,
    ) -> Applicable {
        if !scope.includes_in(snapshot, &pod.namespace) {
            return Applicable::default();
        }
        let key = ProfileKey {
            namespace: pod.namespace.clone(),
            kind: pod.workload.kind.clone(),
            name: pod.workload.name.clone(),
            container: container.name.clone(),
        };
        let empty = BTreeMap::new();
        let ns_labels = snapshot.namespaces.get(&pod.namespace).unwrap_or(&empty);
        Applicable {
            in_scope: true,
            profile: snapshot.profiles.get(&key).cloned(),
            policies: snapshot
                .policies
                .iter()
                .filter(|p| p.policy.selects(ns_labels, &pod.labels))
                .cloned()
                .collect(),
        }
    }

    /// Brings what applies to `container_id` (a container of `pod`) up to date.
    /// `pods_generation` is the pod store's, so that label changes are seen.
    fn refresh(
        &mut self,
        container_id: &Arc<str>,
        pods_generation: u64,
        pod: &PodMeta,
        container: &ContainerMeta,
    ) {
        let generation = self.store.generation();
        if generation != self.generation {
            self.generation = generation;
            self.snapshot = self.store.snapshot();
            self.cache.clear();
        }
        let fresh = self
            .cache
            .get(container_id)
            .is_some_and(|(g, _)| *g == pods_generation);
        if !fresh {
            if self.cache.len() >= MAX_CACHED {
                self.cache.clear();
            }
            let a = Self::applicable(&self.scope, &self.snapshot, pod, container);
            self.cache
                .insert(container_id.clone(), (pods_generation, a));
        }
    }

    /// Whether the container's namespace is in this agent's scope (`--namespace-selector`):
    /// out of scope, its events are neither learned nor judged.
    pub fn in_scope(
        &mut self,
        container_id: &Arc<str>,
        pods_generation: u64,
        pod: &PodMeta,
        container: &ContainerMeta,
    ) -> bool {
        self.refresh(container_id, pods_generation, pod, container);
        self.cache
            .get(container_id)
            .is_some_and(|(_, a)| a.in_scope)
    }

    /// What the kernel kills at exec in `container_id` (a container of `pod`, which the
    /// caller has attributed): the allow list of its profile when that profile kills
    /// processes, and what the selecting policies deny with `killProcess`. Nothing for a
    /// namespace outside the scope or in `protected`, where nothing is ever killed.
    /// The uid of the profile that judges this container and when it was promoted, when one
    /// does (Monitoring or Enforcing).
    pub fn judged_since(
        &mut self,
        container_id: &Arc<str>,
        pods_generation: u64,
        pod: &PodMeta,
        container: &ContainerMeta,
    ) -> Option<(String, herdwatch_model::Timestamp)> {
        self.refresh(container_id, pods_generation, pod, container);
        let (_, applicable) = self.cache.get(container_id)?;
        let p = applicable
            .profile
            .as_ref()
            .filter(|_| applicable.in_scope)?;
        Some((p.uid.clone(), p.promoted_at?))
    }

    pub fn exec_rules(
        &mut self,
        container_id: &Arc<str>,
        pods_generation: u64,
        pod: &PodMeta,
        container: &ContainerMeta,
        protected: &[String],
    ) -> ExecRules {
        let mut rules = ExecRules::default();
        if protected.contains(&pod.namespace) {
            return rules;
        }
        self.refresh(container_id, pods_generation, pod, container);
        let Some((_, applicable)) = self.cache.get(container_id) else {
            return rules;
        };
        if !applicable.in_scope {
            return rules;
        }
        if let Some(p) = applicable.profile.as_ref().filter(|p| p.kill_process) {
            match &p.kernel_allow {
                KernelAllow::Paths(paths) => {
                    rules.allow = Some(paths.clone());
                    rules.spare_init |= !p.kill_container_init;
                }
                // The evaluator alone judges this profile (and kills from user space).
                KernelAllow::UserSpaceOnly(_) => {}
            }
        }
        for p in applicable.policies.iter().filter(|p| !p.dry_run) {
            add_policy_denies(&p.policy, &container.name, &mut rules);
        }
        rules
    }

    /// Every violation `event` of `container_id` (a container of `pod`) commits.
    pub fn check(
        &mut self,
        container_id: &Arc<str>,
        pods_generation: u64,
        pod: &PodMeta,
        container: &ContainerMeta,
        event: &Event<'_>,
    ) -> Vec<Finding> {
        self.refresh(container_id, pods_generation, pod, container);
        let Some((_, applicable)) = self.cache.get(container_id) else {
            return Vec::new();
        };
        let mut findings = Vec::new();
        if let Some(p) = &applicable.profile {
            if let Verdict::Violation(violation) = p.index.check(event) {
                findings.push(Finding {
                    violation,
                    source: Source::Profile {
                        name: p.name.clone(),
                        uid: p.uid.clone(),
                    },
                    action: p.action,
                    kill_process: p.kill_process,
                    kill_container_init: p.kill_container_init,
                    mode: match p.phase {
                        Phase::Enforcing => Mode::Enforce,
                        Phase::Monitoring | Phase::Learning => Mode::Monitor,
                    },
                });
            }
        }
        if !applicable.policies.is_empty() {
            let mut out: Vec<PolicyViolation> = Vec::new();
            let mut modes: Vec<Mode> = Vec::new();
            for p in &applicable.policies {
                let before = out.len();
                p.policy.check(&container.name, event, &mut out);
                for v in &mut out[before..] {
                    v.kill_process &= !p.dry_run;
                }
                let mode = if p.dry_run {
                    Mode::Monitor
                } else {
                    Mode::Enforce
                };
                modes.resize(out.len(), mode);
            }
            findings.extend(out.into_iter().zip(modes).map(|(v, mode)| {
                let name = match &v.violation.rule {
                    herdwatch_model::RuleRef::Policy { policy, .. } => policy.clone(),
                    herdwatch_model::RuleRef::Profile(_) => String::new(),
                };
                Finding {
                    violation: v.violation,
                    source: Source::Policy { name },
                    action: v.action,
                    kill_process: v.kill_process,
                    kill_container_init: v.kill_container_init,
                    mode,
                }
            }));
        }
        findings
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::attribution::pods::{ContainerKind, Workload};
    use herdwatch_api::common::{Behavior, ProcessEntry};
    use herdwatch_api::policy::{ClusterBehaviorPolicySpec, DenyKind, PolicyRule};
    use herdwatch_api::profile::{
        BehaviorProfileSpec, BehaviorProfileStatus, ResponseConfig, TargetKind, TargetRef,
    };
    use herdwatch_model::Process;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as ApiSelector;

    pub(crate) fn profile(phase: Phase, rv: &str, allowed_exe: &str) -> BehaviorProfile {
        let mut p = BehaviorProfile::new(
            "web-nginx",
            BehaviorProfileSpec {
                target_ref: TargetRef {
                    kind: TargetKind::Deployment,
                    name: "web".into(),
                },
                container: "nginx".into(),
                response: ResponseConfig {
                    kill_process: true,
                    ..ResponseConfig::default()
                },
                allowed: Behavior {
                    processes: vec![ProcessEntry {
                        exe: allowed_exe.into(),
                        ..ProcessEntry::default()
                    }],
                    ..Behavior::default()
                },
                ..BehaviorProfileSpec::default()
            },
        );
        p.metadata.namespace = Some("shop".into());
        p.metadata.uid = Some("profile-uid".into());
        p.metadata.resource_version = Some(rv.into());
        p.status = Some(BehaviorProfileStatus {
            phase: Some(phase),
            ..BehaviorProfileStatus::default()
        });
        p
    }

    pub(crate) fn policy(rv: &str, dry_run: bool) -> ClusterBehaviorPolicy {
        let mut p = ClusterBehaviorPolicy::new(
            "no-fetchers",
            ClusterBehaviorPolicySpec {
                namespace_selector: Some(ApiSelector {
                    match_labels: Some([("env".to_string(), "prod".to_string())].into()),
                    ..ApiSelector::default()
                }),
                pod_selector: Some(ApiSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..ApiSelector::default()
                }),
                rules: vec![PolicyRule {
                    name: "wget".into(),
                    deny: DenyKind::Binaries,
                    binaries: Some(vec!["wget".into()]),
                    kill_process: true,
                    ..PolicyRule::default()
                }],
                dry_run,
                ..ClusterBehaviorPolicySpec::default()
            },
        );
        p.metadata.resource_version = Some(rv.into());
        p
    }

    pub(crate) fn pod() -> PodMeta {
        PodMeta {
            uid: "u1".into(),
            namespace: "shop".into(),
            name: "web-1".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            workload: Workload {
                kind: "Deployment".into(),
                name: "web".into(),
                uid: Some("uid-web".into()),
            },
            containers: vec![ContainerMeta {
                name: "nginx".into(),
                kind: ContainerKind::App,
                image: "nginx".into(),
                image_id: String::new(),
                image_digest: Some("sha256:aa".into()),
                runtime: None,
                container_ids: vec!["c1".into()],
            }],
        }
    }

    fn exec<'a>(exe: &'a str, argv: &'a [String]) -> Event<'a> {
        Event::exec(Process::root_in_image(exe, argv))
    }

    #[test]
    fn only_judging_profiles_are_compiled_and_unchanged_ones_are_reused() {
        let learning = Arc::new(profile(Phase::Learning, "1", "/usr/sbin/nginx"));
        let (m, skipped) = compile_profiles(&[learning], &HashMap::new());
        assert!(m.is_empty() && skipped.is_empty());

        let monitoring = Arc::new(profile(Phase::Monitoring, "2", "/usr/sbin/nginx"));
        let (first, _) = compile_profiles(std::slice::from_ref(&monitoring), &HashMap::new());
        let key = ProfileKey {
            namespace: "shop".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            container: "nginx".into(),
        };
        let c = first.get(&key).unwrap();
        assert!(!c.kill_process, "Monitoring never kills");
        let (again, _) = compile_profiles(&[monitoring], &first);
        assert!(
            Arc::ptr_eq(c, again.get(&key).unwrap()),
            "same resourceVersion: not rebuilt"
        );

        let enforcing = Arc::new(profile(Phase::Enforcing, "3", "/usr/sbin/nginx"));
        let (changed, _) = compile_profiles(&[enforcing], &first);
        let c3 = changed.get(&key).unwrap();
        assert!(!Arc::ptr_eq(c, c3));
        assert!(c3.kill_process);
        assert_eq!(c3.resource_version, "3");
    }

    #[test]
    fn policies_are_compiled_once_per_resource_version() {
        let (first, skipped) = compile_policies(&[Arc::new(policy("1", false))], &[]);
        assert!(skipped.is_empty());
        let (again, _) = compile_policies(&[Arc::new(policy("1", false))], &first);
        assert!(Arc::ptr_eq(&first[0], &again[0]));
        let (changed, _) = compile_policies(&[Arc::new(policy("2", true))], &first);
        assert!(!Arc::ptr_eq(&first[0], &changed[0]));
        assert!(changed[0].dry_run);
    }

    fn store_with(
        profiles: &[BehaviorProfile],
        policies: &[ClusterBehaviorPolicy],
        ns_labels: &[(&str, &str)],
    ) -> Arc<EvalStore> {
        let store = Arc::new(EvalStore::default());
        let p: Vec<_> = profiles.iter().cloned().map(Arc::new).collect();
        let c: Vec<_> = policies.iter().cloned().map(Arc::new).collect();
        let labels: BTreeMap<String, String> = ns_labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        store.update(|s| {
            s.profiles = compile_profiles(&p, &HashMap::new()).0;
            s.policies = compile_policies(&c, &[]).0;
            s.namespaces.insert("shop".into(), labels);
        });
        store
    }

    #[test]
    fn events_are_judged_by_profile_and_selecting_policies() {
        let store = store_with(
            &[profile(Phase::Enforcing, "1", "/usr/sbin/nginx")],
            &[policy("1", false)],
            &[("env", "prod")],
        );
        let mut e = Evaluator::new(store.clone(), LabelSelector::default());
        let pod = pod();
        let id: Arc<str> = "c1".into();
        let argv = vec!["wget".to_owned()];
        assert!(e
            .check(
                &id,
                1,
                &pod,
                &pod.containers[0],
                &exec("/usr/sbin/nginx", &[])
            )
            .is_empty());
        let f = e.check(
            &id,
            1,
            &pod,
            &pod.containers[0],
            &exec("/usr/bin/wget", &argv),
        );
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[0].violation.rule.to_string(), "profile/processes");
        assert_eq!(
            f[0].source,
            Source::Profile {
                name: "web-nginx".into(),
                uid: "profile-uid".into()
            }
        );
        assert!(f[0].kill_process);
        assert_eq!(f[1].violation.rule.to_string(), "policy/no-fetchers/wget");
        assert_eq!(f[1].violation.subject, "/usr/bin/wget");
        assert_eq!(
            f[1].source,
            Source::Policy {
                name: "no-fetchers".into()
            }
        );
        assert!(f[1].kill_process);

        // The namespace loses its label: the policy no longer selects the pod.
        store.update(|s| {
            s.namespaces.insert("shop".into(), BTreeMap::new());
        });
        let f = e.check(
            &id,
            1,
            &pod,
            &pod.containers[0],
            &exec("/usr/bin/wget", &argv),
        );
        assert_eq!(f.len(), 1);
        // The pod loses its label (a new pod store generation): nothing selects it.
        let mut relabelled = pod.clone();
        relabelled.labels.clear();
        store.update(|s| {
            s.namespaces.insert(
                "shop".into(),
                [("env".to_string(), "prod".to_string())].into(),
            );
        });
        let f = e.check(
            &id,
            2,
            &relabelled,
            &relabelled.containers[0],
            &exec("/usr/bin/wget", &argv),
        );
        assert_eq!(f.len(), 1, "only the profile");
    }

    #[test]
    fn namespaces_outside_the_scope_are_not_judged() {
        let store = store_with(&[], &[policy("1", false)], &[("env", "prod")]);
        let pod = pod();
        let argv = vec!["wget".to_owned()];
        let id: Arc<str> = "c1".into();
        let c = &pod.containers[0];
        let mut out = Evaluator::new(store.clone(), LabelSelector::parse("test=yes").unwrap());
        assert!(!out.in_scope(&id, 1, &pod, c));
        assert!(out
            .check(&id, 1, &pod, c, &exec("/bin/wget", &argv))
            .is_empty());
        let mut inside = Evaluator::new(store.clone(), LabelSelector::parse("env=prod").unwrap());
        assert!(inside.in_scope(&id, 1, &pod, c));
        assert_eq!(
            inside
                .check(&id, 1, &pod, c, &exec("/bin/wget", &argv))
                .len(),
            1
        );
        let scope = Scope::new(LabelSelector::parse("env=prod").unwrap(), store);
        assert!(scope.includes("shop") && !scope.includes("unknown"));
    }

    fn exec_rules_of(e: &mut Evaluator, pod: &PodMeta, protected: &[&str]) -> ExecRules {
        let protected: Vec<String> = protected.iter().map(|s| s.to_string()).collect();
        e.exec_rules(&"c1".into(), 1, pod, &pod.containers[0], &protected)
    }

    #[test]
    fn the_kernel_gets_the_allow_list_of_a_killing_profile_and_the_policies_denies() {
        let store = store_with(
            &[profile(Phase::Enforcing, "1", "/usr/sbin/nginx")],
            &[policy("1", false)],
            &[("env", "prod")],
        );
        let mut e = Evaluator::new(store.clone(), LabelSelector::default());
        let r = exec_rules_of(&mut e, &pod(), &["kube-system", "herdwatch"]);
        assert_eq!(
            r.allow.as_deref(),
            Some(&[b"/usr/sbin/nginx".to_vec()].into())
        );
        assert_eq!(r.deny_names, [b"wget".to_vec()].into());

        // Protected namespaces and namespaces outside the scope: nothing, whatever applies.
        let mut system = pod();
        system.namespace = "kube-system".into();
        assert!(exec_rules_of(&mut e, &system, &["kube-system"]).is_empty());
        assert!(exec_rules_of(&mut e, &pod(), &["shop"]).is_empty());
        let mut outside = Evaluator::new(store, LabelSelector::parse("test=yes").unwrap());
        assert!(exec_rules_of(&mut outside, &pod(), &[]).is_empty());
    }

    #[test]
    fn profiles_that_do_not_kill_and_dry_runs_give_the_kernel_nothing() {
        for (phase, dry_run) in [
            (Phase::Monitoring, false),
            (Phase::Learning, false),
            (Phase::Enforcing, true),
        ] {
            let mut p = profile(phase, "1", "/usr/sbin/nginx");
            p.spec.response.dry_run = dry_run;
            let store = store_with(&[p], &[policy("1", true)], &[("env", "prod")]);
            let mut e = Evaluator::new(store, LabelSelector::default());
            let r = exec_rules_of(&mut e, &pod(), &[]);
            assert!(r.is_empty(), "{phase:?} dry run {dry_run}: {r:?}");
        }
        // Killing off in the profile's response.
        let mut p = profile(Phase::Enforcing, "1", "/usr/sbin/nginx");
        p.spec.response.kill_process = false;
        let mut e = Evaluator::new(store_with(&[p], &[], &[]), LabelSelector::default());
        assert!(exec_rules_of(&mut e, &pod(), &[]).is_empty());
    }

    #[test]
    fn a_profile_with_a_pattern_leaves_its_allow_list_to_user_space_but_not_the_denies() {
        let store = store_with(
            &[profile(Phase::Enforcing, "1", "/usr/sbin/nginx*")],
            &[policy("1", false)],
            &[("env", "prod")],
        );
        let mut e = Evaluator::new(store.clone(), LabelSelector::default());
        let r = exec_rules_of(&mut e, &pod(), &[]);
        assert_eq!(
            r.allow, None,
            "nginx-debug would be killed by an exact list"
        );
        assert_eq!(r.deny_names, [b"wget".to_vec()].into());
        let compiled = store.snapshot();
        let p = compiled.profiles.values().next().unwrap();
        assert!(
            matches!(&p.kernel_allow, KernelAllow::UserSpaceOnly(why) if why.contains("pattern"))
        );
    }

    #[test]
    fn a_learned_multi_call_binary_stays_on_the_allow_list_and_other_applets_die_from_user_space() {
        let mut p = profile(Phase::Enforcing, "1", "/usr/sbin/nginx");
        // What learning records for busybox run as `sh`.
        p.spec.allowed.processes = vec![ProcessEntry {
            exe: "/bin/busybox".into(),
            argv: Some(vec!["sh".into(), "**".into()]),
            uid: Some(0),
            ..ProcessEntry::default()
        }];
        let store = store_with(&[p], &[], &[]);
        let mut e = Evaluator::new(store, LabelSelector::default());
        let pod = pod();
        let r = exec_rules_of(&mut e, &pod, &[]);
        assert_eq!(
            r.allow.as_deref(),
            Some(&[b"/bin/busybox".to_vec()].into()),
            "the kernel cannot read the pattern and allows the executable"
        );
        let id: Arc<str> = "c1".into();
        let sh = vec!["sh".to_owned(), "-c".to_owned(), "id".to_owned()];
        assert!(e
            .check(&id, 1, &pod, &pod.containers[0], &exec("/bin/busybox", &sh))
            .is_empty());
        let nc = vec!["busybox".to_owned(), "nc".to_owned(), "-l".to_owned()];
        let f = e.check(&id, 1, &pod, &pod.containers[0], &exec("/bin/busybox", &nc));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].violation.rule.to_string(), "profile/processes");
        assert_eq!(f[0].violation.subject, "/bin/busybox [busybox nc **]");
        assert!(f[0].kill_process, "killed from user space");
    }

    #[test]
    fn dry_run_policies_record_but_never_kill() {
        let store = store_with(&[], &[policy("1", true)], &[("env", "prod")]);
        let mut e = Evaluator::new(store, LabelSelector::default());
        let pod = pod();
        let argv = vec!["wget".to_owned()];
        let f = e.check(
            &"c1".into(),
            1,
            &pod,
            &pod.containers[0],
            &exec("/bin/busybox", &argv),
        );
        assert_eq!(f.len(), 1);
        assert!(!f[0].kill_process);
        assert_eq!(f[0].mode, Mode::Monitor, "a dry-run policy only monitors");
    }
}
