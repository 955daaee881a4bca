//! Matching events against a profile.
//!
//! A [`ProfileIndex`] is built once from a profile's allowed [`BehaviorSet`] (whenever the
//! profile changes) and then answers [`ProfileIndex::check`] for every event without
//! allocating: executables and syscalls are hash lookups, egress to single addresses is a
//! hash lookup (networks are scanned, and are few), and a file path costs one hash lookup per
//! path component. That keeps one check well under a microsecond for profiles of a thousand
//! entries (see `benches/match.rs`).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::behavior::{Access, BehaviorSet, Category, EgressRule};
use crate::event::{Event, EventKind, Process};
use crate::files::{FilesIndex, SensitivePaths};
use crate::net::Protocol;
use crate::pattern::{is_glob, normalize_path, path_glob_match, ArgvPattern};
use crate::policy::applet_pattern;

/// Which rule an event broke.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleRef {
    /// Not in the learned or written profile, in this category.
    Profile(Category),
    /// A ClusterBehaviorPolicy rule.
    Policy {
        /// Policy name.
        policy: String,
        /// Rule name within the policy.
        rule: String,
    },
}

impl fmt::Display for RuleRef {
    /// `profile/processes`, or `policy/<policy>/<rule>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleRef::Profile(c) => write!(f, "profile/{c}"),
            RuleRef::Policy { policy, rule } => write!(f, "policy/{policy}/{rule}"),
        }
    }
}

/// An event that a profile or policy does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule broken.
    pub rule: RuleRef,
    /// What broke it, stable across repeats so that records deduplicate: the executable, the
    /// file path, the peer, the port or the syscall.
    pub subject: String,
}

/// The outcome of checking one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The profile allows it.
    Allowed,
    /// It is a violation.
    Violation(Violation),
}

impl Verdict {
    /// Whether the event was allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed)
    }
}

/// Subjects are stored in objects and used in names: cap their length.
const MAX_SUBJECT: usize = 256;

fn subject(mut s: String) -> String {
    crate::text::truncate_marked(&mut s, MAX_SUBJECT, "");
    s
}

#[derive(Clone, Debug)]
struct ProcMatcher {
    uid: Option<u32>,
    argv: Option<ArgvPattern>,
}

impl ProcMatcher {
    fn allows(&self, uid: u32, argv: Option<&[String]>) -> bool {
        self.uid.is_none_or(|u| u == uid)
            && self
                .argv
                .as_ref()
                .is_none_or(|p| argv.is_none_or(|a| p.matches(a)))
    }
}

/// A profile's allowed behaviour, indexed for checking events.
#[derive(Clone, Debug, Default)]
pub struct ProfileIndex {
    exe_exact: HashMap<Box<str>, Vec<ProcMatcher>>,
    exe_globs: Vec<(String, ProcMatcher)>,
    syscalls: HashSet<Box<str>>,
    egress_host_port: HashSet<(IpAddr, u16, Protocol)>,
    egress_host_any_port: HashSet<(IpAddr, Protocol)>,
    egress_nets: Vec<EgressRule>,
    listen: HashSet<(u16, Protocol)>,
    files: FilesIndex,
}

impl ProfileIndex {
    /// Indexes `set`, with the default sensitive paths.
    pub fn build(set: &BehaviorSet) -> Self {
        Self::build_with(set, SensitivePaths::shared_default())
    }

    /// Indexes `set`; file entries never cover the `sensitive` paths unless they name one
    /// literally.
    pub fn build_with(set: &BehaviorSet, sensitive: Arc<SensitivePaths>) -> Self {
        let mut idx = ProfileIndex::default();
        for e in set.processes.entries() {
            let m = ProcMatcher {
                uid: e.rule.uid,
                argv: e.rule.argv.clone(),
            };
            if is_glob(&e.rule.exe) {
                idx.exe_globs.push((e.rule.exe.clone(), m));
            } else {
                idx.exe_exact
                    .entry(normalize_path(&e.rule.exe).into())
                    .or_default()
                    .push(m);
            }
        }
        idx.syscalls = set
            .syscalls
            .entries()
            .iter()
            .map(|e| e.rule.name.as_str().into())
            .collect();
        for e in set.egress.entries() {
            let r = &e.rule;
            match (r.peer.is_host(), r.port) {
                (true, Some(port)) => {
                    idx.egress_host_port
                        .insert((r.peer.addr(), port, r.protocol));
                }
                (true, None) => {
                    idx.egress_host_any_port.insert((r.peer.addr(), r.protocol));
                }
                (false, _) => idx.egress_nets.push(r.clone()),
            }
        }
        idx.listen = set
            .listen
            .entries()
            .iter()
            .map(|e| (e.rule.port, e.rule.protocol))
            .collect();
        idx.files = FilesIndex::new(
            set.files
                .entries()
                .iter()
                .map(|e| (e.rule.path.as_str(), e.rule.access)),
            sensitive,
        );
        idx
    }

    /// Whether the profile allows `process` to run as `uid`; `argv` is checked when given
    /// (an exec), and not for a later uid change: any entry of the executable with that uid
    /// allows the change, whatever its argument pattern (learning gives the entry of a uid
    /// change the pattern of the program that made it, so that it allows no other applet of
    /// a multi-call binary to start as that uid).
    ///
    /// `exe` is judged as the kernel resolved it ([`normalize_path`]: `/usr/../tmp/x` is
    /// `/tmp/x`), and executable globs match by [`path_glob_match`] (`*` stops at `/`). A
    /// relative `exe` cannot be judged by path, so no entry allows it: under a profile it is a
    /// violation.
    pub fn allows_process(&self, exe: &str, uid: u32, argv: Option<&[String]>) -> bool {
        if !exe.starts_with('/') {
            return false;
        }
        let exe = normalize_path(exe);
        let exe = &*exe;
        if let Some(ms) = self.exe_exact.get(exe) {
            if ms.iter().any(|m| m.allows(uid, argv)) {
                return true;
            }
        }
        self.exe_globs
            .iter()
            .any(|(g, m)| path_glob_match(g, exe) && m.allows(uid, argv))
    }

    /// Whether the profile allows `access` to `path` ([`FilesIndex::allows`]): the path as
    /// the kernel would resolve it lexically, the union of the access of every matching
    /// entry, sensitive paths by literal entries only.
    pub fn allows_file(&self, path: &str, access: Access) -> bool {
        self.files.allows(path, access)
    }

    /// Whether the profile allows a connection to `ip:port`.
    pub fn allows_egress(&self, ip: IpAddr, port: u16, protocol: Protocol) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.egress_host_port.contains(&(ip, port, protocol))
            || self.egress_host_any_port.contains(&(ip, protocol))
            || self.egress_nets.iter().any(|r| {
                r.protocol == protocol && r.port.is_none_or(|p| p == port) && r.peer.contains(ip)
            })
    }

    /// Checks one event.
    pub fn check(&self, event: &Event<'_>) -> Verdict {
        let p: &Process<'_> = &event.process;
        let miss = |category, s: String| {
            Verdict::Violation(Violation {
                rule: RuleRef::Profile(category),
                subject: subject(s),
            })
        };
        match event.kind {
            EventKind::Exec => {
                if self.allows_process(p.exe, p.uid, Some(p.argv)) {
                    Verdict::Allowed
                } else if self.allows_process(p.exe, p.uid, None) {
                    // A multi-call binary is named by the arguments that choose its applet,
                    // as learning records them: `busybox nc` with any arguments is one
                    // violation, and the subject is the entry that would allow it.
                    let argv = applet_pattern(p.exe, p.file_name, p.argv)
                        .unwrap_or_else(|| ArgvPattern(p.argv.to_vec()));
                    miss(Category::Processes, format!("{} [{argv}]", p.exe))
                } else {
                    miss(Category::Processes, format!("{} as uid {}", p.exe, p.uid))
                }
            }
            EventKind::SetUid { uid } => {
                if self.allows_process(p.exe, uid, None) {
                    Verdict::Allowed
                } else {
                    miss(Category::Processes, format!("{} as uid {uid}", p.exe))
                }
            }
            EventKind::Syscall { name } => {
                if self.syscalls.contains(name) {
                    Verdict::Allowed
                } else {
                    miss(Category::Syscalls, name.to_owned())
                }
            }
            EventKind::Connect { ip, port, protocol } => {
                if self.allows_egress(ip, port, protocol) {
                    Verdict::Allowed
                } else {
                    let rule = EgressRule {
                        peer: crate::net::Cidr::host(ip),
                        port: Some(port),
                        protocol,
                    };
                    miss(Category::Egress, rule.to_string())
                }
            }
            EventKind::Listen { port, protocol } => {
                if self.listen.contains(&(port, protocol)) {
                    Verdict::Allowed
                } else {
                    miss(Category::Listen, format!("{port}/{protocol}"))
                }
            }
            EventKind::File { path, access } => {
                if self.allows_file(path, access) {
                    Verdict::Allowed
                } else {
                    miss(Category::Files, format!("{path} ({access})"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::behavior::{Entry, FileRule, ListenRule, ProcessRule, Rules, SyscallRule};

    fn profile() -> BehaviorSet {
        let mut s = BehaviorSet::new();
        s.processes = Rules::from_entries([
            Entry::manual(ProcessRule {
                exe: "/usr/sbin/nginx".into(),
                argv: None,
                uid: Some(101),
            }),
            Entry::manual(ProcessRule {
                exe: "/usr/sbin/nginx".into(),
                argv: None,
                uid: Some(0),
            }),
            Entry::manual(ProcessRule {
                exe: "/usr/bin/python3*".into(),
                argv: Some(ArgvPattern(vec!["python3".into(), "-m".into(), "*".into()])),
                uid: None,
            }),
        ]);
        s.syscalls = Rules::from_entries(
            ["read", "write", "openat"].map(|n| Entry::manual(SyscallRule { name: n.into() })),
        );
        s.egress = Rules::from_entries([
            Entry::manual(EgressRule {
                peer: "10.96.0.10".parse().unwrap(),
                port: Some(53),
                protocol: Protocol::Udp,
            }),
            Entry::manual(EgressRule {
                peer: "10.0.0.0/8".parse().unwrap(),
                port: Some(5432),
                protocol: Protocol::Tcp,
            }),
            Entry::manual(EgressRule {
                peer: "192.0.2.1".parse().unwrap(),
                port: None,
                protocol: Protocol::Tcp,
            }),
        ]);
        s.listen = Rules::from_entries([Entry::manual(ListenRule {
            port: 80,
            protocol: Protocol::Tcp,
        })]);
        s.files = Rules::from_entries([
            Entry::manual(FileRule::below("/etc/nginx", Access::READ)),
            Entry::manual(FileRule::below(
                "/var/log/nginx/",
                Access::WRITE | Access::CREATE,
            )),
            Entry::manual(FileRule::below("/var", Access::READ)),
        ]);
        s
    }

    fn proc<'a>(exe: &'a str, argv: &'a [String], uid: u32) -> Process<'a> {
        Process {
            exe,
            file_name: None,
            argv,
            uid,
            exec_session: false,
            in_image: Some(true),
        }
    }

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn exec_by_exe_uid_and_argv() {
        let idx = ProfileIndex::build(&profile());
        let a = args("nginx -g daemon");
        assert!(idx
            .check(&Event::exec(proc("/usr/sbin/nginx", &a, 101)))
            .is_allowed());
        let v = idx.check(&Event::exec(proc("/usr/sbin/nginx", &a, 33)));
        assert_eq!(
            v,
            Verdict::Violation(Violation {
                rule: RuleRef::Profile(Category::Processes),
                subject: "/usr/sbin/nginx as uid 33".into()
            })
        );
        let sh = args("sh -c id");
        assert!(!idx
            .check(&Event::exec(proc("/bin/sh", &sh, 101)))
            .is_allowed());

        let py_ok = args("python3 -m http.server");
        let py_bad = args("python3 -c import-os");
        assert!(idx
            .check(&Event::exec(proc("/usr/bin/python3.12", &py_ok, 1000)))
            .is_allowed());
        match idx.check(&Event::exec(proc("/usr/bin/python3.12", &py_bad, 1000))) {
            Verdict::Violation(v) => {
                assert_eq!(v.subject, "/usr/bin/python3.12 [python3 -c import-os]")
            }
            Verdict::Allowed => panic!("argv outside the pattern must be a violation"),
        }
    }

    /// A profile learned from `execs` (`exe`, arguments, uid) and from uid changes
    /// (`exe`, arguments, new uid) by the model's own learning.
    fn learned_from(
        execs: &[(&str, &str, u32)],
        uid_changes: &[(&str, &str, u32)],
    ) -> ProfileIndex {
        use crate::observation::{Observation, WorkloadKey};
        use crate::sketch::ReplicaId;
        use crate::time::Timestamp;
        let key = WorkloadKey {
            namespace: "shop".into(),
            owner_kind: "Deployment".into(),
            owner_name: "web".into(),
            container: "web".into(),
        };
        let mut o = Observation::new(key, "sha256:aa", "node-1", Timestamp(0));
        fn learn(o: &mut Observation, exe: &str, argv: &str, kind: EventKind<'_>, uid: u32) {
            let argv = args(argv);
            let event = Event {
                process: proc(exe, &argv, uid),
                kind,
            };
            o.observe(&event, ReplicaId(1), Timestamp(1), &crate::Limits::DEFAULT);
        }
        for &(exe, argv, uid) in execs {
            learn(&mut o, exe, argv, EventKind::Exec, uid);
        }
        for &(exe, argv, uid) in uid_changes {
            learn(&mut o, exe, argv, EventKind::SetUid { uid }, 0);
        }
        ProfileIndex::build(&o.behavior)
    }

    fn verdict(idx: &ProfileIndex, exe: &str, argv: &str, uid: u32) -> Result<(), String> {
        let argv = args(argv);
        match idx.check(&Event::exec(proc(exe, &argv, uid))) {
            Verdict::Allowed => Ok(()),
            Verdict::Violation(v) => Err(v.subject),
        }
    }

    /// An index of `/opt/app/*` and `/usr/bin/env`, for any user and arguments.
    fn app_glob() -> ProfileIndex {
        let mut s = BehaviorSet::new();
        s.processes = Rules::from_entries(["/opt/app/*", "/usr/bin/env"].map(|exe| {
            Entry::manual(ProcessRule {
                exe: exe.into(),
                argv: None,
                uid: None,
            })
        }));
        ProfileIndex::build(&s)
    }

    #[test]
    fn executables_are_judged_as_the_kernel_resolved_their_path() {
        let idx = app_glob();
        assert_eq!(verdict(&idx, "/opt/app/run", "run", 0), Ok(()));
        assert_eq!(verdict(&idx, "/opt/app/./run", "run", 0), Ok(()));
        assert_eq!(verdict(&idx, "//usr/bin/env", "env", 0), Ok(()));
        assert_eq!(
            verdict(&idx, "/opt/app/../../tmp/x", "x", 0),
            Err("/opt/app/../../tmp/x as uid 0".into()),
            "`..` leaves the glob's directory"
        );
        assert_eq!(
            verdict(&idx, "/opt/app/a/b", "b", 0),
            Err("/opt/app/a/b as uid 0".into()),
            "`*` stops at `/`"
        );
        assert_eq!(
            verdict(&idx, "/usr/../tmp/x", "x", 0),
            Err("/usr/../tmp/x as uid 0".into())
        );
    }

    #[test]
    fn a_relative_executable_is_never_allowed_by_a_profile() {
        // Learned as it was reported; no entry can vouch for a path relative to a directory
        // the event does not name.
        let idx = learned_from(&[("./run", "run", 0), ("/opt/app/run", "run", 0)], &[]);
        assert_eq!(verdict(&idx, "/opt/app/run", "run", 0), Ok(()));
        assert_eq!(
            verdict(&idx, "./run", "run", 0),
            Err("./run as uid 0".into())
        );
        assert_eq!(
            verdict(&app_glob(), "run", "run", 0),
            Err("run as uid 0".into())
        );
    }

    #[test]
    fn a_learned_multi_call_binary_allows_its_applets_and_no_other() {
        let idx = learned_from(
            &[
                ("/bin/busybox", "sh -c ./start.sh", 0),
                ("/proc/self/exe", "httpd -f -p 8080", 0),
                ("/bin/httpd", "httpd -f", 33),
            ],
            &[],
        );
        // The learned applets, with any arguments.
        assert_eq!(verdict(&idx, "/bin/busybox", "sh", 0), Ok(()));
        assert_eq!(
            verdict(&idx, "/bin/busybox", "sh -c exec ./other", 0),
            Ok(())
        );
        assert_eq!(verdict(&idx, "/proc/self/exe", "httpd -p 80", 0), Ok(()));
        // Other applets of the same binaries: violations named by the applet, so that runs
        // with other arguments are the same violation.
        assert_eq!(
            verdict(&idx, "/bin/busybox", "busybox nc 203.0.113.5 4444", 0),
            Err("/bin/busybox [busybox nc **]".into())
        );
        assert_eq!(
            verdict(&idx, "/bin/busybox", "busybox nc 203.0.113.5 4445", 0),
            Err("/bin/busybox [busybox nc **]".into())
        );
        assert_eq!(
            verdict(&idx, "/proc/self/exe", "nc -e /bin/sh", 0),
            Err("/proc/self/exe [nc **]".into())
        );
        assert_eq!(
            verdict(&idx, "/proc/self/exe", "wget -q http://x/", 0),
            Err("/proc/self/exe [wget **]".into())
        );
        assert_eq!(
            verdict(&idx, "/bin/busybox", "busybox sh", 0),
            Err("/bin/busybox [busybox sh **]".into()),
            "the arguments that chose sh differ from those learned"
        );
        assert_eq!(
            verdict(&idx, "/bin/busybox", "sh", 1000),
            Err("/bin/busybox as uid 1000".into())
        );
        // Other executables are learned as before: any arguments.
        assert_eq!(verdict(&idx, "/bin/httpd", "httpd -h /tmp", 33), Ok(()));
        assert_eq!(verdict(&idx, "/bin/httpd", "wget", 33), Ok(()));
        assert_eq!(
            verdict(&idx, "/bin/wget", "wget", 33),
            Err("/bin/wget as uid 33".into())
        );
    }

    #[test]
    fn a_link_to_busybox_is_learned_and_judged_per_applet() {
        use crate::observation::{Observation, WorkloadKey};
        use crate::sketch::ReplicaId;
        use crate::time::Timestamp;
        let key = WorkloadKey {
            namespace: "shop".into(),
            owner_kind: "Deployment".into(),
            owner_name: "web".into(),
            container: "web".into(),
        };
        let mut o = Observation::new(key, "sha256:aa", "node-1", Timestamp(0));
        // `/bin/sh` and `/bin/dash-sh` as the exec events report them: the path they were
        // started by, and the name of the file behind it.
        for (exe, file_name, argv) in [
            ("/bin/sh", Some("busybox"), "sh -c ./start.sh"),
            ("/bin/dash-sh", Some("dash"), "sh -c ./start.sh"),
        ] {
            let argv = args(argv);
            let p = Process {
                file_name,
                ..proc(exe, &argv, 0)
            };
            o.observe(
                &Event::exec(p),
                ReplicaId(1),
                Timestamp(1),
                &crate::Limits::DEFAULT,
            );
        }
        let idx = ProfileIndex::build(&o.behavior);
        let check = |exe: &str, file_name: Option<&str>, argv: &str| {
            let argv = args(argv);
            let p = Process {
                file_name,
                ..proc(exe, &argv, 0)
            };
            match idx.check(&Event::exec(p)) {
                Verdict::Allowed => Ok(()),
                Verdict::Violation(v) => Err(v.subject),
            }
        };
        assert_eq!(check("/bin/sh", Some("busybox"), "sh -c other"), Ok(()));
        // `exec -a nc /bin/sh -l -p 4444`: busybox runs nc.
        assert_eq!(
            check("/bin/sh", Some("busybox"), "nc -l -p 4444"),
            Err("/bin/sh [nc **]".into())
        );
        // The same shell found in /proc at start: its exe is resolved to busybox's path,
        // which this profile does not have, and the name is not needed.
        assert_eq!(
            check("/bin/busybox", None, "sh"),
            Err("/bin/busybox as uid 0".into())
        );
        // Not a multi-call binary behind the link: any arguments, as before.
        assert_eq!(check("/bin/dash-sh", Some("dash"), "nc -l"), Ok(()));
        assert_eq!(check("/bin/dash-sh", None, "nc -l"), Ok(()));
    }

    #[test]
    fn a_learned_uid_change_of_a_multi_call_binary_allows_no_other_applet() {
        let idx = learned_from(
            &[("/bin/busybox", "su app -c id", 0)],
            &[("/bin/busybox", "su app -c id", 1000)],
        );
        let change = |argv: &str| {
            let argv = args(argv);
            idx.check(&Event {
                process: proc("/bin/busybox", &argv, 0),
                kind: EventKind::SetUid { uid: 1000 },
            })
        };
        assert!(change("su app -c id").is_allowed());
        // Uid changes are judged without arguments: the exec is where the applet counts.
        assert!(change("busybox nc").is_allowed());
        assert_eq!(verdict(&idx, "/bin/busybox", "su other", 1000), Ok(()));
        assert_eq!(
            verdict(&idx, "/bin/busybox", "nc -l -p 4444", 1000),
            Err("/bin/busybox [nc **]".into()),
            "the uid change allows no other applet to start as that uid"
        );
    }

    #[test]
    fn entries_with_and_without_argument_patterns_for_one_executable_add_up() {
        let mut s = BehaviorSet::new();
        s.processes = Rules::from_entries([
            Entry::manual(ProcessRule {
                exe: "/bin/busybox".into(),
                argv: Some(ArgvPattern(vec!["sh".into(), "**".into()])),
                uid: Some(0),
            }),
            Entry::manual(ProcessRule {
                exe: "/bin/busybox".into(),
                argv: None,
                uid: Some(1000),
            }),
        ]);
        assert_eq!(s.processes.len(), 2, "two entries, not one");
        let idx = ProfileIndex::build(&s);
        assert_eq!(verdict(&idx, "/bin/busybox", "sh -c id", 0), Ok(()));
        assert!(verdict(&idx, "/bin/busybox", "nc", 0).is_err());
        assert_eq!(verdict(&idx, "/bin/busybox", "nc", 1000), Ok(()));
    }

    #[test]
    fn setuid_checks_the_new_uid() {
        let idx = ProfileIndex::build(&profile());
        let a = args("nginx");
        let ev = |uid| Event {
            process: proc("/usr/sbin/nginx", &a, 101),
            kind: EventKind::SetUid { uid },
        };
        assert!(idx.check(&ev(0)).is_allowed());
        assert!(!idx.check(&ev(5)).is_allowed());
    }

    #[test]
    fn files_by_component_prefix_and_access_union() {
        let idx = ProfileIndex::build(&profile());
        assert!(idx.allows_file("/etc/nginx/nginx.conf", Access::READ));
        assert!(idx.allows_file("/etc/nginx", Access::READ));
        assert!(
            !idx.allows_file("/etc/nginx2/x", Access::READ),
            "prefixes match whole components"
        );
        assert!(!idx.allows_file("/etc/nginx/nginx.conf", Access::WRITE));
        // READ from /var plus WRITE|CREATE from /var/log/nginx.
        assert!(idx.allows_file("/var/log/nginx/access.log", Access::READ | Access::WRITE));
        assert!(!idx.allows_file("/var/lib/x", Access::WRITE));
        assert!(!idx.allows_file("/etc/passwd", Access::READ));
        let mut root = BehaviorSet::new();
        root.files = Rules::from_entries([Entry::manual(FileRule::below("/", Access::READ))]);
        let root = ProfileIndex::build(&root);
        assert!(root.allows_file("/anything/at/all", Access::READ));
        // Not a sensitive path: only an entry naming it allows it.
        assert!(!root.allows_file("/etc/shadow", Access::READ));
        assert!(!root.allows_file(
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            Access::READ
        ));
    }

    #[test]
    fn egress_hosts_ports_and_networks() {
        let idx = ProfileIndex::build(&profile());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(idx.allows_egress(ip("10.96.0.10"), 53, Protocol::Udp));
        assert!(!idx.allows_egress(ip("10.96.0.10"), 53, Protocol::Tcp));
        assert!(idx.allows_egress(ip("10.4.5.6"), 5432, Protocol::Tcp));
        assert!(!idx.allows_egress(ip("10.4.5.6"), 5433, Protocol::Tcp));
        assert!(idx.allows_egress(ip("192.0.2.1"), 8443, Protocol::Tcp));
        assert!(idx.allows_egress(ip("::ffff:192.0.2.1"), 1, Protocol::Tcp));
        let a = args("curl");
        let ev = Event {
            process: proc("/usr/bin/curl", &a, 0),
            kind: EventKind::Connect {
                ip: ip("203.0.113.5"),
                port: 443,
                protocol: Protocol::Tcp,
            },
        };
        match idx.check(&ev) {
            Verdict::Violation(v) => {
                assert_eq!(v.rule.to_string(), "profile/egress");
                assert_eq!(v.subject, "203.0.113.5:443/TCP");
            }
            Verdict::Allowed => panic!("unknown peer must be a violation"),
        }
    }

    #[test]
    fn syscalls_and_listen() {
        let idx = ProfileIndex::build(&profile());
        let a = args("nginx");
        let p = proc("/usr/sbin/nginx", &a, 101);
        assert!(idx
            .check(&Event {
                process: p,
                kind: EventKind::Syscall { name: "read" }
            })
            .is_allowed());
        assert!(!idx
            .check(&Event {
                process: p,
                kind: EventKind::Syscall { name: "ptrace" }
            })
            .is_allowed());
        assert!(idx
            .check(&Event {
                process: p,
                kind: EventKind::Listen {
                    port: 80,
                    protocol: Protocol::Tcp
                }
            })
            .is_allowed());
        assert!(!idx
            .check(&Event {
                process: p,
                kind: EventKind::Listen {
                    port: 4444,
                    protocol: Protocol::Tcp
                }
            })
            .is_allowed());
    }

    #[test]
    fn empty_profile_allows_nothing() {
        let idx = ProfileIndex::build(&BehaviorSet::new());
        let a = args("x");
        assert!(!idx.check(&Event::exec(proc("/x", &a, 0))).is_allowed());
        assert!(!idx.allows_file("/", Access::READ));
    }

    #[test]
    fn long_subjects_are_capped() {
        let idx = ProfileIndex::build(&BehaviorSet::new());
        let a = args("x");
        let long = format!("/{}", "é".repeat(400));
        match idx.check(&Event {
            process: proc("/x", &a, 0),
            kind: EventKind::File {
                path: &long,
                access: Access::READ,
            },
        }) {
            Verdict::Violation(v) => assert!(v.subject.len() <= MAX_SUBJECT),
            Verdict::Allowed => panic!(),
        }
    }
}
