//! In-kernel enforcement: which cgroups' execs the kernel judges and against which
//! executables, and keeping the kernel's maps equal to that.
//!
//! The exec program (node-agent-ebpf `process.rs`) can decide one thing alone, before the
//! new program runs a single instruction: whether its executable's path, the last
//! component of it, or the names its first arguments give it, are on its cgroup's allow
//! list or deny list; if it must die, it sends SIGKILL right there and flags the exec
//! event. Everything else (argument patterns, user
//! ids, the image's layers, exec sessions, network, files, syscalls) stays with the
//! evaluator in user space, which also kills from there (through a pidfd) what the kernel
//! let through. So the kernel's kills must be a subset of what the evaluator would kill for
//! the same exec:
//!
//! - an allow list comes only from a profile that kills processes (Enforcing with
//!   `response.killProcess`, not a dry run; see [`CompiledProfile::kill_process`]), and is
//!   the exact executables of its process entries ([`kernel_allow`]). An entry with a uid
//!   or an argument pattern counts as allowing its executable: the kernel lets every run of
//!   it through and the evaluator judges the uid and arguments. So a learned multi-call
//!   binary, which has one entry per applet (`/bin/busybox [sh **]`), is allowed by path in
//!   the kernel, and the evaluator kills `busybox nc` through a pidfd. A profile with an
//!   entry the kernel cannot match exactly (a pattern in `exe`) gets no allow list at all;
//! - a deny list comes from the `Binaries` and `Shells` rules with `killProcess` of the
//!   non-dry-run policies that select the pod ([`add_policy_denies`]), with the policy
//!   matcher's reading of names: a `Binaries` name matches the executable's last
//!   component, `argv[0]`'s, or the applet a multi-call binary is asked to be
//!   (`herdwatch_model::policy::applet`: `argv[0]`, or `argv[1]` after `busybox`, so
//!   `busybox wget` is `wget`); a shell is an executable named like one, or such an applet.
//!   The kernel reads `argv[0]` and `argv[1]` only: the applet of `busybox busybox wget`
//!   is left to the evaluator. It compares whole names, so a login shell's `argv[0]`, from
//!   which busybox and the matcher drop one `-` (`-sh` runs `sh`), is left to the evaluator
//!   too;
//! - only containers of pods the agent has attributed, in its namespace scope and outside
//!   the protected namespaces, get either.
//!
//! [`Evaluator::exec_rules`] computes the [`ExecRules`] of one container from what the
//! evaluator already holds for it; the engine does so for every container cgroup with a
//! live process, and [`KernelEnforcer::sync`] writes the difference to the kernel.
//!
//! [`CompiledProfile::kill_process`]: super::CompiledProfile::kill_process
//! [`Evaluator::exec_rules`]: super::Evaluator::exec_rules

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use herdwatch_abi::{
    Enforcement, ExeHashes, ExeKey, ExeVerdict, ENFORCE_ALLOW_LIST, ENFORCE_DENY_LIST,
    ENFORCE_INHERITED, ENFORCE_SPARE_INIT, EXE_ALLOWED, EXE_DENIED, EXE_DENIED_APPLET,
    EXE_DENIED_ARGV0, EXE_KEY_NAME, EXE_KEY_PATH, EXE_MULTI_CALL,
};
use herdwatch_model::pattern::{is_glob, path_glob_match};
use herdwatch_model::policy::{ClusterPolicy, Deny, MULTI_CALL, SHELLS};
use herdwatch_model::BehaviorSet;
use tracing::{info, warn};

use crate::capture::ExecRuleMaps;

/// Namespaces where processes are never killed whatever the agent is told: the same
/// rule the operator applies to evictions: kube-system, herdwatch's own namespace, and
/// the `extra` ones the operator is given too (`--protected-namespaces`).
pub fn protected_namespaces(own_namespace: &str, extra: &[String]) -> Vec<String> {
    let mut protected = vec!["kube-system".to_owned()];
    let wanted = std::iter::once(own_namespace).chain(extra.iter().map(String::as_str));
    for ns in wanted.map(str::trim) {
        if !ns.is_empty() && !protected.iter().any(|p| p == ns) {
            protected.push(ns.to_owned());
        }
    }
    protected
}

/// What a profile's process entries allow, in the kernel's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelAllow {
    /// Exactly these exec paths.
    Paths(Arc<BTreeSet<Vec<u8>>>),
    /// The kernel cannot decide as the evaluator does; why. The evaluator kills alone.
    UserSpaceOnly(String),
}

/// Whether a string could be the agent's rendering of an exec path, byte for byte.
///
/// The agent renders exec paths with `argv::escape_bytes`: valid UTF-8 without control
/// characters stays as it is; anything else becomes `\xNN` or `\u{..}` escapes.
fn exact_bytes(s: &str) -> Exactness {
    if s.chars().any(char::is_control) {
        // Escaped away in every path the agent renders: nothing ever matches it.
        Exactness::NeverMatches
    } else if s.contains('\\') {
        // Either a literal backslash or an escape of bytes that are not the string's own:
        // the kernel, which sees the raw bytes, cannot tell which the evaluator matches.
        Exactness::Ambiguous
    } else if ExeHashes::of(s.as_bytes()).is_none() {
        // Longer than the kernel reports: execs of it arrive cut, and the kernel leaves cut
        // paths to the evaluator.
        Exactness::NeverMatches
    } else {
        Exactness::Exact
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exactness {
    Exact,
    NeverMatches,
    Ambiguous,
}

/// The allow list the kernel can apply for a profile's allowed `set`.
pub fn kernel_allow(set: &BehaviorSet) -> KernelAllow {
    let mut paths = BTreeSet::new();
    for entry in set.processes.entries() {
        let exe = entry.rule.exe.as_str();
        if is_glob(exe) {
            // The evaluator allows every path the pattern matches; the kernel compares
            // exact paths and would kill those.
            return KernelAllow::UserSpaceOnly(format!(
                "process entry {exe:?} is a pattern and the kernel matches exact paths only"
            ));
        }
        match exact_bytes(exe) {
            Exactness::Exact => {
                paths.insert(exe.as_bytes().to_vec());
            }
            Exactness::NeverMatches => {}
            Exactness::Ambiguous => {
                return KernelAllow::UserSpaceOnly(format!(
                    "process entry {exe:?} has a backslash, which may stand for escaped bytes \
                     the kernel cannot compare"
                ))
            }
        }
    }
    KernelAllow::Paths(Arc::new(paths))
}

/// The executables of one container the kernel judges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecRules {
    /// The profile's allow list: an exec of any other path is killed. None: no allow list.
    pub allow: Option<Arc<BTreeSet<Vec<u8>>>>,
    /// Exact paths denied.
    pub deny_paths: BTreeSet<Vec<u8>>,
    /// Names denied (`wget`): as the executable's last component, whatever directory it is
    /// in, or as `argv[0]`'s (busybox's `wget` runs as `/proc/self/exe` named `wget`).
    pub deny_names: BTreeSet<Vec<u8>>,
    /// Names denied as the executable's last component or as the applet a [`MULTI_CALL`]
    /// binary is asked to be (`/bin/sh` → busybox with `argv[0]` `sh`, `busybox sh`,
    /// `busybox wget`): the shells, and the `Binaries` names, which are in `deny_names`
    /// too. A name here alone is not denied as `argv[0]` of any other program: the policy
    /// matcher does not take `exec -a sh /usr/bin/python3` for a shell.
    pub deny_applets: BTreeSet<Vec<u8>>,
    /// Some rule behind the lists did not ask to kill a container's init (PID 1): the
    /// kernel spares it, and user space records it as spared.
    pub spare_init: bool,
    /// For the containers below a pod's cgroup that have no entry of their own yet, not
    /// for the cgroup itself ([`ExecRules::common_to`]).
    pub inherited: bool,
}

impl ExecRules {
    /// The rules every one of `containers` (the rules of each container of one pod) has in
    /// common: what the kernel may apply to a container of the pod it has no entry for yet
    /// (one created since the agent last wrote: a restart, a container started late). The
    /// kernel's kills in such a container must still be a subset of what the evaluator will
    /// kill once it knows which container it is, whichever it turns out to be:
    /// - an allow list only when every container has one, and then their union;
    /// - a name or path denied only when every container denies it;
    /// - a container's init always spared.
    pub fn common_to(containers: &[ExecRules]) -> ExecRules {
        let Some((first, rest)) = containers.split_first() else {
            return ExecRules::default();
        };
        let mut common = first.clone();
        for rules in rest {
            common.allow = match (common.allow.take(), &rules.allow) {
                (Some(a), Some(b)) => Some(Arc::new(a.union(b).cloned().collect())),
                _ => None,
            };
            common.deny_paths.retain(|p| rules.deny_paths.contains(p));
            common.deny_names.retain(|n| rules.deny_names.contains(n));
            common
                .deny_applets
                .retain(|n| rules.deny_applets.contains(n));
        }
        common.spare_init = true;
        common.inherited = true;
        common
    }

    /// Nothing for the kernel to judge: the cgroup needs no entry.
    pub fn is_empty(&self) -> bool {
        self.allow.is_none() && !self.denies()
    }

    fn denies(&self) -> bool {
        !self.deny_paths.is_empty() || !self.deny_names.is_empty() || !self.deny_applets.is_empty()
    }

    /// The `ENFORCE_*` bits of the cgroup's entry.
    pub fn flags(&self) -> u32 {
        let mut flags = 0;
        if self.allow.is_some() {
            flags |= ENFORCE_ALLOW_LIST;
        }
        if self.denies() {
            flags |= ENFORCE_DENY_LIST;
        }
        if self.spare_init {
            flags |= ENFORCE_SPARE_INIT;
        }
        if self.inherited {
            flags |= ENFORCE_INHERITED | ENFORCE_SPARE_INIT;
        }
        flags
    }

    /// The executable map entries of these rules for `cgroup_id` under `generation`.
    pub fn entries(&self, cgroup_id: u64, generation: u32) -> BTreeMap<ExeKey, ExeVerdict> {
        let mut out: BTreeMap<ExeKey, ExeVerdict> = BTreeMap::new();
        let mut add = |bytes: &[u8], kind: u8, bits: u32| {
            let Some(h) = ExeHashes::of(bytes) else {
                return;
            };
            let (hash, len) = match kind {
                EXE_KEY_NAME => (h.name, h.name_len),
                _ => (h.path, h.path_len),
            };
            let key = ExeKey {
                cgroup_id,
                hash,
                generation,
                len,
                kind,
                _pad: 0,
            };
            out.entry(key).or_default().bits |= bits;
        };
        for path in self.allow.iter().flat_map(|a| a.iter()) {
            add(path, EXE_KEY_PATH, EXE_ALLOWED);
        }
        for path in &self.deny_paths {
            add(path, EXE_KEY_PATH, EXE_DENIED);
        }
        for name in &self.deny_names {
            add(name, EXE_KEY_NAME, EXE_DENIED | EXE_DENIED_ARGV0);
        }
        for name in &self.deny_applets {
            add(name, EXE_KEY_NAME, EXE_DENIED | EXE_DENIED_APPLET);
        }
        if !self.deny_applets.is_empty() {
            for name in MULTI_CALL {
                add(name.as_bytes(), EXE_KEY_NAME, EXE_MULTI_CALL);
            }
        }
        out
    }
}

/// Adds the executables `policy` denies with `killProcess` in `container` that the kernel
/// can recognise. The rest of its rules stay with the evaluator.
pub fn add_policy_denies(policy: &ClusterPolicy, container: &str, rules: &mut ExecRules) {
    for rule in &policy.rules {
        if !rule.kill_process || rule.exceptions.containers.iter().any(|c| c == container) {
            continue;
        }
        // A `Binaries` name is a program's name wherever it shows; a shell's name counts
        // as `argv[0]` only for a multi-call binary (as its applet).
        let (names, as_argv0): (Vec<&str>, bool) = match &rule.deny {
            Deny::Binaries(names) => (names.iter().map(String::as_str).collect(), true),
            Deny::Shells => (SHELLS.to_vec(), false),
            // Image layers, uids, exec sessions and peers are not in the exec path.
            Deny::Drift | Deny::Root | Deny::ExecSessions | Deny::EgressOutside(_) => continue,
        };
        rules.spare_init |= !rule.kill_container_init;
        let exceptions = &rule.exceptions.executables;
        for name in names {
            if exact_bytes(name) != Exactness::Exact || name.is_empty() {
                continue;
            }
            if name.contains('/') {
                // A path, compared as a pattern by the evaluator: exact unless it has
                // pattern characters.
                if is_glob(name) || exceptions.iter().any(|g| path_glob_match(g, name)) {
                    continue;
                }
                rules.deny_paths.insert(name.as_bytes().to_vec());
            } else if exceptions.is_empty() {
                // A name matches the executable's last component, in any directory, or a
                // name the arguments give it. An exception (a pattern over whole paths)
                // may cover some of those directories, which the kernel cannot tell: then
                // the evaluator decides.
                if as_argv0 {
                    rules.deny_names.insert(name.as_bytes().to_vec());
                }
                // Every name is also denied as an applet (`busybox wget`), except one the
                // policy matcher never takes for an applet: one that starts with `-` is an
                // option (`busybox --help`), and a multi-call name hands the choice on to
                // the next argument. The kernel compares hashes of whole names, so leaving
                // these out is all it takes for it to read applets the same way.
                if !name.starts_with('-') && !MULTI_CALL.contains(&name) {
                    rules.deny_applets.insert(name.as_bytes().to_vec());
                }
            }
        }
    }
}

/// What one cgroup has in the kernel.
#[derive(Debug)]
struct Written {
    generation: u32,
    /// None: adopted from an earlier agent's maps, rules unknown.
    rules: Option<Arc<ExecRules>>,
    /// The executable keys in the map under `generation`.
    keys: Vec<ExeKey>,
    /// Writing failed: the cgroup has no entry, and is not retried until its rules change.
    failed: bool,
}

/// Counters of the enforcer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnforcerStats {
    /// cgroups the kernel judges now.
    pub cgroups: usize,
    /// Executable keys in the kernel, retired ones included.
    pub keys: usize,
    /// Map writes that failed (a full map: see `CaptureConfig`).
    pub write_errors: u64,
    /// Rule sets written (new cgroups and changes).
    pub updates: u64,
}

/// Keeps the kernel's enforcement maps equal to the wanted [`ExecRules`] per cgroup.
///
/// A cgroup whose rules change gets its new executable keys under the next generation,
/// then its entry pointing at that generation: the exec program reads the entry once and
/// then only keys of that generation, so it judges by the whole old set or the whole new
/// one. The old keys are deleted one sync later, not at once: a program that read the old
/// entry just before the switch may still be looking them up, and a missing allowed key
/// would kill. (A program run takes microseconds; syncs are a metrics interval apart.)
/// A cgroup that needs no rules any more loses its entry at once, so it stops being judged
/// at once.
#[derive(Debug, Default)]
pub struct KernelEnforcer {
    written: HashMap<u64, Written>,
    /// Keys replaced or dropped at the last sync, deleted at the next.
    retired: Vec<ExeKey>,
    stats: EnforcerStats,
}

impl KernelEnforcer {
    pub fn new() -> Self {
        KernelEnforcer::default()
    }

    pub fn stats(&self) -> EnforcerStats {
        let mut stats = self.stats;
        stats.cgroups = self.written.values().filter(|w| !w.failed).count();
        stats.keys =
            self.written.values().map(|w| w.keys.len()).sum::<usize>() + self.retired.len();
        stats
    }

    /// The generation `cgroup_id` is judged under, if the kernel judges it.
    pub fn generation(&self, cgroup_id: u64) -> Option<u32> {
        self.written
            .get(&cgroup_id)
            .filter(|w| !w.failed)
            .map(|w| w.generation)
    }

    /// Starts from what an earlier agent left in the kernel's maps (adopted pins): `judged`
    /// are its cgroups, each with its entry and the keys of that entry's generation;
    /// `keys` are every key in the map. The first sync that wants a cgroup writes its rules
    /// afresh under the next generation, as for a change; one that does not want it takes
    /// it out. Keys of no cgroup's current generation go at the next sync.
    pub fn adopt(&mut self, judged: Vec<(u64, Enforcement, Vec<ExeKey>)>, keys: Vec<ExeKey>) {
        let current: std::collections::HashSet<ExeKey> = judged
            .iter()
            .flat_map(|(_, _, k)| k.iter().copied())
            .collect();
        self.retired
            .extend(keys.into_iter().filter(|k| !current.contains(k)));
        for (cgroup_id, enforcement, keys) in judged {
            self.written.insert(
                cgroup_id,
                Written {
                    generation: enforcement.generation,
                    rules: None,
                    keys,
                    failed: false,
                },
            );
        }
    }

    /// Brings the maps to `wanted`: cgroups absent from it are not judged any more.
    pub fn sync(&mut self, maps: &mut dyn ExecRuleMaps, wanted: &BTreeMap<u64, Arc<ExecRules>>) {
        for key in std::mem::take(&mut self.retired) {
            if let Err(error) = maps.remove_exe_rule(&key) {
                warn!(%error, cgroup_id = key.cgroup_id, "cannot delete an old in-kernel executable rule");
                self.stats.write_errors += 1;
            }
        }

        let gone: Vec<u64> = self
            .written
            .keys()
            .filter(|id| !wanted.contains_key(id))
            .copied()
            .collect();
        for cgroup_id in gone {
            let Some(w) = self.written.remove(&cgroup_id) else {
                continue;
            };
            if let Err(error) = maps.remove_enforcement(cgroup_id) {
                warn!(%error, cgroup_id, "cannot take a cgroup out of in-kernel enforcement");
                self.stats.write_errors += 1;
            }
            if !w.failed {
                info!(cgroup_id, "the kernel no longer kills in this cgroup");
            }
            self.retired.extend(w.keys);
        }

        for (&cgroup_id, rules) in wanted {
            let previous = self.written.get(&cgroup_id);
            if previous.is_some_and(|w| w.rules.as_ref() == Some(rules)) {
                continue;
            }
            let generation = previous.map_or(1, |w| w.generation.wrapping_add(1));
            let entries = rules.entries(cgroup_id, generation);
            let mut keys = Vec::with_capacity(entries.len());
            let mut result = Ok(());
            for (key, verdict) in &entries {
                if let Err(error) = maps.insert_exe_rule(key, *verdict) {
                    result = Err(error);
                    break;
                }
                keys.push(*key);
            }
            let result = result.and_then(|()| {
                maps.set_enforcement(
                    cgroup_id,
                    Enforcement {
                        flags: rules.flags(),
                        generation,
                    },
                )
            });
            if let Some(old) = self.written.remove(&cgroup_id) {
                self.retired.extend(old.keys);
            }
            self.stats.updates += 1;
            let failed = match result {
                Ok(()) => {
                    info!(
                        cgroup_id,
                        generation,
                        allowed = rules.allow.as_ref().map(|a| a.len()),
                        denied = rules.deny_paths.len() + rules.deny_names.len(),
                        "the kernel kills what this cgroup's rules do not allow"
                    );
                    false
                }
                Err(error) => {
                    // Half a rule set must not judge: the cgroup falls back to the
                    // evaluator's kills from user space.
                    let _ = maps.remove_enforcement(cgroup_id);
                    warn!(%error, cgroup_id, "cannot write the in-kernel rules of a container; its processes are killed from user space");
                    self.stats.write_errors += 1;
                    self.retired.append(&mut keys);
                    true
                }
            };
            self.written.insert(
                cgroup_id,
                Written {
                    generation,
                    rules: Some(rules.clone()),
                    keys,
                    failed,
                },
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use herdwatch_abi::{argv_names, MAX_ARGV};
    use herdwatch_model::behavior::{Entry, ProcessRule, Rules};
    use herdwatch_model::event::{Event, Process};
    use herdwatch_model::pattern::ArgvPattern;
    use herdwatch_model::policy::{Exceptions, PolicyRule};
    use herdwatch_model::response::ResponseAction;
    use std::io;

    /// The kernel's maps as tables, with a capacity for the executable rules.
    #[derive(Debug, Default)]
    pub(crate) struct MemMaps {
        pub enforce: HashMap<u64, Enforcement>,
        pub rules: HashMap<ExeKey, ExeVerdict>,
        pub max_rules: Option<usize>,
    }

    impl ExecRuleMaps for MemMaps {
        fn set_enforcement(&mut self, cgroup_id: u64, e: Enforcement) -> io::Result<()> {
            self.enforce.insert(cgroup_id, e);
            Ok(())
        }
        fn remove_enforcement(&mut self, cgroup_id: u64) -> io::Result<()> {
            self.enforce.remove(&cgroup_id);
            Ok(())
        }
        fn insert_exe_rule(&mut self, key: &ExeKey, v: ExeVerdict) -> io::Result<()> {
            if self.max_rules.is_some_and(|max| self.rules.len() >= max) {
                return Err(io::Error::from_raw_os_error(libc::E2BIG));
            }
            self.rules.insert(*key, v);
            Ok(())
        }
        fn remove_exe_rule(&mut self, key: &ExeKey) -> io::Result<()> {
            self.rules.remove(key);
            Ok(())
        }
    }

    impl MemMaps {
        /// What the exec program decides for `path` run with no arguments in `cgroup_id`.
        pub(crate) fn kills(&self, cgroup_id: u64, path: &[u8]) -> bool {
            self.kills_run(cgroup_id, path, &[])
        }

        /// What the exec program decides for `path` run with `argv` in `cgroup_id` (its
        /// logic, in Rust, on the argv block the kernel reads).
        pub(crate) fn kills_run(&self, cgroup_id: u64, path: &[u8], argv: &[&str]) -> bool {
            let Some(e) = self.enforce.get(&cgroup_id) else {
                return false;
            };
            let h = ExeHashes::of(path).unwrap();
            let mut block = [0u8; MAX_ARGV];
            let mut len = 0;
            for arg in argv {
                let end = (len + arg.len() + 1).min(MAX_ARGV);
                block[len..end - 1].copy_from_slice(&arg.as_bytes()[..end - 1 - len]);
                len = end;
            }
            let names = argv_names(&block, len);
            let bits = |hash, len, kind| {
                self.rules
                    .get(&ExeKey {
                        cgroup_id,
                        hash,
                        generation: e.generation,
                        len,
                        kind,
                        _pad: 0,
                    })
                    .map_or(0, |v| v.bits)
            };
            let by_path = bits(h.path, h.path_len, EXE_KEY_PATH);
            let by_name = bits(h.name, h.name_len, EXE_KEY_NAME);
            let argv0 = if names.complete >= 1 {
                bits(names.argv0, names.argv0_len, EXE_KEY_NAME)
            } else {
                0
            };
            let argv1 = if names.complete >= 2 {
                bits(names.argv1, names.argv1_len, EXE_KEY_NAME)
            } else {
                0
            };
            let applet = if argv0 & EXE_MULTI_CALL != 0 {
                argv1
            } else {
                argv0
            };
            let by_argv = argv0 & EXE_DENIED_ARGV0 != 0
                || (by_name & EXE_MULTI_CALL != 0 && applet & EXE_DENIED_APPLET != 0);
            (e.flags & ENFORCE_DENY_LIST != 0 && ((by_path | by_name) & EXE_DENIED != 0 || by_argv))
                || (e.flags & ENFORCE_ALLOW_LIST != 0 && by_path & EXE_ALLOWED == 0)
        }
    }

    fn set(exes: &[&str]) -> BehaviorSet {
        let mut s = BehaviorSet::new();
        s.processes = Rules::from_entries(exes.iter().map(|e| {
            Entry::manual(ProcessRule {
                exe: (*e).into(),
                argv: None,
                uid: None,
            })
        }));
        s
    }

    fn paths(p: &[&str]) -> Arc<BTreeSet<Vec<u8>>> {
        Arc::new(p.iter().map(|s| s.as_bytes().to_vec()).collect())
    }

    #[test]
    fn exact_process_entries_are_the_allow_list() {
        let mut s = set(&["/usr/sbin/nginx", "/bin/sh"]);
        // An argument pattern or uid narrows what the evaluator allows; the executable
        // itself stays allowed in the kernel.
        s.processes =
            Rules::from_entries(s.processes.entries().iter().cloned().chain([Entry::manual(
                ProcessRule {
                    exe: "/usr/bin/python3".into(),
                    argv: Some(ArgvPattern(vec!["python3".into(), "-m".into(), "*".into()])),
                    uid: Some(1000),
                },
            )]));
        assert_eq!(
            kernel_allow(&s),
            KernelAllow::Paths(paths(&["/bin/sh", "/usr/bin/python3", "/usr/sbin/nginx"]))
        );
        // Entries no exec can match are left out; they allow nothing anywhere.
        let long = format!("/{}", "x".repeat(300));
        assert_eq!(
            kernel_allow(&set(&["/app", "/bad\u{1}name", &long])),
            KernelAllow::Paths(paths(&["/app"]))
        );
    }

    #[test]
    fn a_profile_learned_per_applet_allows_its_multi_call_binaries_by_path() {
        use herdwatch_model::observation::{Observation, WorkloadKey};
        use herdwatch_model::sketch::ReplicaId;
        use herdwatch_model::{Limits, ProfileIndex, Timestamp};
        let key = WorkloadKey {
            namespace: "shop".into(),
            owner_kind: "Deployment".into(),
            owner_name: "web".into(),
            container: "web".into(),
        };
        let mut learned = Observation::new(key, "sha256:aa", "node-1", Timestamp(0));
        let seen = [
            run("/bin/busybox", &["sh", "-c", "./start"]),
            run("/proc/self/exe", &["httpd", "-f"]),
            run("/bin/httpd", &["httpd", "-f"]),
        ];
        for (exe, argv) in &seen {
            learned.observe(
                &Event::exec(Process::root_in_image(exe, argv)),
                ReplicaId(1),
                Timestamp(1),
                &Limits::DEFAULT,
            );
        }
        let set = &learned.behavior;
        assert!(
            set.processes
                .entries()
                .iter()
                .any(|e| e.rule.argv.is_some()),
            "multi-call binaries are learned with argument patterns: {set:?}"
        );
        let allow = kernel_allow(set);
        assert_eq!(
            allow,
            KernelAllow::Paths(paths(&["/bin/busybox", "/bin/httpd", "/proc/self/exe"])),
            "argument patterns keep the exact executables on the kernel's allow list"
        );

        let KernelAllow::Paths(allowed) = allow else {
            unreachable!()
        };
        let mut maps = MemMaps::default();
        let rules = ExecRules {
            allow: Some(allowed),
            ..ExecRules::default()
        };
        KernelEnforcer::new().sync(&mut maps, &BTreeMap::from([(10, Arc::new(rules))]));
        let index = ProfileIndex::build(set);
        for (exe, argv, kernel_kills, evaluator_allows) in [
            ("/bin/busybox", &["sh", "-c", "id"][..], false, true),
            // Through the kernel, and the evaluator's to kill.
            ("/bin/busybox", &["busybox", "nc", "-l"], false, false),
            ("/proc/self/exe", &["nc", "-e", "/bin/sh"], false, false),
            ("/usr/bin/nc", &["nc"], true, false),
        ] {
            let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
            let args: Vec<&str> = argv.iter().map(String::as_str).collect();
            assert_eq!(
                maps.kills_run(10, exe.as_bytes(), &args),
                kernel_kills,
                "{exe} {argv:?} in the kernel"
            );
            let verdict = index.check(&Event::exec(Process::root_in_image(exe, &argv)));
            assert_eq!(
                verdict.is_allowed(),
                evaluator_allows,
                "{exe} {argv:?} in the evaluator: {verdict:?}"
            );
        }
    }

    #[test]
    fn patterns_and_escapes_leave_the_profile_to_user_space() {
        for (exe, why) in [
            ("/usr/bin/python3*", "pattern"),
            ("/opt/app?", "pattern"),
            ("/tmp/\\xc3(bin", "backslash"),
        ] {
            let allow = kernel_allow(&set(&["/app", exe]));
            assert!(
                matches!(&allow, KernelAllow::UserSpaceOnly(reason) if reason.contains(why)),
                "{exe}: {allow:?}"
            );
        }
    }

    fn rule(name: &str, deny: Deny, kill: bool, exceptions: Exceptions) -> PolicyRule {
        PolicyRule {
            name: name.into(),
            deny,
            action: ResponseAction::Tag,
            kill_process: kill,
            kill_container_init: false,
            exceptions,
        }
    }

    fn policy(rules: Vec<PolicyRule>) -> ClusterPolicy {
        ClusterPolicy {
            name: "p".into(),
            rules,
            ..ClusterPolicy::default()
        }
    }

    fn names(r: &ExecRules) -> Vec<String> {
        r.deny_names
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect()
    }

    #[test]
    fn the_kernel_spares_a_containers_init_unless_every_rule_asks() {
        let shells = |init: bool| PolicyRule {
            kill_container_init: init,
            ..rule("shells", Deny::Shells, true, Exceptions::default())
        };
        let mut r = ExecRules::default();
        add_policy_denies(&policy(vec![shells(true)]), "app", &mut r);
        assert!(!r.spare_init);
        assert_eq!(r.flags() & ENFORCE_SPARE_INIT, 0);
        add_policy_denies(&policy(vec![shells(false)]), "app", &mut r);
        assert!(
            r.spare_init,
            "one rule without killContainerInit spares the init"
        );
        assert_ne!(r.flags() & ENFORCE_SPARE_INIT, 0);
        // A rule the kernel does not apply does not count.
        let mut r = ExecRules::default();
        let drift = rule("drift", Deny::Drift, true, Exceptions::default());
        add_policy_denies(&policy(vec![shells(true), drift]), "app", &mut r);
        assert!(!r.spare_init);
    }

    #[test]
    fn policies_deny_names_and_exact_paths_that_kill() {
        let p = policy(vec![
            rule(
                "fetchers",
                Deny::Binaries(vec![
                    "wget".into(),
                    "/usr/bin/curl".into(),
                    "/opt/tools/*".into(),
                ]),
                true,
                Exceptions::default(),
            ),
            rule(
                "tag-only",
                Deny::Binaries(vec!["nc".into()]),
                false,
                Exceptions::default(),
            ),
            rule("drift", Deny::Drift, true, Exceptions::default()),
            rule("root", Deny::Root, true, Exceptions::default()),
        ]);
        let mut r = ExecRules::default();
        add_policy_denies(&p, "app", &mut r);
        assert_eq!(names(&r), ["wget"]);
        assert_eq!(
            r.deny_applets,
            BTreeSet::from([b"wget".to_vec()]),
            "busybox wget is wget"
        );
        assert_eq!(r.deny_paths, BTreeSet::from([b"/usr/bin/curl".to_vec()]));
        assert_eq!(r.flags(), ENFORCE_DENY_LIST | ENFORCE_SPARE_INIT);

        let mut shells = ExecRules::default();
        add_policy_denies(
            &policy(vec![rule("sh", Deny::Shells, true, Exceptions::default())]),
            "app",
            &mut shells,
        );
        assert!(shells.deny_names.is_empty());
        assert_eq!(shells.deny_applets.len(), SHELLS.len());
        assert!(shells.deny_applets.contains(b"bash".as_slice()));
        assert_eq!(shells.flags(), ENFORCE_DENY_LIST | ENFORCE_SPARE_INIT);
    }

    fn run(exe: &str, argv: &[&str]) -> (String, Vec<String>) {
        (exe.to_owned(), argv.iter().map(|a| a.to_string()).collect())
    }

    /// Execs whose verdict turns on their arguments: busybox applets, `exec -a`, paths in
    /// `argv[0]`, options, and near misses.
    fn runs() -> Vec<(String, Vec<String>)> {
        vec![
            run("/proc/self/exe", &["wget", "-q", "http://x/"]),
            run("/proc/self/exe", &["/usr/bin/wget"]),
            run("/proc/self/exe", &["wgetx"]),
            run("/proc/self/exe", &["sh", "-c", "id"]),
            run("/proc/self/exe", &["busybox", "wget"]),
            run("/usr/bin/wget", &["fetch"]),
            run("/usr/bin/python3", &["wget"]),
            run("/usr/bin/python3", &["python3", "wget"]),
            run("/usr/bin/python3", &["sh"]),
            run("/usr/bin/python3", &["busybox", "sh"]),
            run("/usr/bin/python3", &["busybox", "wget"]),
            run("/bin/busybox", &["sh", "-c", "id"]),
            run("/bin/busybox", &["/bin/ash"]),
            run("/bin/busybox", &["busybox", "sh"]),
            run("/bin/toybox", &["toybox", "bash"]),
            run("/bin/busybox", &["busybox", "ls"]),
            run("/bin/busybox", &["busybox", "wget"]),
            run("/bin/busybox", &["/bin/busybox", "wget", "http://x/"]),
            run("/bin/toybox", &["toybox", "wget"]),
            run("/bin/busybox", &["busybox", "/usr/bin/wget"]),
            run("/bin/busybox", &["busybox", "-/wget"]),
            run("/bin/busybox", &["busybox", "-wget"]),
            run("/bin/busybox", &["busybox", "--list"]),
            run("/bin/busybox", &["busybox", "--help", "wget"]),
            run("/bin/busybox", &["busybox", "toybox"]),
            run("/bin/busybox", &["toybox", "-x"]),
            run("/bin/busybox", &["busybox"]),
            run("/bin/busybox", &["ls", "-l"]),
            run("/bin/busybox", &["ls", "wget"]),
            run("/bin/busybox", &["wget"]),
            run("/bin/busybox", &["-wget"]),
            run("/bin/busybox", &["-sh"]),
            run("/bin/busybox", &["-busybox", "wget"]),
            run("/bin/busybox", &["--sh"]),
            run("/bin/busybox", &[]),
            run("/bin/bash", &[]),
            run("/bin/true", &["", "sh"]),
            run("/opt/busybox", &["", "sh"]),
            run("/opt/busybox", &["busybox", ""]),
        ]
    }

    /// Runs every exec of [`runs`] through the policy matcher and through the kernel's
    /// logic on the maps `p` gives cgroup 10, and requires the same verdict except for the
    /// execs in `user_space_only`: those the matcher kills and the kernel lets through, for
    /// the evaluator to kill from user space. Returns the execs killed (`exe argv...`).
    fn kernel_and_matcher_agree(p: &ClusterPolicy, user_space_only: &[&str]) -> Vec<String> {
        let mut r = ExecRules::default();
        add_policy_denies(p, "app", &mut r);
        let mut maps = MemMaps::default();
        KernelEnforcer::new().sync(&mut maps, &BTreeMap::from([(10, Arc::new(r))]));

        let mut killed = Vec::new();
        for (exe, argv) in runs() {
            let model_kills = matcher_kills(p, &exe, &argv);
            let args: Vec<&str> = argv.iter().map(String::as_str).collect();
            let kernel_kills = maps.kills_run(10, exe.as_bytes(), &args);
            let run = format!("{exe} {}", argv.join(" "));
            if user_space_only.contains(&run.as_str()) {
                assert!(
                    model_kills && !kernel_kills,
                    "{run}: expected a kill by the matcher only, got matcher {model_kills}, \
                     kernel {kernel_kills}"
                );
            } else {
                assert_eq!(
                    kernel_kills, model_kills,
                    "{run}: the kernel and the policy matcher disagree"
                );
            }
            if model_kills {
                killed.push(run);
            }
        }
        killed
    }

    fn matcher_kills(p: &ClusterPolicy, exe: &str, argv: &[String]) -> bool {
        let mut found = Vec::new();
        p.check(
            "app",
            &Event::exec(Process {
                exe,
                file_name: None,
                argv,
                uid: 1000,
                exec_session: false,
                in_image: Some(true),
            }),
            &mut found,
        );
        found.iter().any(|v| v.kill_process)
    }

    #[test]
    fn the_kernel_reads_names_in_the_arguments_as_the_policy_matcher_does() {
        let p = policy(vec![
            rule(
                "fetchers",
                Deny::Binaries(vec!["wget".into(), "curl".into()]),
                true,
                Exceptions::default(),
            ),
            rule("shells", Deny::Shells, true, Exceptions::default()),
        ]);
        // busybox drops one `-` from `argv[0]` (a login shell); the kernel compares whole
        // names and does not, so it leaves these to the evaluator.
        let killed = kernel_and_matcher_agree(
            &p,
            &[
                "/bin/busybox -wget",
                "/bin/busybox -sh",
                "/bin/busybox -busybox wget",
            ],
        );
        // The cases that show the reading, so that the comparison cannot pass on nothing.
        for expected in [
            "/proc/self/exe wget -q http://x/",
            "/proc/self/exe /usr/bin/wget",
            "/usr/bin/python3 wget",
            "/bin/busybox sh -c id",
            "/bin/busybox busybox sh",
            "/bin/toybox toybox bash",
            // A `Binaries` name as the applet of a multi-call binary.
            "/bin/busybox busybox wget",
            "/bin/busybox /bin/busybox wget http://x/",
            "/bin/toybox toybox wget",
            "/bin/busybox busybox /usr/bin/wget",
            "/bin/busybox busybox -/wget",
        ] {
            assert!(
                killed.iter().any(|k| k == expected),
                "{expected}: {killed:?}"
            );
        }
        for spared in [
            "/proc/self/exe wgetx",
            "/proc/self/exe sh -c id",
            "/usr/bin/python3 sh",
            "/usr/bin/python3 python3 wget",
            "/usr/bin/python3 busybox wget",
            "/bin/busybox busybox ls",
            "/bin/busybox ls -l",
            "/bin/busybox ls wget",
            "/bin/busybox busybox --list",
            "/bin/busybox busybox --help wget",
            "/bin/busybox busybox",
        ] {
            assert!(!killed.iter().any(|k| k == spared), "{spared}: {killed:?}");
        }
    }

    #[test]
    fn names_that_are_options_or_multi_call_binaries_are_not_applets_in_the_kernel_either() {
        let p = policy(vec![rule(
            "odd-names",
            Deny::Binaries(vec!["wget".into(), "-wget".into(), "toybox".into()]),
            true,
            Exceptions::default(),
        )]);
        let mut r = ExecRules::default();
        add_policy_denies(&p, "app", &mut r);
        assert_eq!(names(&r), ["-wget", "toybox", "wget"]);
        assert_eq!(r.deny_applets, BTreeSet::from([b"wget".to_vec()]));

        let killed = kernel_and_matcher_agree(&p, &["/bin/busybox -busybox wget"]);
        for expected in [
            // By their own name and as `argv[0]`, as any `Binaries` name.
            "/bin/busybox -wget",
            "/bin/busybox toybox -x",
            "/bin/toybox toybox bash",
            "/bin/busybox busybox wget",
        ] {
            assert!(
                killed.iter().any(|k| k == expected),
                "{expected}: {killed:?}"
            );
        }
        for spared in ["/bin/busybox busybox -wget", "/bin/busybox busybox toybox"] {
            assert!(!killed.iter().any(|k| k == spared), "{spared}: {killed:?}");
        }
    }

    #[test]
    fn applets_named_past_argv1_are_killed_from_user_space_only() {
        // busybox hands `busybox busybox wget` down to wget; the kernel reads the names of
        // `argv[0]` and `argv[1]` only, so it lets the exec through and the evaluator
        // kills it. The other way round (the kernel killing what the evaluator would not)
        // must never happen: `kernel_and_matcher_agree` covers that.
        let p = policy(vec![
            rule(
                "fetchers",
                Deny::Binaries(vec!["wget".into()]),
                true,
                Exceptions::default(),
            ),
            rule("shells", Deny::Shells, true, Exceptions::default()),
        ]);
        let mut r = ExecRules::default();
        add_policy_denies(&p, "app", &mut r);
        let mut maps = MemMaps::default();
        KernelEnforcer::new().sync(&mut maps, &BTreeMap::from([(10, Arc::new(r))]));
        for (exe, argv) in [
            run("/bin/busybox", &["busybox", "busybox", "wget"]),
            run("/bin/busybox", &["busybox", "toybox", "sh"]),
        ] {
            let args: Vec<&str> = argv.iter().map(String::as_str).collect();
            assert!(matcher_kills(&p, &exe, &argv), "{exe} {argv:?}");
            assert!(
                !maps.kills_run(10, exe.as_bytes(), &args),
                "{exe} {argv:?}: the kernel does not read argv[2]"
            );
        }
    }

    #[test]
    fn argument_names_are_written_only_for_rules_that_read_them() {
        let name_key = |maps: &MemMaps, name: &str| {
            let h = ExeHashes::of(name.as_bytes()).unwrap();
            maps.rules
                .iter()
                .find(|(k, _)| k.kind == EXE_KEY_NAME && k.hash == h.name)
                .map_or(0, |(_, v)| v.bits)
        };
        let mut maps = MemMaps::default();
        let wanted = BTreeMap::from([(10, rules(None, &["wget"]))]);
        KernelEnforcer::new().sync(&mut maps, &wanted);
        assert_eq!(name_key(&maps, "wget"), EXE_DENIED | EXE_DENIED_ARGV0);
        assert_eq!(
            name_key(&maps, "busybox"),
            0,
            "no applets denied: no multi-call keys"
        );
        let mut maps = MemMaps::default();
        let shells = ExecRules {
            deny_applets: [b"sh".to_vec()].into(),
            ..ExecRules::default()
        };
        KernelEnforcer::new().sync(&mut maps, &BTreeMap::from([(10, Arc::new(shells))]));
        assert_eq!(name_key(&maps, "sh"), EXE_DENIED | EXE_DENIED_APPLET);
        assert_eq!(name_key(&maps, "busybox"), EXE_MULTI_CALL);
        assert_eq!(maps.enforce[&10].flags, ENFORCE_DENY_LIST);
    }

    #[test]
    fn exceptions_the_kernel_cannot_tell_apart_leave_names_to_user_space() {
        let except_tools = Exceptions {
            executables: vec!["/opt/allowed/*".into()],
            containers: vec!["debug".into()],
        };
        let p = policy(vec![rule(
            "fetchers",
            Deny::Binaries(vec![
                "wget".into(),
                "/usr/bin/curl".into(),
                "/opt/allowed/nc".into(),
            ]),
            true,
            except_tools,
        )]);
        let mut r = ExecRules::default();
        add_policy_denies(&p, "app", &mut r);
        assert!(r.deny_names.is_empty(), "wget in /opt/allowed is excepted");
        assert_eq!(
            r.deny_paths,
            BTreeSet::from([b"/usr/bin/curl".to_vec()]),
            "/opt/allowed/nc is excepted"
        );
        let mut debug = ExecRules::default();
        add_policy_denies(&p, "debug", &mut debug);
        assert!(debug.is_empty(), "an excepted container gets nothing");
    }

    fn rules(allow: Option<&[&str]>, deny_names: &[&str]) -> Arc<ExecRules> {
        Arc::new(ExecRules {
            allow: allow.map(paths),
            deny_paths: BTreeSet::new(),
            deny_names: deny_names.iter().map(|n| n.as_bytes().to_vec()).collect(),
            ..ExecRules::default()
        })
    }

    #[test]
    fn the_kernel_decides_by_allow_list_and_deny_list() {
        let mut maps = MemMaps::default();
        let mut enforcer = KernelEnforcer::new();
        let wanted = BTreeMap::from([
            (10, rules(Some(&["/usr/sbin/nginx", "/usr/bin/wget"]), &[])),
            (11, rules(None, &["wget"])),
            (
                12,
                rules(Some(&["/usr/sbin/nginx", "/usr/bin/wget"]), &["wget"]),
            ),
        ]);
        enforcer.sync(&mut maps, &wanted);
        assert!(!maps.kills(10, b"/usr/sbin/nginx"));
        assert!(!maps.kills(10, b"/usr/bin/wget"));
        assert!(maps.kills(10, b"/bin/sh"));
        assert!(maps.kills(10, b"/usr/sbin/nginx2"), "exact paths only");
        assert!(maps.kills(11, b"/usr/bin/wget") && maps.kills(11, b"/tmp/wget"));
        assert!(!maps.kills(11, b"/usr/bin/wget2") && !maps.kills(11, b"/bin/sh"));
        assert!(maps.kills(12, b"/usr/bin/wget"), "denied wins over allowed");
        assert!(!maps.kills(13, b"/bin/sh"), "a cgroup without an entry");
        assert_eq!(enforcer.stats().cgroups, 3);
    }

    #[test]
    fn changes_switch_generations_and_old_keys_go_one_sync_later() {
        let mut maps = MemMaps::default();
        let mut enforcer = KernelEnforcer::new();
        let first = BTreeMap::from([(10, rules(Some(&["/a"]), &[]))]);
        enforcer.sync(&mut maps, &first);
        assert_eq!(enforcer.generation(10), Some(1));
        let keys_before = maps.rules.len();

        // Unchanged rules write nothing.
        enforcer.sync(&mut maps, &first);
        assert_eq!(enforcer.stats().updates, 1);

        let second = BTreeMap::from([(10, rules(Some(&["/a", "/b"]), &[]))]);
        enforcer.sync(&mut maps, &second);
        assert_eq!(enforcer.generation(10), Some(2));
        assert!(!maps.kills(10, b"/b"));
        assert_eq!(
            maps.rules.len(),
            keys_before + 2,
            "the old generation's keys are still there for a program that read the old entry"
        );
        assert!(maps.rules.keys().any(|k| k.generation == 1));
        enforcer.sync(&mut maps, &second);
        assert!(maps.rules.keys().all(|k| k.generation == 2));
        assert_eq!(maps.rules.len(), 2);
    }

    #[test]
    fn a_pods_common_rules_kill_only_what_every_container_would() {
        let web = ExecRules {
            deny_paths: [b"/usr/bin/nc".to_vec(), b"/tmp/x".to_vec()].into(),
            ..(*rules(Some(&["/usr/sbin/nginx", "/bin/sh"]), &["wget", "curl"])).clone()
        };
        let sidecar = ExecRules {
            deny_paths: [b"/usr/bin/nc".to_vec()].into(),
            ..(*rules(Some(&["/usr/bin/envoy"]), &["wget"])).clone()
        };
        let common = ExecRules::common_to(&[web.clone(), sidecar.clone()]);
        assert_eq!(
            common.allow.as_deref(),
            Some(&*paths(&["/usr/sbin/nginx", "/bin/sh", "/usr/bin/envoy"]))
        );
        assert_eq!(
            common.deny_names,
            [b"wget".to_vec()].into(),
            "curl: the sidecar may run it"
        );
        assert_eq!(common.deny_paths, [b"/usr/bin/nc".to_vec()].into());
        assert!(common.spare_init && common.inherited);
        assert_eq!(
            common.flags(),
            ENFORCE_ALLOW_LIST | ENFORCE_DENY_LIST | ENFORCE_SPARE_INIT | ENFORCE_INHERITED
        );

        // A container without an allow list (no profile that kills): none for the pod.
        let debug = (*rules(None, &["wget"])).clone();
        let common = ExecRules::common_to(&[web.clone(), sidecar, debug]);
        assert_eq!(common.allow, None);
        assert_eq!(common.deny_names, [b"wget".to_vec()].into());
        assert!(ExecRules::common_to(&[]).is_empty());

        // What the kernel kills in a new container of the pod, the evaluator would kill in
        // whichever container it is.
        let mut maps = MemMaps::default();
        let mut enforcer = KernelEnforcer::new();
        let pod = ExecRules::common_to(std::slice::from_ref(&web));
        enforcer.sync(
            &mut maps,
            &BTreeMap::from([(1, Arc::new(pod)), (2, Arc::new(web))]),
        );
        for exe in [
            &b"/usr/sbin/nginx"[..],
            b"/tmp/x",
            b"/usr/bin/wget",
            b"/bin/sh",
            b"/opt/y",
        ] {
            assert!(
                !maps.kills(1, exe) || maps.kills(2, exe),
                "{}",
                String::from_utf8_lossy(exe)
            );
        }
    }

    #[test]
    fn an_adopting_agent_takes_over_the_earlier_agents_entries_without_a_gap() {
        // What the earlier agent left: cgroup 10 under generation 7 (allowing /a), a key
        // of its generation 6 not yet deleted, and cgroup 20, whose pod is gone since.
        let mut maps = MemMaps::default();
        let mut earlier = KernelEnforcer::new();
        earlier.sync(
            &mut maps,
            &BTreeMap::from([
                (10, rules(Some(&["/a"]), &[])),
                (20, rules(Some(&["/z"]), &[])),
            ]),
        );
        let mut judged: Vec<(u64, Enforcement, Vec<ExeKey>)> = Vec::new();
        let mut stale = Vec::new();
        for (key, verdict) in maps.rules.clone() {
            maps.rules.remove(&key);
            let generation = if key.cgroup_id == 10 { 7 } else { 1 };
            let moved = ExeKey { generation, ..key };
            maps.rules.insert(moved, verdict);
            let old = ExeKey {
                generation: 6,
                ..key
            };
            if key.cgroup_id == 10 {
                maps.rules.insert(old, verdict);
                stale.push(old);
            }
        }
        maps.enforce.get_mut(&10).unwrap().generation = 7;
        for (&cgroup_id, e) in &maps.enforce {
            let keys = maps
                .rules
                .keys()
                .filter(|k| k.cgroup_id == cgroup_id && k.generation == e.generation)
                .copied()
                .collect();
            judged.push((cgroup_id, *e, keys));
        }
        let all_keys: Vec<ExeKey> = maps.rules.keys().copied().collect();

        let mut enforcer = KernelEnforcer::new();
        enforcer.adopt(judged, all_keys);
        assert_eq!(enforcer.generation(10), Some(7));
        assert!(
            maps.kills(10, b"/b") && !maps.kills(10, b"/a"),
            "still judged as before"
        );

        // Its rules now allow /b too: written under the next generation, old keys later.
        let wanted = BTreeMap::from([(10, rules(Some(&["/a", "/b"]), &[]))]);
        enforcer.sync(&mut maps, &wanted);
        assert_eq!(enforcer.generation(10), Some(8));
        assert!(!maps.kills(10, b"/b") && maps.kills(10, b"/c"));
        assert!(
            !maps.enforce.contains_key(&20),
            "the gone pod's cgroup is not judged"
        );
        assert!(
            maps.rules.keys().all(|k| !stale.contains(k)),
            "keys of no current generation go"
        );
        enforcer.sync(&mut maps, &wanted);
        assert!(maps
            .rules
            .keys()
            .all(|k| k.generation == 8 && k.cgroup_id == 10));
        assert_eq!(enforcer.stats().updates, 1);
    }

    #[test]
    fn cgroups_that_go_away_or_stop_killing_lose_their_entries() {
        let mut maps = MemMaps::default();
        let mut enforcer = KernelEnforcer::new();
        enforcer.sync(
            &mut maps,
            &BTreeMap::from([(10, rules(Some(&["/a"]), &[])), (11, rules(None, &["sh"]))]),
        );
        assert!(maps.kills(10, b"/b") && maps.kills(11, b"/bin/sh"));
        // Cgroup 11 is gone; cgroup 10's profile went back to Monitoring.
        enforcer.sync(&mut maps, &BTreeMap::new());
        assert!(maps.enforce.is_empty(), "entries go at once");
        assert!(!maps.kills(10, b"/b") && !maps.kills(11, b"/bin/sh"));
        enforcer.sync(&mut maps, &BTreeMap::new());
        assert!(maps.rules.is_empty(), "and their keys one sync later");
        assert_eq!(
            enforcer.stats(),
            EnforcerStats {
                updates: 2,
                ..EnforcerStats::default()
            }
        );
    }

    #[test]
    fn a_rule_set_that_does_not_fit_is_not_applied_by_half() {
        let mut maps = MemMaps {
            max_rules: Some(3),
            ..MemMaps::default()
        };
        let mut enforcer = KernelEnforcer::new();
        let big = BTreeMap::from([
            (10, rules(Some(&["/a"]), &[])),
            (11, rules(Some(&["/a", "/b", "/c"]), &[])),
        ]);
        enforcer.sync(&mut maps, &big);
        assert!(maps.enforce.contains_key(&10));
        assert!(
            !maps.enforce.contains_key(&11),
            "with two of three allowed paths written, /c would be killed"
        );
        assert!(!maps.kills(11, b"/c") && !maps.kills(11, b"/zzz"));
        let stats = enforcer.stats();
        assert_eq!((stats.cgroups, stats.write_errors), (1, 1));
        // Not retried every sync while the rules stay the same.
        enforcer.sync(&mut maps, &big);
        assert_eq!(enforcer.stats().write_errors, 1);
        // The half-written keys are cleaned up.
        enforcer.sync(&mut maps, &big);
        assert_eq!(maps.rules.len(), 1);
    }

    #[test]
    fn protected_namespaces_are_kube_system_herdwatchs_own_and_the_extra_ones() {
        assert_eq!(
            protected_namespaces("herdwatch", &[]),
            ["kube-system", "herdwatch"]
        );
        assert_eq!(protected_namespaces("kube-system", &[]), ["kube-system"]);
        let extra = [
            " payments ".to_owned(),
            String::new(),
            "herdwatch".to_owned(),
        ];
        assert_eq!(
            protected_namespaces("herdwatch", &extra),
            ["kube-system", "herdwatch", "payments"]
        );
    }
}
