//! File paths: how they are learned, and how a profile's file entries are matched.
//!
//! A learned profile must describe what the workload opened and nothing more, so that an
//! intruder's reads of credentials stay violations:
//! - A file entry is a *path pattern*: its components are literal, or `*` for exactly one
//!   component (a generated name: `/proc/*/status`), and a last component `**` makes it a
//!   subtree (everything below the directory, and the directory itself). Learning never
//!   writes a subtree: those are hand-written (the CRD's `prefix`).
//! - Opening a directory is learned as that directory (its listing), not as a subtree.
//! - Generated names are folded one component at a time, keeping what follows them.
//! - Paths are matched as the kernel would resolve them lexically: `//` and `.` dropped,
//!   `..` resolved, so `/usr/../etc/shadow` is `/etc/shadow`.
//! - Sensitive paths ([`SensitivePaths`]: credentials, keys, tokens, kernel and cgroup
//!   control files) are allowed only by an entry that names them literally: a pattern or a
//!   subtree never covers them.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::behavior::Access;

/// The directories whose contents are scratch space with generated names.
const SCRATCH: &[&str] = &["/tmp", "/var/tmp", "/dev/shm", "/run"];

/// The list in use in this process (see [`SensitivePaths::install`]).
static PROCESS_LIST: OnceLock<Arc<SensitivePaths>> = OnceLock::new();

/// The default sensitive paths (see [`SensitivePaths`]).
pub const DEFAULT_SENSITIVE_PATHS: &[&str] = &[
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/sudoers.d/**",
    "/var/run/secrets/**",
    "/run/secrets/**",
    "/proc/*/environ",
    "/proc/*/mem",
    "/proc/sys/kernel/core_pattern",
    "/root",
    "/root/**",
    "/home/*/.ssh/**",
    "/home/*/.aws/**",
    "/home/*/.kube/**",
    "/etc/ssh/ssh_host_*",
    "/etc/ssl/private/**",
    "**/release_agent",
    "/sys/fs/cgroup/**",
];

/// `path` resolved lexically: duplicate slashes and `.` components dropped, `..` resolved
/// against what precedes it (above `/` it stays at `/`), no trailing slash. `None` for a
/// relative path, which cannot be resolved without the process's working directory.
pub fn normalize(path: &str) -> Option<String> {
    path.starts_with('/')
        .then(|| crate::pattern::normalize_path(path).into_owned())
}

/// Whether a path component looks generated: a number (a pid under `/proc`, a file
/// descriptor), or a long run of hex digits and dashes with a digit in it (a hash, a UUID).
pub fn looks_generated(component: &str) -> bool {
    let digits = component.bytes().filter(u8::is_ascii_digit).count();
    let hexish = component
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b'-');
    (!component.is_empty() && digits == component.len())
        || (component.len() >= 12 && hexish && digits > 0)
}

/// The path pattern that learning records for an open of `path`. `None` when the path is
/// not learnable: relative (the working directory is unknown), or reaching into another
/// process's root or working directory (`/proc/<pid>/root`, `/proc/<pid>/cwd`: the host's
/// or another container's files).
///
/// - A directory (`/`, `/etc`, opened to list it) is learned as itself: its listing, not
///   what is below it.
/// - A component that looks generated becomes `*`, and what follows it is kept:
///   `/proc/1234/status` → `/proc/*/status`.
/// - Under a scratch directory (`/tmp`, `/var/tmp`, `/dev/shm`, `/run`), every directory
///   component becomes `*`, and so does a file name with a digit in it:
///   `/tmp/upload-8f3a/part` → `/tmp/*/part`, `/tmp/tmpXk2q9a` → `/tmp/*`.
pub fn learned_path(path: &str) -> Option<String> {
    let path = normalize(path)?;
    let components: Vec<&str> = path.split('/').skip(1).filter(|c| !c.is_empty()).collect();
    if components.first() == Some(&"proc")
        && components
            .get(2)
            .is_some_and(|c| *c == "root" || *c == "cwd")
    {
        return None;
    }
    let scratch_depth = SCRATCH
        .iter()
        .find(|s| path == **s || path.starts_with(&format!("{s}/")))
        .map(|s| s.split('/').filter(|c| !c.is_empty()).count());
    let last = components.len().saturating_sub(1);
    let mut out = String::with_capacity(path.len());
    for (i, c) in components.iter().enumerate() {
        out.push('/');
        let folded = match scratch_depth {
            Some(depth) if i >= depth => i < last || c.bytes().any(|b| b.is_ascii_digit()),
            _ => looks_generated(c),
        };
        out.push_str(if folded { "*" } else { c });
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// One component of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    /// Exactly this component.
    Literal(Box<str>),
    /// One component, whatever it is.
    One,
    /// One component matching a glob where `*` stands for any characters (never `/`).
    Glob(Box<str>),
    /// Any number of components, none included.
    Any,
}

/// A compiled path pattern: literal components, `*` for one component, a component glob
/// such as `ssh_host_*` (`*` within a component never crosses `/`), and `**` for any number
/// of components.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    parts: Vec<Part>,
}

impl PathPattern {
    /// Compiles `pattern` (an absolute path pattern).
    pub fn new(pattern: &str) -> PathPattern {
        let parts = pattern
            .split('/')
            .filter(|c| !c.is_empty())
            .map(|c| match c {
                "*" => Part::One,
                "**" => Part::Any,
                c if c.contains('*') => Part::Glob(c.into()),
                c => Part::Literal(c.into()),
            })
            .collect::<Vec<_>>();
        // Runs of `**` are one `**`.
        let mut collapsed: Vec<Part> = Vec::with_capacity(parts.len());
        for p in parts {
            if p == Part::Any && collapsed.last() == Some(&Part::Any) {
                continue;
            }
            collapsed.push(p);
        }
        PathPattern { parts: collapsed }
    }

    /// Whether the pattern names one path only (no `*` anywhere).
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// Whether `path` (normalised, absolute) matches. Linear in pattern × path components:
    /// the set of pattern positions reachable after each path component is kept, never a
    /// backtracking search.
    pub fn matches(&self, path: &str) -> bool {
        let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let n = self.parts.len();
        // reachable[i]: the first i parts have matched the components consumed so far.
        let mut reachable = vec![false; n + 1];
        reachable[0] = true;
        close_over_any(&self.parts, &mut reachable);
        for c in components {
            let mut next = vec![false; n + 1];
            for i in 0..n {
                if !reachable[i] {
                    continue;
                }
                match &self.parts[i] {
                    Part::Any => next[i] = true,
                    Part::One => next[i + 1] = true,
                    Part::Literal(l) => next[i + 1] |= **l == *c,
                    Part::Glob(g) => next[i + 1] |= component_glob(g, c),
                }
            }
            close_over_any(&self.parts, &mut next);
            reachable = next;
        }
        reachable[n]
    }
}

/// A `**` at position i may match nothing: whoever reaches i reaches i + 1.
fn close_over_any(parts: &[Part], reachable: &mut [bool]) {
    for i in 0..parts.len() {
        if reachable[i] && parts[i] == Part::Any {
            reachable[i + 1] = true;
        }
    }
}

/// `*` within one component: any characters. Linear (greedy over the literal pieces).
fn component_glob(glob: &str, text: &str) -> bool {
    let mut pieces = glob.split('*');
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        // No `*`: the whole text must have matched.
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Paths a learned or hand-written pattern never covers: only an entry that names the path
/// literally allows it. The default is [`DEFAULT_SENSITIVE_PATHS`]; the agent takes its own
/// list from `--sensitive-paths` (chart value `agent.sensitivePaths`).
#[derive(Clone, Debug)]
pub struct SensitivePaths {
    patterns: Vec<(String, PathPattern)>,
}

impl SensitivePaths {
    /// The list `patterns` (each absolute, with `*` and `**` as in [`PathPattern`]).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> SensitivePaths {
        SensitivePaths {
            patterns: patterns
                .iter()
                .map(|p| (p.as_ref().to_owned(), PathPattern::new(p.as_ref())))
                .collect(),
        }
    }

    /// The process's list: the one [`SensitivePaths::install`] set at start, else
    /// [`DEFAULT_SENSITIVE_PATHS`].
    pub fn shared_default() -> Arc<SensitivePaths> {
        PROCESS_LIST
            .get_or_init(|| Arc::new(SensitivePaths::default()))
            .clone()
    }

    /// Makes `self` the process's list, once, before any profile is indexed (the agent
    /// does it from `--sensitive-paths`). Returns false when a list was already in use.
    pub fn install(self) -> bool {
        PROCESS_LIST.set(Arc::new(self)).is_ok()
    }

    /// Checks one pattern of a list a user gives: absolute, or starting with `**`.
    pub fn check_pattern(pattern: &str) -> Result<(), String> {
        if pattern.starts_with('/') || pattern.starts_with("**") {
            Ok(())
        } else {
            Err(format!(
                "sensitive path {pattern:?} must be absolute (e.g. /etc/shadow, /home/*/.ssh/**) or start with ** (e.g. **/release_agent)"
            ))
        }
    }

    /// Whether `path` (normalised) is sensitive.
    pub fn contains(&self, path: &str) -> bool {
        self.patterns.iter().any(|(_, p)| p.matches(path))
    }

    /// The patterns, as given.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|(s, _)| s.as_str())
    }
}

impl Default for SensitivePaths {
    fn default() -> Self {
        SensitivePaths::new(DEFAULT_SENSITIVE_PATHS)
    }
}

impl fmt::Display for SensitivePaths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<&str> = self.patterns().collect();
        write!(f, "{}", list.join(","))
    }
}

/// A profile's file entries, indexed for matching.
#[derive(Clone, Debug, Default)]
pub struct FilesIndex {
    /// Literal paths (normalised) → access.
    exact: HashMap<Box<str>, Access>,
    /// Subtrees (`<dir>/**`, by `<dir>`) → access.
    below: HashMap<Box<str>, Access>,
    /// Everything else: patterns with `*`.
    patterns: Vec<(PathPattern, Access)>,
    /// Relative paths as learned, matched as they are.
    relative: HashMap<Box<str>, Access>,
    sensitive: Option<Arc<SensitivePaths>>,
}

impl FilesIndex {
    /// Indexes `entries` (path pattern, access), judging sensitive paths by `sensitive`.
    pub fn new<'a>(
        entries: impl IntoIterator<Item = (&'a str, Access)>,
        sensitive: Arc<SensitivePaths>,
    ) -> FilesIndex {
        let mut idx = FilesIndex {
            sensitive: Some(sensitive),
            ..FilesIndex::default()
        };
        for (pattern, access) in entries {
            let Some(norm) = normalize(pattern) else {
                *idx.relative.entry(pattern.into()).or_insert(Access::NONE) |= access;
                continue;
            };
            if let Some(dir) = norm.strip_suffix("/**").or((norm == "/**").then_some("/")) {
                let dir = if dir.is_empty() { "/" } else { dir };
                if !dir.contains('*') {
                    *idx.below.entry(dir.into()).or_insert(Access::NONE) |= access;
                    continue;
                }
            }
            let compiled = PathPattern::new(&norm);
            if compiled.is_literal() {
                *idx.exact.entry(norm.into()).or_insert(Access::NONE) |= access;
            } else {
                idx.patterns.push((compiled, access));
            }
        }
        idx
    }

    /// Whether no entry is indexed.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.below.is_empty()
            && self.patterns.is_empty()
            && self.relative.is_empty()
    }

    /// Whether the entries allow `access` to `path`: the union of the access of every
    /// entry that matches must cover it. A sensitive path is matched by literal entries
    /// only.
    pub fn allows(&self, path: &str, access: Access) -> bool {
        let Some(path) = normalize(path) else {
            return self.relative.get(path).is_some_and(|a| a.contains(access));
        };
        let mut granted = self
            .exact
            .get(path.as_str())
            .copied()
            .unwrap_or(Access::NONE);
        if granted.contains(access) {
            return true;
        }
        let sensitive = self.sensitive.as_ref().is_some_and(|s| s.contains(&path));
        if sensitive {
            return false;
        }
        // Subtrees: the path itself and each ancestor directory.
        let mut end = path.len();
        loop {
            let candidate = if end == 0 { "/" } else { &path[..end] };
            if let Some(a) = self.below.get(candidate) {
                granted |= *a;
                if granted.contains(access) {
                    return true;
                }
            }
            if end == 0 {
                break;
            }
            end = path[..end].rfind('/').unwrap_or(0);
        }
        for (pattern, a) in &self.patterns {
            if !granted.contains(*a) && pattern.matches(&path) {
                granted |= *a;
                if granted.contains(access) {
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &[(&str, Access)]) -> FilesIndex {
        FilesIndex::new(entries.iter().copied(), SensitivePaths::shared_default())
    }

    #[test]
    fn paths_are_resolved_lexically() {
        assert_eq!(normalize("//etc//shadow").as_deref(), Some("/etc/shadow"));
        assert_eq!(
            normalize("/usr/../etc/./shadow").as_deref(),
            Some("/etc/shadow")
        );
        assert_eq!(
            normalize("/../../etc/shadow").as_deref(),
            Some("/etc/shadow")
        );
        assert_eq!(normalize("/etc/").as_deref(), Some("/etc"));
        assert_eq!(normalize("/").as_deref(), Some("/"));
        assert_eq!(normalize("etc/shadow"), None);
    }

    #[test]
    fn a_directory_open_is_its_listing_not_everything_below_it() {
        let learned = learned_path("/").unwrap();
        assert_eq!(learned, "/");
        let idx = index(&[(&learned, Access::READ), ("/etc", Access::READ)]);
        assert!(idx.allows("/", Access::READ));
        assert!(idx.allows("/etc/", Access::READ));
        assert!(!idx.allows("/etc/shadow", Access::READ));
        assert!(!idx.allows("/etc/passwd", Access::READ));
        assert!(!idx.allows(
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            Access::READ
        ));
    }

    #[test]
    fn generated_names_are_folded_and_what_follows_them_is_kept() {
        assert_eq!(learned_path("/proc/1234/status").unwrap(), "/proc/*/status");
        assert_eq!(
            learned_path("/proc/self/status").unwrap(),
            "/proc/self/status"
        );
        assert_eq!(learned_path("/proc/self/fd/3").unwrap(), "/proc/self/fd/*");
        assert_eq!(
            learned_path("/var/cache/app/3f2a9c0d4e5b6a7f/blob").unwrap(),
            "/var/cache/app/*/blob"
        );
        assert_eq!(
            learned_path("/tmp/upload-8f3a/part").unwrap(),
            "/tmp/*/part"
        );
        assert_eq!(learned_path("/tmp/tmpXk2q9a").unwrap(), "/tmp/*");
        assert_eq!(
            learned_path("/usr/lib/libssl.so.3").unwrap(),
            "/usr/lib/libssl.so.3"
        );
        let idx = index(&[(&learned_path("/proc/123/status").unwrap(), Access::READ)]);
        assert!(idx.allows("/proc/456/status", Access::READ));
        assert!(!idx.allows("/proc/456/environ", Access::READ));
        assert!(!idx.allows("/proc/456/status/x", Access::READ));
        assert!(!idx.allows("/proc/1/2/status", Access::READ));
    }

    #[test]
    fn other_processes_roots_and_relative_paths_are_not_learned_as_absolute() {
        assert_eq!(learned_path("/proc/1/root/etc/shadow"), None);
        assert_eq!(learned_path("/proc/self/cwd/x"), None);
        assert_eq!(learned_path("index.html"), None);
        // A relative path learned as it was opened allows that same string only.
        let idx = index(&[("index.html", Access::READ)]);
        assert!(idx.allows("index.html", Access::READ));
        assert!(!idx.allows("../etc/shadow", Access::READ));
    }

    #[test]
    fn sensitive_paths_are_allowed_only_by_a_literal_entry() {
        let idx = index(&[
            ("/etc/**", Access::READ),
            ("/proc/*/environ", Access::READ),
            ("/run/*/*/*/*", Access::READ),
            ("/**", Access::READ),
        ]);
        for path in [
            "/etc/shadow",
            "/proc/1/environ",
            "/run/secrets/kubernetes.io/serviceaccount/token",
            "/root/.bash_history",
            "/etc/ssl/private/server.key",
            "/sys/fs/cgroup/release_agent",
            "/etc/ssh/ssh_host_ed25519_key",
        ] {
            assert!(
                !idx.allows(path, Access::READ),
                "{path} allowed by a pattern"
            );
        }
        // Aliases of a sensitive path are that path.
        assert!(!idx.allows("//etc/shadow", Access::READ));
        assert!(!idx.allows("/usr/../etc/shadow", Access::READ));
        assert!(idx.allows("/etc/passwd", Access::READ));
        let exact = index(&[("/etc/shadow", Access::READ)]);
        assert!(exact.allows("/etc/shadow", Access::READ));
        assert!(exact.allows("/etc/../etc/shadow", Access::READ));
        assert!(!exact.allows("/etc/shadow", Access::WRITE));
        // The list is a setting.
        let none = FilesIndex::new(
            [("/etc/**", Access::READ)],
            Arc::new(SensitivePaths::new::<&str>(&[])),
        );
        assert!(none.allows("/etc/shadow", Access::READ));
    }

    #[test]
    fn legacy_subtrees_still_cover_what_is_below_them() {
        let idx = index(&[
            ("/etc/nginx/**", Access::READ),
            ("/var/log/**", Access::WRITE),
        ]);
        assert!(idx.allows("/etc/nginx", Access::READ));
        assert!(idx.allows("/etc/nginx/conf.d/x.conf", Access::READ));
        assert!(!idx.allows("/etc/nginx2", Access::READ));
        assert!(!idx.allows("/etc/nginx/x", Access::WRITE));
        assert!(idx.allows("/var/log/app/x.log", Access::WRITE));
    }

    #[test]
    fn component_globs_stay_within_one_component() {
        let p = PathPattern::new("/etc/ssh/ssh_host_*_key");
        assert!(p.matches("/etc/ssh/ssh_host_rsa_key"));
        assert!(!p.matches("/etc/ssh/ssh_host_rsa_key.pub"));
        assert!(!p.matches("/etc/ssh/ssh_host_/x/_key"));
        let star = PathPattern::new("/opt/app/*");
        assert!(star.matches("/opt/app/run"));
        assert!(!star.matches("/opt/app/a/b"));
        let any = PathPattern::new("**/release_agent");
        assert!(any.matches("/release_agent"));
        assert!(any.matches("/sys/fs/cgroup/x/release_agent"));
        assert!(!any.matches("/sys/fs/cgroup/x/release_agent2"));
    }

    #[test]
    fn many_double_stars_against_a_long_path_are_quick() {
        // Linear work: this would take ages with a backtracking matcher.
        let pattern = PathPattern::new(&"/**/a".repeat(20));
        let path = "/a".repeat(19) + &"/b".repeat(200);
        assert!(!pattern.matches(&path));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn component() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("etc".to_owned()),
                Just("proc".to_owned()),
                Just("tmp".to_owned()),
                Just("shadow".to_owned()),
                Just("..".to_owned()),
                Just(".".to_owned()),
                Just("".to_owned()),
                "[0-9]{1,5}",
                "[a-f0-9-]{12,16}",
                "[a-z]{1,8}",
            ]
        }

        fn path() -> impl Strategy<Value = String> {
            prop::collection::vec(component(), 0..8).prop_map(|cs| format!("/{}", cs.join("/")))
        }

        proptest! {
            #[test]
            fn normalizing_is_idempotent_and_leaves_no_aliases(p in path()) {
                let n = normalize(&p).unwrap();
                prop_assert_eq!(normalize(&n).unwrap(), n.clone());
                prop_assert!(!n.contains("//"));
                prop_assert!(!n.split('/').any(|c| c == "." || c == ".."));
            }

            #[test]
            fn a_learned_entry_allows_what_was_seen(p in path()) {
                if let Some(learned) = learned_path(&p) {
                    let idx = FilesIndex::new([(learned.as_str(), Access::READ)], Arc::new(SensitivePaths::new::<&str>(&[])));
                    prop_assert!(idx.allows(&p, Access::READ), "{} learned as {}", p, learned);
                }
            }

            #[test]
            fn learning_other_paths_never_allows_a_sensitive_one(ps in prop::collection::vec(path(), 1..8)) {
                let sensitive = SensitivePaths::shared_default();
                let learned: Vec<String> = ps
                    .iter()
                    .filter(|p| normalize(p).is_some_and(|n| !sensitive.contains(&n)))
                    .filter_map(|p| learned_path(p))
                    .collect();
                let idx = FilesIndex::new(learned.iter().map(|l| (l.as_str(), Access::READ)), sensitive.clone());
                for target in ["/etc/shadow", "/proc/1/environ", "/root/.ssh/id_rsa", "/run/secrets/kubernetes.io/serviceaccount/token"] {
                    prop_assert!(!idx.allows(target, Access::READ), "{} allowed by {:?}", target, learned);
                }
            }

            #[test]
            fn a_star_never_spans_a_slash(a in "[a-z]{1,4}", b in "[a-z]{1,4}") {
                let pattern = PathPattern::new("/x/*");
                let two = format!("/x/{a}/{b}");
                prop_assert!(!pattern.matches(&two));
            }
        }
    }
}
