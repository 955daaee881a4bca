//! ClusterBehaviorPolicy rules: what platform teams deny everywhere they select, with or
//! without a learned profile.
//!
//! A [`ClusterPolicy`] selects pods by namespace labels and pod labels, and each of its rules
//! denies one kind of behaviour: shells, named binaries, executables that are not in the
//! image (drift), running as root, egress outside a list of networks, or exec sessions. Each
//! rule names the response (`action`) and exceptions (executables and containers it does not
//! apply to).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::event::{basename, Event, EventKind, Process};
use crate::matching::{RuleRef, Violation};
use crate::net::Cidr;
use crate::pattern::{
    literal_token, normalize_path, path_glob_match, ArgvPattern, ANY_ARGUMENTS, MAX_TOKENS,
};
use crate::response::ResponseAction;
use crate::selector::LabelSelector;

/// Shell names recognised by `deny: Shells`, as executable or `argv[0]` basenames.
pub const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "pdksh", "csh", "tcsh", "fish", "rbash",
    "yash",
];

/// Multi-call binaries: one executable that runs whichever of its programs (applets) its
/// arguments name (`busybox wget`, `toybox sh`; see [`applet`]).
pub const MULTI_CALL: &[&str] = &["busybox", "toybox"];

/// What a rule denies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Deny {
    /// Starting a shell (see [`SHELLS`]), including through busybox.
    Shells,
    /// Starting any of these programs: a basename (`wget`) matches the executable's or
    /// `argv[0]`'s basename, or the applet a multi-call binary runs as (see [`applet`]), so
    /// that `busybox wget` counts as `wget`; a name with a `/` is a glob over the executable
    /// path as the kernel resolved it (see [`path_glob_match`]: `*` stops at `/`), which a
    /// relative executable path never matches (its basename still does).
    Binaries(Vec<String>),
    /// Starting an executable that is not in the image's layers. A relative executable path
    /// cannot be shown to be in the image, so it counts as drift.
    Drift,
    /// Running as uid 0: starting a program as root, or changing to uid 0.
    Root,
    /// Connecting anywhere outside these networks. Loopback is always allowed: it does not
    /// leave the pod.
    EgressOutside(Vec<Cidr>),
    /// Starting a program in an exec session (`kubectl exec`).
    ExecSessions,
}

impl Deny {
    /// The name of the kind of rule, as written in the CRD.
    pub fn kind(&self) -> &'static str {
        match self {
            Deny::Shells => "Shells",
            Deny::Binaries(_) => "Binaries",
            Deny::Drift => "Drift",
            Deny::Root => "Root",
            Deny::EgressOutside(_) => "EgressOutside",
            Deny::ExecSessions => "ExecSessions",
        }
    }
}

/// What a rule does not apply to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exceptions {
    /// Executable paths (globs allowed, see [`path_glob_match`]) whose events the rule
    /// ignores, matched against the path as the kernel resolved it; a relative executable path
    /// is never excepted.
    #[serde(default)]
    pub executables: Vec<String>,
    /// Container names the rule ignores.
    #[serde(default)]
    pub containers: Vec<String>,
}

impl Exceptions {
    fn covers(&self, container: &str, process: &Process<'_>) -> bool {
        self.containers.iter().any(|c| c == container)
            || (process.exe.starts_with('/') && {
                let exe = normalize_path(process.exe);
                self.executables.iter().any(|g| path_glob_match(g, &exe))
            })
    }
}

/// One rule of a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Name, unique within the policy.
    pub name: String,
    /// What it denies.
    pub deny: Deny,
    /// The response to a violation.
    pub action: ResponseAction,
    /// Whether the agent also kills the offending process in the kernel.
    #[serde(default)]
    pub kill_process: bool,
    /// Whether that kill also takes a container's init (PID 1).
    #[serde(default)]
    pub kill_container_init: bool,
    /// What it does not apply to.
    #[serde(default)]
    pub exceptions: Exceptions,
}

/// A violation of a policy rule, with the response the rule asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyViolation {
    /// Rule and subject.
    pub violation: Violation,
    /// The response the rule asks for.
    pub action: ResponseAction,
    /// Whether to kill the offending process.
    pub kill_process: bool,
    /// Whether that kill also takes a container's init (PID 1).
    pub kill_container_init: bool,
}

/// A cluster-wide policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPolicy {
    /// Policy name.
    pub name: String,
    /// Namespaces whose pods it applies to (empty: all).
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    /// Pods it applies to within those namespaces (empty: all).
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
}

/// The name a multi-call binary reads in argument `index` of its `argv`: the last path
/// component, after dropping one leading `-` from `argv[0]`, which busybox does for the
/// login-shell convention (`exec -a -sh /bin/busybox` is a login shell, run as `sh`). Later
/// arguments keep theirs: `busybox -sh` asks for an applet named `-sh`, which does not exist.
fn multi_call_name(index: usize, arg: &str) -> &str {
    let arg = if index == 0 {
        arg.strip_prefix('-').unwrap_or(arg)
    } else {
        arg
    };
    basename(arg)
}

/// Whether a program started as `exe`, whose file is really named `file_name` (see
/// [`Process::file_name`]), is a [`MULTI_CALL`] binary: by either name, so that `/bin/sh`
/// linked to busybox is busybox, and busybox found in /proc (where `exe` is resolved and
/// `file_name` unknown) is too.
pub fn is_multi_call(exe: &str, file_name: Option<&str>) -> bool {
    MULTI_CALL.contains(&basename(exe)) || file_name.is_some_and(|n| MULTI_CALL.contains(&n))
}

/// The position in `argv` of the argument a [`MULTI_CALL`] binary takes its applet from: the
/// first whose name is not a multi-call binary's own (busybox hands its arguments down one
/// at a time while they name busybox). `None` when every argument names one, or there are
/// none. What that argument asks for may still be no applet: see [`applet`].
pub fn applet_position<S: AsRef<str>>(argv: &[S]) -> Option<usize> {
    argv.iter()
        .enumerate()
        .position(|(i, arg)| !MULTI_CALL.contains(&multi_call_name(i, arg.as_ref())))
}

/// The applet `p` runs as when its executable is a [`MULTI_CALL`] binary (by its path's
/// name or its real file's: [`is_multi_call`]; `/bin/sh` linked to busybox runs as the
/// applet `argv[0]` names, which `exec -a nc /bin/sh` makes `nc`): the last
/// component of `argv[0]` (a shell found in /proc, whose executable link says
/// `/bin/busybox` for `/bin/sh`, runs as `sh`; so does `exec -a sh /bin/busybox`, and
/// `exec -a -sh /bin/busybox`, a login shell), or, while that names a multi-call binary
/// again, of the next argument (`busybox wget`, `/bin/busybox wget`, `busybox busybox
/// wget`: see [`applet_position`]).
///
/// `None` for any other executable, for a multi-call binary called by its own name alone
/// (`busybox`), and for an option (`busybox --help wget`, `busybox --list`): a name that
/// starts with `-` (after the one `argv[0]` may drop) is never an applet. The test is on the
/// last component, not the whole argument, because busybox takes the last component:
/// `busybox -/wget` runs `wget`.
pub fn applet<'a>(p: &Process<'a>) -> Option<&'a str> {
    if !is_multi_call(p.exe, p.file_name) {
        return None;
    }
    let position = applet_position(p.argv)?;
    let name = multi_call_name(position, &p.argv[position]);
    (!name.is_empty() && !name.starts_with('-')).then_some(name)
}

/// The path busybox re-executes itself through to run an applet in a child (its shell runs
/// `wget` as `/proc/self/exe` with `argv[0]` `wget`). The exec event keeps this path, so it
/// does not say which program it is: only `argv[0]` does.
pub const SELF_EXE: &str = "/proc/self/exe";

/// The pattern of the arguments that choose what an exec of `exe` (whose file is really
/// named `file_name`) with `argv` runs, when they choose it: for a [`MULTI_CALL`] binary
/// ([`is_multi_call`]: `/bin/sh` linked to busybox is one) and for [`SELF_EXE`], the
/// arguments up to and including the one that names the applet ([`applet_position`]), then
/// `**` for any arguments after it (`busybox sh -c x` → `sh **`; `busybox wget u` → `busybox wget **`;
/// `/proc/self/exe wget -q u` → `wget **`). When no argument names one, the whole argument
/// list (`busybox` alone → `busybox`; no arguments → the empty pattern, which matches only
/// an empty list). `None` for every other executable, whose arguments do not change which
/// program runs.
///
/// Learning records this pattern (so a profile that saw `busybox sh` does not allow
/// `busybox nc`), and a profile miss names it, so that repeats with other arguments are one
/// violation. The arguments become tokens with [`literal_token`], and the pattern stays
/// within [`MAX_TOKENS`]: past that many multi-call names the rest is left to `**`.
pub fn applet_pattern<S: AsRef<str>>(
    exe: &str,
    file_name: Option<&str>,
    argv: &[S],
) -> Option<ArgvPattern> {
    if exe != SELF_EXE && !is_multi_call(exe, file_name) {
        return None;
    }
    let (chosen, any_after) = match applet_position(argv) {
        Some(position) => (&argv[..=position], true),
        None => (argv, false),
    };
    let (pinned, any_after) = if any_after || chosen.len() > MAX_TOKENS {
        (&chosen[..chosen.len().min(MAX_TOKENS - 1)], true)
    } else {
        (chosen, false)
    };
    let mut tokens: Vec<String> = pinned.iter().map(|a| literal_token(a.as_ref())).collect();
    if any_after {
        tokens.push(ANY_ARGUMENTS.to_owned());
    }
    Some(ArgvPattern(tokens))
}

/// Whether `p` is a shell, directly or as the [`applet`] of a multi-call binary.
pub fn is_shell(p: &Process<'_>) -> bool {
    SHELLS.contains(&p.exe_name()) || applet(p).is_some_and(|a| SHELLS.contains(&a))
}

/// Whether `p` is one of the programs `names` denies (see [`Deny::Binaries`]).
fn is_binary(p: &Process<'_>, names: &[String]) -> bool {
    let exe = p.exe_name();
    let argv0 = p.argv0_name();
    let applet = applet(p);
    names.iter().any(|n| {
        if n.contains('/') {
            p.exe.starts_with('/') && path_glob_match(n, &normalize_path(p.exe))
        } else {
            let n = Some(n.as_str());
            Some(exe) == n || argv0 == n || applet == n
        }
    })
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        IpAddr::V4(v4) => v4.is_loopback(),
    }
}

impl PolicyRule {
    /// The subject this rule objects to in `event`, if it objects.
    fn offends(&self, event: &Event<'_>) -> Option<String> {
        let p = &event.process;
        match (&self.deny, event.kind) {
            (Deny::Shells, EventKind::Exec) if is_shell(p) => Some(p.exe.to_owned()),
            (Deny::Binaries(names), EventKind::Exec) if is_binary(p, names) => {
                Some(p.exe.to_owned())
            }
            (Deny::Drift, EventKind::Exec)
                if p.in_image == Some(false) || !p.exe.starts_with('/') =>
            {
                Some(p.exe.to_owned())
            }
            (Deny::Root, EventKind::Exec) if p.uid == 0 => Some(format!("{} as uid 0", p.exe)),
            (Deny::Root, EventKind::SetUid { uid: 0 }) => Some(format!("{} as uid 0", p.exe)),
            (Deny::ExecSessions, EventKind::Exec) if p.exec_session => Some(p.exe.to_owned()),
            (Deny::EgressOutside(nets), EventKind::Connect { ip, port, protocol })
                if !is_loopback(ip) && !nets.iter().any(|n| n.contains(ip)) =>
            {
                Some(format!("{}:{port}/{protocol}", crate::net::Cidr::host(ip)))
            }
            _ => None,
        }
    }
}

impl ClusterPolicy {
    /// Whether this policy applies to a pod with these labels in a namespace with these.
    pub fn selects(
        &self,
        namespace_labels: &BTreeMap<String, String>,
        pod_labels: &BTreeMap<String, String>,
    ) -> bool {
        self.namespace_selector.matches(namespace_labels) && self.pod_selector.matches(pod_labels)
    }

    /// Appends to `out` a violation for every rule `event` (in `container`) breaks.
    pub fn check(&self, container: &str, event: &Event<'_>, out: &mut Vec<PolicyViolation>) {
        for rule in &self.rules {
            if let Some(subject) = rule.offends(event) {
                if rule.exceptions.covers(container, &event.process) {
                    continue;
                }
                out.push(PolicyViolation {
                    violation: Violation {
                        rule: RuleRef::Policy {
                            policy: self.name.clone(),
                            rule: rule.name.clone(),
                        },
                        subject,
                    },
                    action: rule.action,
                    kill_process: rule.kill_process,
                    kill_container_init: rule.kill_container_init,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Protocol;
    use crate::pattern::MAX_TOKEN_LEN;
    use crate::selector::{Operator, Requirement};

    fn rule(name: &str, deny: Deny) -> PolicyRule {
        PolicyRule {
            name: name.into(),
            deny,
            action: ResponseAction::Tag,
            kill_process: false,
            kill_container_init: false,
            exceptions: Exceptions::default(),
        }
    }

    fn policy() -> ClusterPolicy {
        ClusterPolicy {
            name: "baseline".into(),
            namespace_selector: LabelSelector {
                match_expressions: vec![Requirement {
                    key: "herdwatch.dev/enforce".into(),
                    operator: Operator::Exists,
                    values: vec![],
                }],
                ..Default::default()
            },
            pod_selector: LabelSelector::default(),
            rules: vec![
                rule("no-shells", Deny::Shells),
                PolicyRule {
                    action: ResponseAction::Kill,
                    kill_process: true,
                    ..rule(
                        "no-fetchers",
                        Deny::Binaries(vec![
                            "curl".into(),
                            "wget".into(),
                            "nc".into(),
                            "/opt/tools/*".into(),
                        ]),
                    )
                },
                rule("no-drift", Deny::Drift),
                PolicyRule {
                    exceptions: Exceptions {
                        executables: vec!["/usr/sbin/nginx".into()],
                        containers: vec!["init-perms".into()],
                    },
                    ..rule("no-root", Deny::Root)
                },
                rule(
                    "egress",
                    Deny::EgressOutside(vec!["10.0.0.0/8".parse().unwrap()]),
                ),
                rule("no-exec", Deny::ExecSessions),
            ],
        }
    }

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    fn check(ev: &Event<'_>, container: &str) -> Vec<String> {
        let mut out = Vec::new();
        policy().check(container, ev, &mut out);
        out.iter()
            .map(|v| format!("{}={}", v.violation.rule, v.violation.subject))
            .collect()
    }

    fn p<'a>(exe: &'a str, argv: &'a [String], uid: u32) -> Process<'a> {
        Process {
            exe,
            file_name: None,
            argv,
            uid,
            exec_session: false,
            in_image: Some(true),
        }
    }

    #[test]
    fn shells_directly_and_through_busybox() {
        let a = args("sh -c id");
        assert_eq!(
            check(&Event::exec(p("/bin/bash", &a, 1000)), "app"),
            vec!["policy/baseline/no-shells=/bin/bash"]
        );
        assert_eq!(
            check(&Event::exec(p("/bin/busybox", &a, 1000)), "app"),
            vec!["policy/baseline/no-shells=/bin/busybox"]
        );
        let bb = args("busybox ash");
        assert_eq!(
            check(&Event::exec(p("/bin/busybox", &bb, 1000)), "app").len(),
            1
        );
        let ls = args("ls -l");
        assert!(
            check(&Event::exec(p("/bin/busybox", &ls, 1000)), "app").is_empty(),
            "busybox ls is not a shell"
        );
        let bash_name = args("/bin/bash");
        assert!(is_shell(&p("/usr/bin/bash", &bash_name, 0)));
    }

    #[test]
    fn named_binaries_by_basename_argv0_or_path_glob() {
        let curl = args("curl -s http://x");
        let v = PolicyViolation {
            violation: Violation {
                rule: RuleRef::Policy {
                    policy: "baseline".into(),
                    rule: "no-fetchers".into(),
                },
                subject: "/usr/bin/curl".into(),
            },
            action: ResponseAction::Kill,
            kill_process: true,
            kill_container_init: false,
        };
        let mut out = Vec::new();
        policy().check(
            "app",
            &Event::exec(p("/usr/bin/curl", &curl, 1000)),
            &mut out,
        );
        assert_eq!(out, vec![v]);
        let wget = args("wget http://x");
        assert_eq!(
            check(&Event::exec(p("/bin/busybox", &wget, 1000)), "app").len(),
            1,
            "busybox wget"
        );
        let tool = args("x");
        assert_eq!(
            check(&Event::exec(p("/opt/tools/scanner", &tool, 1000)), "app").len(),
            1
        );
        let ok = args("curlew");
        assert!(check(&Event::exec(p("/usr/bin/curlew", &ok, 1000)), "app").is_empty());
    }

    /// The rules of a policy that denies `names` as `Binaries`, broken by `exe` run with
    /// `argv`.
    fn binaries_check(names: &[&str], exe: &str, argv: &str) -> Vec<String> {
        let pol = ClusterPolicy {
            name: "p".into(),
            rules: vec![rule(
                "deny",
                Deny::Binaries(names.iter().map(|n| (*n).to_owned()).collect()),
            )],
            ..ClusterPolicy::default()
        };
        let argv = if argv.is_empty() { vec![] } else { args(argv) };
        let mut out = Vec::new();
        pol.check("app", &Event::exec(p(exe, &argv, 1000)), &mut out);
        out.iter().map(|v| v.violation.subject.clone()).collect()
    }

    #[test]
    fn path_rules_judge_the_path_as_the_kernel_resolved_it() {
        assert_eq!(
            binaries_check(&["/dev/shm/*"], "//dev/shm/x", "x"),
            ["//dev/shm/x"]
        );
        assert_eq!(
            binaries_check(&["/tmp/*"], "/usr/../tmp/x", "x"),
            ["/usr/../tmp/x"]
        );
        assert!(
            binaries_check(&["/opt/tools/*"], "/opt/tools/sub/x", "x").is_empty(),
            "`*` stops at `/`"
        );
        assert_eq!(
            binaries_check(&["/opt/tools/**"], "/opt/tools/sub/x", "x"),
            ["/opt/tools/sub/x"]
        );
        // An exception for `/usr/*` does not cover what `..` takes out of /usr.
        let a = args("x");
        let root = |exe| {
            let mut out = Vec::new();
            let mut pol = policy();
            pol.rules[3].exceptions.executables = vec!["/usr/*".into()];
            pol.check("app", &Event::exec(p(exe, &a, 0)), &mut out);
            out.iter()
                .map(|v| v.violation.subject.clone())
                .collect::<Vec<_>>()
        };
        assert!(root("/usr/x").is_empty());
        assert_eq!(root("/usr/../tmp/x"), ["/usr/../tmp/x as uid 0"]);
    }

    #[test]
    fn a_relative_executable_is_drift_and_still_judged_by_name() {
        let a = args("x");
        // Reported as in the image, but a relative path cannot be shown to be.
        assert_eq!(
            check(&Event::exec(p("./x", &a, 1000)), "app"),
            ["policy/baseline/no-drift=./x"]
        );
        let curl = args("curl");
        assert_eq!(
            check(&Event::exec(p("bin/curl", &curl, 1000)), "app"),
            [
                "policy/baseline/no-fetchers=bin/curl",
                "policy/baseline/no-drift=bin/curl"
            ]
        );
        assert!(
            binaries_check(&["/opt/tools/*"], "tools/x", "x").is_empty(),
            "a relative path matches no path glob"
        );
    }

    #[test]
    fn a_multi_call_binary_counts_as_the_applet_its_arguments_name() {
        for (exe, argv) in [
            ("/bin/busybox", "busybox wget http://x/"),
            ("/bin/busybox", "/bin/busybox wget http://x/"),
            ("/usr/bin/toybox", "toybox wget http://x/"),
            // busybox takes the last component: this runs wget too.
            ("/bin/busybox", "busybox -/wget http://x/"),
            ("/bin/busybox", "busybox /usr/bin/wget"),
            // And hands its arguments down as long as they name busybox.
            ("/bin/busybox", "busybox busybox wget"),
            // The applet re-executed through /proc/self/exe, named by argv[0].
            ("/proc/self/exe", "wget -q http://x/"),
        ] {
            assert_eq!(
                binaries_check(&["wget"], exe, argv),
                [exe],
                "{exe} {argv} runs wget"
            );
        }
        for (exe, argv, why) in [
            ("/bin/busybox", "busybox --list", "an option"),
            ("/bin/busybox", "busybox --help wget", "help, not a run"),
            ("/bin/busybox", "busybox", "no applet"),
            ("/bin/busybox", "", "no arguments"),
            ("/bin/busybox", "busybox wgetx", "another applet"),
            ("/bin/busybox", "ls wget", "the applet is ls"),
            (
                "/usr/bin/python3",
                "python3 wget",
                "not a multi-call binary",
            ),
            (
                "/usr/bin/python3",
                "busybox wget",
                "not a multi-call binary",
            ),
        ] {
            assert!(
                binaries_check(&["wget"], exe, argv).is_empty(),
                "{exe} {argv}: {why}"
            );
        }
        // Denying the multi-call binary itself still denies every run of it.
        for argv in ["busybox", "busybox wget", "sh -c id", ""] {
            assert_eq!(
                binaries_check(&["busybox"], "/bin/busybox", argv),
                ["/bin/busybox"],
                "busybox run as {argv:?}"
            );
        }
    }

    #[test]
    fn the_applet_is_named_by_argv0_or_the_arguments_after_the_multi_call_name() {
        let applet_of = |exe: &str, argv: &str| {
            let argv = args(argv);
            applet(&p(exe, &argv, 0)).map(str::to_owned)
        };
        assert_eq!(applet_of("/bin/busybox", "sh -c id").as_deref(), Some("sh"));
        assert_eq!(
            applet_of("/bin/busybox", "/bin/ash").as_deref(),
            Some("ash")
        );
        assert_eq!(
            applet_of("/bin/busybox", "busybox toybox sh").as_deref(),
            Some("sh")
        );
        assert_eq!(applet_of("/bin/busybox", "busybox -c id"), None);
        assert_eq!(applet_of("/bin/busybox", "busybox --install"), None);
        assert_eq!(applet_of("/bin/busybox", "busybox bin/"), None, "no name");
        assert_eq!(applet_of("/bin/bash", "sh"), None);
        // Shells read the applet the same way.
        let shell = |exe: &str, argv: &str| is_shell(&p(exe, &args(argv), 0));
        assert!(shell("/bin/busybox", "/bin/busybox sh -c id"));
        assert!(shell("/bin/busybox", "busybox busybox sh"));
        assert!(shell("/bin/toybox", "toybox -/bash"));
        assert!(!shell("/bin/busybox", "busybox --help sh"));
        assert!(!shell("/usr/bin/python3", "python3 sh"));
    }

    #[test]
    fn argv0_drops_one_leading_dash_as_busybox_does_for_login_shells() {
        let applet_of = |exe: &str, argv: &str| {
            let argv = args(argv);
            applet(&p(exe, &argv, 0)).map(str::to_owned)
        };
        assert_eq!(applet_of("/bin/busybox", "-sh").as_deref(), Some("sh"));
        assert_eq!(
            applet_of("/bin/busybox", "-/bin/ash -c id").as_deref(),
            Some("ash")
        );
        assert_eq!(
            applet_of("/bin/busybox", "-busybox wget").as_deref(),
            Some("wget"),
            "-busybox is busybox: the applet is the next argument"
        );
        assert_eq!(applet_of("/bin/busybox", "--sh"), None, "one dash only");
        assert_eq!(applet_of("/bin/busybox", "-"), None, "no name left");
        assert_eq!(
            applet_of("/bin/busybox", "/bin/-sh"),
            None,
            "a dash on the name"
        );
        assert_eq!(
            applet_of("/bin/busybox", "busybox -sh"),
            None,
            "argv[0] only: later arguments starting with - are options"
        );
        assert_eq!(applet_position(&args("-busybox busybox -sh")), Some(2));
        assert_eq!(applet_position(&args("busybox -busybox sh")), Some(1));

        let shell = |exe: &str, argv: &str| is_shell(&p(exe, &args(argv), 0));
        assert!(shell("/bin/busybox", "-sh"));
        assert!(shell("/bin/toybox", "-bash --login"));
        assert!(!shell("/usr/bin/python3", "-sh"), "not a multi-call binary");
        assert_eq!(
            check(&Event::exec(p("/bin/busybox", &args("-sh"), 1000)), "app"),
            vec!["policy/baseline/no-shells=/bin/busybox"]
        );
        assert_eq!(
            binaries_check(&["wget"], "/bin/busybox", "-wget http://x/"),
            ["/bin/busybox"]
        );
    }

    #[test]
    fn the_real_file_name_makes_a_link_to_busybox_busybox() {
        let run = |exe: &'static str, file_name: Option<&'static str>, argv: &str| {
            (exe, file_name, args(argv))
        };
        fn with<'a>(exe: &'a str, file_name: Option<&'a str>, argv: &'a [String]) -> Process<'a> {
            Process {
                file_name,
                ..p(exe, argv, 1000)
            }
        }
        // `exec -a nc /bin/sh`: busybox runs nc.
        let (exe, name, argv) = run("/bin/sh", Some("busybox"), "nc -l -p 4444");
        assert_eq!(applet(&with(exe, name, &argv)), Some("nc"));
        assert_eq!(
            binaries_check(&["nc"], exe, "nc -l -p 4444"),
            ["/bin/sh"],
            "named by argv[0] with or without the name"
        );
        // A program not named like a shell that links to busybox, asked to be one.
        let (exe, name, argv) = run("/usr/sbin/httpd", Some("busybox"), "sh -c id");
        assert!(is_shell(&with(exe, name, &argv)));
        assert_eq!(
            check(&Event::exec(with(exe, name, &argv)), "app"),
            vec!["policy/baseline/no-shells=/usr/sbin/httpd"]
        );
        assert!(
            !is_shell(&with(exe, None, &argv)),
            "unknown name: as before"
        );
        assert!(
            !is_shell(&with(exe, Some("httpd"), &argv)),
            "a name that is not a multi-call binary: as before"
        );
        // busybox's re-exec of an applet, `/proc/self/exe` with `argv[0]` `sh`.
        let (exe, name, argv) = run("/proc/self/exe", Some("busybox"), "sh -c id");
        assert!(is_shell(&with(exe, name, &argv)));
        assert!(!is_shell(&with(exe, None, &argv)));
        // `Binaries` reads the applet the same way.
        let wget = ["wget".to_owned()];
        let (exe, name, argv) = run("/usr/sbin/httpd", Some("toybox"), "toybox wget u");
        assert!(is_binary(&with(exe, name, &argv), &wget));
        assert!(!is_binary(&with(exe, None, &argv), &wget));

        // The learned pattern follows the same predicate.
        let pattern = |exe: &str, file_name: Option<&str>, argv: &[&str]| {
            applet_pattern(exe, file_name, argv).map(|p| p.0.join(" "))
        };
        assert_eq!(
            pattern("/bin/sh", Some("busybox"), &["sh", "-c", "x"]).as_deref(),
            Some("sh **")
        );
        assert_eq!(
            pattern("/bin/sh", Some("busybox"), &["nc", "-l"]).as_deref(),
            Some("nc **")
        );
        assert_eq!(pattern("/bin/sh", None, &["sh", "-c", "x"]), None);
        assert_eq!(pattern("/bin/sh", Some("dash"), &["sh", "-c", "x"]), None);
        assert_eq!(
            pattern("/bin/busybox", Some("busybox"), &["sh"]).as_deref(),
            Some("sh **"),
            "both names agree"
        );
        assert!(is_multi_call("/bin/busybox", None));
        assert!(is_multi_call("/bin/sh", Some("toybox")));
        assert!(!is_multi_call("/bin/sh", Some("busybox.static")));
        assert!(!is_multi_call("/bin/sh", None));
    }

    #[test]
    fn the_applet_pattern_pins_the_arguments_that_choose_the_applet() {
        let pattern = |exe: &str, argv: &[&str]| {
            applet_pattern(exe, None, argv)
                .map(|p| p.0.iter().map(String::as_str).collect::<Vec<_>>().join(" "))
        };
        for (exe, argv, expected) in [
            ("/bin/busybox", &["sh", "-c", "x"][..], "sh **"),
            ("/bin/busybox", &["busybox", "wget", "u"], "busybox wget **"),
            ("/proc/self/exe", &["wget", "-q", "u"], "wget **"),
            ("/bin/busybox", &[], ""),
            ("/bin/busybox", &["busybox"], "busybox"),
            (
                "/bin/busybox",
                &["/bin/busybox", "busybox"],
                "/bin/busybox busybox",
            ),
            (
                "/usr/bin/toybox",
                &["toybox", "-/wget", "u"],
                "toybox -/wget **",
            ),
            ("/bin/busybox", &["-sh"], "-sh **"),
            (
                "/bin/busybox",
                &["-busybox", "ash", "-l"],
                "-busybox ash **",
            ),
            (
                "/bin/busybox",
                &["busybox", "--help", "wget"],
                "busybox --help **",
            ),
            // A name busybox would not find is pinned all the same, without its globs.
            ("/bin/busybox", &["w*", "x"], "w? **"),
            ("/bin/busybox", &["busybox", "**"], "busybox ?? **"),
            ("sbin/busybox", &["ls"], "ls **"),
        ] {
            assert_eq!(
                pattern(exe, argv).as_deref(),
                Some(expected),
                "{exe} {argv:?}"
            );
        }
        for exe in [
            "/bin/sh",
            "/usr/sbin/httpd",
            "/proc/self/exe2",
            "/proc/1/exe",
        ] {
            assert_eq!(pattern(exe, &["busybox", "wget"]), None, "{exe}");
        }

        // Bounded by the schema: long arguments are cut, and a run of multi-call names
        // past the token limit is left to `**`.
        let long = "x".repeat(5000);
        let p = applet_pattern("/proc/self/exe", None, &[long.as_str()]).unwrap();
        assert!(p.0[0].len() <= MAX_TOKEN_LEN && p.matches(&[long.as_str(), "-q"]));
        let many = vec!["busybox"; 100];
        let p = applet_pattern("/bin/busybox", None, &many).unwrap();
        assert_eq!(p.0.len(), MAX_TOKENS);
        assert_eq!(p.0.last().map(String::as_str), Some("**"));
        assert!(p.matches(&many));
    }

    #[test]
    fn applet_patterns_allow_the_applet_with_any_arguments_and_no_other() {
        let allows = |learned: (&str, &str), run: (&str, &str)| {
            let learned_argv = if learned.1.is_empty() {
                vec![]
            } else {
                args(learned.1)
            };
            let run_argv = if run.1.is_empty() {
                vec![]
            } else {
                args(run.1)
            };
            learned.0 == run.0
                && applet_pattern(learned.0, None, &learned_argv)
                    .expect("a multi-call binary")
                    .matches(&run_argv)
        };
        let sh = ("/bin/busybox", "sh -c x");
        assert!(allows(sh, ("/bin/busybox", "sh")));
        assert!(allows(sh, ("/bin/busybox", "sh -c y -- z")));
        assert!(!allows(sh, ("/bin/busybox", "busybox nc -l -p 4444")));
        assert!(!allows(sh, ("/bin/busybox", "nc -l")));
        assert!(!allows(sh, ("/bin/busybox", "shx")));
        assert!(!allows(sh, ("/bin/busybox", "")));
        let wget = ("/proc/self/exe", "wget -q u");
        assert!(allows(wget, ("/proc/self/exe", "wget -O- http://x/")));
        assert!(!allows(wget, ("/proc/self/exe", "nc -e /bin/sh")));
        let help = ("/bin/busybox", "busybox");
        assert!(allows(help, ("/bin/busybox", "busybox")));
        assert!(!allows(help, ("/bin/busybox", "busybox wget")));
        let nothing = ("/bin/busybox", "");
        assert!(allows(nothing, ("/bin/busybox", "")));
        assert!(!allows(nothing, ("/bin/busybox", "sh")));
    }

    #[test]
    fn drift_root_and_exec_sessions() {
        let a = args("x");
        let dropped = Process {
            in_image: Some(false),
            ..p("/tmp/x", &a, 1000)
        };
        assert_eq!(
            check(&Event::exec(dropped), "app"),
            vec!["policy/baseline/no-drift=/tmp/x"]
        );
        let unknown = Process {
            in_image: None,
            ..p("/tmp/x", &a, 1000)
        };
        assert!(
            check(&Event::exec(unknown), "app").is_empty(),
            "unknown origin is not drift"
        );

        assert_eq!(
            check(&Event::exec(p("/app/server", &a, 0)), "app"),
            vec!["policy/baseline/no-root=/app/server as uid 0"]
        );
        let setuid = Event {
            process: p("/app/server", &a, 1000),
            kind: EventKind::SetUid { uid: 0 },
        };
        assert_eq!(check(&setuid, "app").len(), 1);
        assert!(
            check(&Event::exec(p("/usr/sbin/nginx", &a, 0)), "app").is_empty(),
            "executable exception"
        );
        assert!(
            check(&Event::exec(p("/app/server", &a, 0)), "init-perms").is_empty(),
            "container exception"
        );

        let session = Process {
            exec_session: true,
            file_name: None,
            ..p("/app/cli", &a, 1000)
        };
        assert_eq!(
            check(&Event::exec(session), "app"),
            vec!["policy/baseline/no-exec=/app/cli"]
        );
    }

    #[test]
    fn egress_outside_networks() {
        let a = args("x");
        let conn = |ip: &str| Event {
            process: p("/app/server", &a, 1000),
            kind: EventKind::Connect {
                ip: ip.parse().unwrap(),
                port: 443,
                protocol: Protocol::Tcp,
            },
        };
        assert!(check(&conn("10.1.2.3"), "app").is_empty());
        assert!(
            check(&conn("127.0.0.1"), "app").is_empty(),
            "loopback stays in the pod"
        );
        assert!(check(&conn("::1"), "app").is_empty());
        assert_eq!(
            check(&conn("203.0.113.9"), "app"),
            vec!["policy/baseline/egress=203.0.113.9:443/TCP"]
        );
    }

    #[test]
    fn selection_by_namespace_and_pod_labels() {
        let pol = policy();
        let ns: BTreeMap<String, String> =
            [("herdwatch.dev/enforce".to_owned(), "true".to_owned())].into();
        assert!(pol.selects(&ns, &BTreeMap::new()));
        assert!(!pol.selects(&BTreeMap::new(), &BTreeMap::new()));
    }
}
