//! Behaviour sets: what a workload was seen doing, or is allowed to do.
//!
//! A [`BehaviorSet`] has five categories: processes, syscalls, egress peers, listening ports
//! and files. Every entry is a rule (what is allowed) plus [`Seen`] (when it was first and
//! last observed, and by how many distinct replicas). Learned and hand-written entries share
//! one set; a hand-written entry simply has no times.
//!
//! Each category is a sorted list without duplicate keys ([`Rules`]), so merging, diffing and
//! serialising are linear and deterministic. Lookups for matching events go through the
//! indexes in [`crate::matching`], built once per profile revision.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::net::{Cidr, Protocol};
use crate::pattern::ArgvPattern;
use crate::sketch::{EntryReplicas, ReplicaId};
use crate::time::{max_time, min_time, Timestamp};

/// The five kinds of behaviour a profile records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Category {
    /// Executables run, with argument pattern and user id.
    Processes,
    /// System calls made.
    Syscalls,
    /// Outgoing connections: peer, port, protocol.
    Egress,
    /// Ports listened on.
    Listen,
    /// File path prefixes and the access made under them.
    Files,
}

impl Category {
    /// All categories, in a fixed order.
    pub const ALL: [Category; 5] = [
        Category::Processes,
        Category::Syscalls,
        Category::Egress,
        Category::Listen,
        Category::Files,
    ];

    /// The name used in rule references, metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Processes => "processes",
            Category::Syscalls => "syscalls",
            Category::Egress => "egress",
            Category::Listen => "listen",
            Category::Files => "files",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kinds of file access, as a small bit set.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access(u8);

impl Access {
    /// No access.
    pub const NONE: Access = Access(0);
    /// Opening for reading.
    pub const READ: Access = Access(1);
    /// Opening an existing file for writing (or truncating it).
    pub const WRITE: Access = Access(2);
    /// Creating a file.
    pub const CREATE: Access = Access(4);
    /// Emptying an existing file on open (`O_TRUNC`): clearing a log, not appending to it.
    pub const TRUNCATE: Access = Access(8);
    const NAMES: [(Access, &'static str); 4] = [
        (Access::READ, "read"),
        (Access::WRITE, "write"),
        (Access::CREATE, "create"),
        (Access::TRUNCATE, "truncate"),
    ];

    /// Whether every kind in `other` is also in `self`.
    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no kind is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds in `self` that are not in `other`.
    pub fn minus(self, other: Access) -> Access {
        Access(self.0 & !other.0)
    }

    /// Names of the kinds set, in a fixed order: `read`, `write`, `create`, `truncate`.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(a, _)| self.contains(*a))
            .map(|(_, n)| n)
    }

    /// The access named `name` (`read`, `write`, `create` or `truncate`).
    pub fn from_name(name: &str) -> Option<Access> {
        Self::NAMES
            .into_iter()
            .find(|(_, n)| *n == name)
            .map(|(a, _)| a)
    }
}

impl std::ops::BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        Access(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Access {
    fn bitor_assign(&mut self, rhs: Access) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.names().collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join("+"))
        }
    }
}

impl Serialize for Access {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.names())
    }
}

impl<'de> Deserialize<'de> for Access {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        names.iter().try_fold(Access::NONE, |acc, n| {
            Access::from_name(n).map(|a| acc | a).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown file access {n:?}: use read, write or create"
                ))
            })
        })
    }
}

/// What every rule type provides so that [`Rules`] can merge, diff and bound it.
pub trait Rule: Clone + fmt::Debug + fmt::Display + PartialEq {
    /// The identity of an entry: two entries with equal keys are one entry.
    type Key: Ord + Clone + fmt::Debug;
    /// The category this rule belongs to.
    const CATEGORY: Category;
    /// The identity of this entry.
    fn key(&self) -> &Self::Key;
    /// Widens `self` by what `other` (same key) allows; returns whether `self` grew.
    fn widen(&mut self, _other: &Self) -> bool {
        false
    }
    /// What `self` allows that `other` (same key) does not, if anything.
    fn minus(&self, _other: &Self) -> Option<Self> {
        None
    }
    /// Rough number of bytes this rule takes when serialised as JSON in an object.
    fn estimated_size(&self) -> usize;
}

/// A process rule: an executable, optionally restricted to an argument pattern and a user id.
/// Learned entries carry the exact executable and uid, and no argument pattern except for a
/// multi-call binary (busybox, or its re-execution as `/proc/self/exe`), whose pattern pins
/// the arguments that choose the applet (see [`crate::policy::applet_pattern`]): one entry
/// per applet. A hand-written one may narrow with `argv` or widen with a glob in `exe` or no
/// `uid` (any user). Entries that differ only in `argv` are distinct entries; an executable
/// is allowed when any of its entries allows the run.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessRule {
    /// Absolute path of the executable, or a glob over it.
    pub exe: String,
    /// Argument pattern; `None` allows any arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<ArgvPattern>,
    /// Real user id; `None` allows any user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}

impl Rule for ProcessRule {
    type Key = ProcessRule;
    const CATEGORY: Category = Category::Processes;
    fn key(&self) -> &Self::Key {
        self
    }
    fn estimated_size(&self) -> usize {
        20 + self.exe.len()
            + self
                .argv
                .as_ref()
                .map_or(0, |a| 12 + a.0.iter().map(|t| t.len() + 3).sum::<usize>())
            + 12
    }
}

impl fmt::Display for ProcessRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.exe)?;
        if let Some(argv) = &self.argv {
            write!(f, " [{argv}]")?;
        }
        match self.uid {
            Some(uid) => write!(f, " as uid {uid}"),
            None => Ok(()),
        }
    }
}

/// A system call, by its name on the node's architecture (e.g. `openat`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SyscallRule {
    /// Syscall name.
    pub name: String,
}

impl Rule for SyscallRule {
    type Key = String;
    const CATEGORY: Category = Category::Syscalls;
    fn key(&self) -> &String {
        &self.name
    }
    fn estimated_size(&self) -> usize {
        12 + self.name.len()
    }
}

impl fmt::Display for SyscallRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// An allowed outgoing connection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Peer network; learned entries name one address.
    pub peer: Cidr,
    /// Destination port; `None` allows any port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Transport protocol.
    #[serde(default)]
    pub protocol: Protocol,
}

impl Rule for EgressRule {
    type Key = EgressRule;
    const CATEGORY: Category = Category::Egress;
    fn key(&self) -> &Self::Key {
        self
    }
    fn estimated_size(&self) -> usize {
        60
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) if self.peer.addr().is_ipv6() => {
                write!(f, "[{}]:{port}/{}", self.peer, self.protocol)
            }
            Some(port) => write!(f, "{}:{port}/{}", self.peer, self.protocol),
            None => write!(f, "{}:*/{}", self.peer, self.protocol),
        }
    }
}

/// A port the workload listens on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenRule {
    /// Local port.
    pub port: u16,
    /// Transport protocol.
    #[serde(default)]
    pub protocol: Protocol,
}

impl Rule for ListenRule {
    type Key = ListenRule;
    const CATEGORY: Category = Category::Listen;
    fn key(&self) -> &Self::Key {
        self
    }
    fn estimated_size(&self) -> usize {
        35
    }
}

impl fmt::Display for ListenRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// File access allowed for a path pattern ([`crate::files`]): literal components, `*` for
/// exactly one component (a generated name), and a last component `**` for a subtree (the
/// directory and everything below it, by whole components: `/etc/nginx/**` covers
/// `/etc/nginx/nginx.conf`, not `/etc/nginx2`). Learning writes literal paths and `*`
/// only; subtrees are hand-written (the CRD's `prefix`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRule {
    /// The path pattern, without a trailing `/` (except for `/` itself).
    #[serde(alias = "prefix")]
    pub path: String,
    /// The kinds of access allowed.
    pub access: Access,
}

impl FileRule {
    /// A rule for the path (or pattern) `path` alone, with `access`.
    pub fn path(path: &str, access: Access) -> Self {
        Self {
            path: normalize_prefix(path),
            access,
        }
    }

    /// A rule for the directory `dir` and everything below it, with `access`.
    pub fn below(dir: &str, access: Access) -> Self {
        let dir = normalize_prefix(dir);
        let path = if dir == "/" {
            "/**".to_owned()
        } else {
            format!("{dir}/**")
        };
        Self { path, access }
    }

    /// The directory whose subtree this rule covers, when it is a subtree rule.
    pub fn subtree(&self) -> Option<&str> {
        if self.path == "/**" {
            return Some("/");
        }
        self.path.strip_suffix("/**")
    }
}

/// Removes trailing slashes so that `/etc/` and `/etc` are one path.
pub fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

impl Rule for FileRule {
    type Key = String;
    const CATEGORY: Category = Category::Files;
    fn key(&self) -> &String {
        &self.path
    }
    fn widen(&mut self, other: &Self) -> bool {
        let before = self.access;
        self.access |= other.access;
        self.access != before
    }
    fn minus(&self, other: &Self) -> Option<Self> {
        let extra = self.access.minus(other.access);
        (!extra.is_empty()).then(|| FileRule {
            path: self.path.clone(),
            access: extra,
        })
    }
    fn estimated_size(&self) -> usize {
        36 + self.path.len()
    }
}

impl fmt::Display for FileRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path, self.access)
    }
}

/// When an entry was observed and by how many replicas. All empty for hand-written entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    /// First observation, anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<Timestamp>,
    /// Latest observation, anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    /// The replicas that showed it (bounded).
    #[serde(default, skip_serializing_if = "EntryReplicas::is_empty")]
    pub replicas: EntryReplicas,
}

impl Seen {
    /// Seen once, at `at`, by `replica`.
    pub fn once(at: Timestamp, replica: ReplicaId) -> Self {
        Self {
            first_seen: Some(at),
            last_seen: Some(at),
            replicas: EntryReplicas::from_ids([replica]),
        }
    }

    /// Folds `other` in: earliest first sighting, latest last sighting, union of replicas.
    /// Returns whether anything changed.
    pub fn merge(&mut self, other: &Seen) -> bool {
        let before = (self.first_seen, self.last_seen);
        self.first_seen = min_time(self.first_seen, other.first_seen);
        self.last_seen = max_time(self.last_seen, other.last_seen);
        let replicas_changed = self.replicas.merge(&other.replicas);
        replicas_changed || before != (self.first_seen, self.last_seen)
    }

    /// Distinct replicas that showed this entry.
    pub fn seen_replicas(&self) -> u32 {
        self.replicas.count()
    }
}

/// One entry of a category: the rule and its sightings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry<R> {
    /// What is allowed.
    #[serde(flatten)]
    pub rule: R,
    /// When and by whom it was seen.
    #[serde(flatten)]
    pub seen: Seen,
}

impl<R> Entry<R> {
    /// An entry with no sightings (hand-written).
    pub fn manual(rule: R) -> Self {
        Self {
            rule,
            seen: Seen::default(),
        }
    }
}

/// What merging one entry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merged {
    /// A new key.
    Added,
    /// An existing key now allows more (e.g. write access where only read was seen).
    Widened,
    /// Only times or replicas changed.
    Refreshed,
    /// Nothing changed.
    Unchanged,
    /// A new key that did not fit under the category's limit.
    Dropped,
}

/// The entries of one category: sorted by key, keys distinct.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules<R: Rule> {
    entries: Vec<Entry<R>>,
}

impl<R: Rule> Default for Rules<R> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<R: Rule> Rules<R> {
    /// An empty category.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a category from entries in any order; entries with equal keys are merged.
    pub fn from_entries(entries: impl IntoIterator<Item = Entry<R>>) -> Self {
        let mut rules = Self::new();
        for e in entries {
            rules.merge_entry(&e, usize::MAX);
        }
        rules
    }

    /// The entries, sorted by key.
    pub fn entries(&self) -> &[Entry<R>] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry with this key.
    pub fn get(&self, key: &R::Key) -> Option<&Entry<R>> {
        self.find(key).ok().map(|i| &self.entries[i])
    }

    fn find(&self, key: &R::Key) -> std::result::Result<usize, usize> {
        self.entries.binary_search_by(|e| e.rule.key().cmp(key))
    }

    /// Merges one entry; a new key is only added while the category holds fewer than `limit`.
    pub fn merge_entry(&mut self, entry: &Entry<R>, limit: usize) -> Merged {
        match self.find(entry.rule.key()) {
            Ok(i) => {
                let existing = &mut self.entries[i];
                let widened = existing.rule.widen(&entry.rule);
                let refreshed = existing.seen.merge(&entry.seen);
                if widened {
                    Merged::Widened
                } else if refreshed {
                    Merged::Refreshed
                } else {
                    Merged::Unchanged
                }
            }
            Err(_) if self.entries.len() >= limit => Merged::Dropped,
            Err(pos) => {
                self.entries.insert(pos, entry.clone());
                Merged::Added
            }
        }
    }

    /// Removes the entry with this key.
    pub fn remove(&mut self, key: &R::Key) -> Option<Entry<R>> {
        self.find(key).ok().map(|i| self.entries.remove(i))
    }

    /// Rules in `self` that `other` lacks, or allows less of.
    pub fn minus(&self, other: &Rules<R>) -> Vec<R> {
        self.entries
            .iter()
            .filter_map(|e| match other.get(e.rule.key()) {
                None => Some(e.rule.clone()),
                Some(o) => e.rule.minus(&o.rule),
            })
            .collect()
    }

    fn estimated_size(&self) -> usize {
        // Per entry: the rule, two RFC 3339 times with their keys, the replica sketch and
        // count, braces and commas.
        self.entries
            .iter()
            .map(|e| e.rule.estimated_size() + 70 + e.seen.replicas.ids().len() * 4 + 20)
            .sum()
    }
}

impl<R: Rule + Serialize> Serialize for Rules<R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.entries.serialize(s)
    }
}

impl<'de, R: Rule + Deserialize<'de>> Deserialize<'de> for Rules<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Rules::from_entries(Vec::<Entry<R>>::deserialize(d)?))
    }
}

/// Maximum entries per category. Over the limit, new entries are dropped and counted, and the
/// profile gets a condition; nothing grows without bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Processes.
    pub processes: usize,
    /// Syscalls (Linux has fewer than 512).
    pub syscalls: usize,
    /// Egress peers.
    pub egress: usize,
    /// Listening ports.
    pub listen: usize,
    /// File prefixes.
    pub files: usize,
}

impl Limits {
    /// Defaults sized so that a full profile stays under about 400 kB of JSON, far below the
    /// API server's 1.5 MB object limit even with history and image sections.
    pub const DEFAULT: Limits = Limits {
        processes: 256,
        syscalls: 512,
        egress: 256,
        listen: 64,
        files: 512,
    };
    /// The largest limits the CRD schema accepts (see the `maxItems` of the lists).
    pub const MAX: Limits = Limits {
        processes: 1024,
        syscalls: 512,
        egress: 1024,
        listen: 256,
        files: 1024,
    };

    /// Nothing may be added.
    pub const NONE: Limits = Limits {
        processes: 0,
        syscalls: 0,
        egress: 0,
        listen: 0,
        files: 0,
    };

    /// The limit of one category.
    pub fn of(&self, category: Category) -> usize {
        match category {
            Category::Processes => self.processes,
            Category::Syscalls => self.syscalls,
            Category::Egress => self.egress,
            Category::Listen => self.listen,
            Category::Files => self.files,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A value per category, e.g. counts of dropped entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PerCategory<T> {
    /// Processes.
    pub processes: T,
    /// Syscalls.
    pub syscalls: T,
    /// Egress.
    pub egress: T,
    /// Listen.
    pub listen: T,
    /// Files.
    pub files: T,
}

impl<T> PerCategory<T> {
    /// The value of one category.
    pub fn get(&self, c: Category) -> &T {
        match c {
            Category::Processes => &self.processes,
            Category::Syscalls => &self.syscalls,
            Category::Egress => &self.egress,
            Category::Listen => &self.listen,
            Category::Files => &self.files,
        }
    }

    /// The value of one category, mutably.
    pub fn get_mut(&mut self, c: Category) -> &mut T {
        match c {
            Category::Processes => &mut self.processes,
            Category::Syscalls => &mut self.syscalls,
            Category::Egress => &mut self.egress,
            Category::Listen => &mut self.listen,
            Category::Files => &mut self.files,
        }
    }
}

impl PerCategory<u64> {
    /// Sum over categories.
    pub fn total(&self) -> u64 {
        Category::ALL.iter().map(|c| *self.get(*c)).sum()
    }
}

/// Everything a workload does, or may do.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BehaviorSet {
    /// Executables.
    #[serde(default)]
    pub processes: Rules<ProcessRule>,
    /// System calls.
    #[serde(default)]
    pub syscalls: Rules<SyscallRule>,
    /// Outgoing connections.
    #[serde(default)]
    pub egress: Rules<EgressRule>,
    /// Listening ports.
    #[serde(default)]
    pub listen: Rules<ListenRule>,
    /// File prefixes.
    #[serde(default)]
    pub files: Rules<FileRule>,
}

/// Rules per category: what a merge added, or one side of a diff.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    /// Processes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessRule>,
    /// Syscalls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub syscalls: Vec<SyscallRule>,
    /// Egress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
    /// Listen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<ListenRule>,
    /// Files (with the access that is new).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileRule>,
    /// Rules left out of the lists above to keep them bounded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub truncated: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.truncated == 0
    }

    /// Rules listed (not counting truncated ones).
    pub fn len(&self) -> usize {
        self.processes.len()
            + self.syscalls.len()
            + self.egress.len()
            + self.listen.len()
            + self.files.len()
    }

    /// Rules changed, listed or not.
    pub fn total(&self) -> u64 {
        self.len() as u64 + self.truncated
    }

    /// Appends `other`, keeping at most `max_listed` rules listed and counting the rest.
    pub fn extend_bounded(&mut self, other: Changes, max_listed: usize) {
        fn push<T>(dst: &mut Vec<T>, src: Vec<T>, room: &mut usize, truncated: &mut u64) {
            for item in src {
                if *room > 0 {
                    dst.push(item);
                    *room -= 1;
                } else {
                    *truncated += 1;
                }
            }
        }
        let mut room = max_listed.saturating_sub(self.len());
        let mut truncated = self.truncated + other.truncated;
        push(
            &mut self.processes,
            other.processes,
            &mut room,
            &mut truncated,
        );
        push(
            &mut self.syscalls,
            other.syscalls,
            &mut room,
            &mut truncated,
        );
        push(&mut self.egress, other.egress, &mut room, &mut truncated);
        push(&mut self.listen, other.listen, &mut room, &mut truncated);
        push(&mut self.files, other.files, &mut room, &mut truncated);
        self.truncated = truncated;
    }

    /// One-line summary, e.g. `+2 processes, +1 files`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = [
            (self.processes.len(), Category::Processes),
            (self.syscalls.len(), Category::Syscalls),
            (self.egress.len(), Category::Egress),
            (self.listen.len(), Category::Listen),
            (self.files.len(), Category::Files),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, c)| format!("{n} {c}"))
        .collect();
        let mut s = parts.join(", ");
        if self.truncated > 0 {
            s.push_str(&format!(" (+{} more)", self.truncated));
        }
        if s.is_empty() {
            s.push_str("nothing");
        }
        s
    }

    fn estimated_size(&self) -> usize {
        self.processes
            .iter()
            .map(Rule::estimated_size)
            .sum::<usize>()
            + self
                .syscalls
                .iter()
                .map(Rule::estimated_size)
                .sum::<usize>()
            + self.egress.iter().map(Rule::estimated_size).sum::<usize>()
            + self.listen.iter().map(Rule::estimated_size).sum::<usize>()
            + self.files.iter().map(Rule::estimated_size).sum::<usize>()
            + 80
    }
}

/// What one revision of a behaviour set has that another lacks, both ways.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BehaviorDiff {
    /// In the newer set only (or allowing more there).
    pub added: Changes,
    /// In the older set only (or allowing more there).
    pub removed: Changes,
}

impl BehaviorDiff {
    /// Whether the two sets allow the same.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// What merging a set into another did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// New or widened rules (all of them; callers bound what they keep).
    pub added: Changes,
    /// Entries whose times or replicas changed.
    pub refreshed: u64,
    /// New entries refused by the limits, per category.
    pub dropped: PerCategory<u64>,
}

impl MergeReport {
    /// Whether the merge changed anything at all.
    pub fn changed(&self) -> bool {
        !self.added.is_empty() || self.refreshed > 0
    }
}

fn merge_category<R: Rule>(
    into: &mut Rules<R>,
    from: &Rules<R>,
    limit: usize,
    added: &mut Vec<R>,
    refreshed: &mut u64,
    dropped: &mut u64,
) {
    for e in from.entries() {
        match into.merge_entry(e, limit) {
            Merged::Added | Merged::Widened => added.push(e.rule.clone()),
            Merged::Refreshed => *refreshed += 1,
            Merged::Unchanged => {}
            Merged::Dropped => *dropped += 1,
        }
    }
}

impl BehaviorSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries in all categories.
    pub fn len(&self) -> usize {
        self.processes.len()
            + self.syscalls.len()
            + self.egress.len()
            + self.listen.len()
            + self.files.len()
    }

    /// Whether no category has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries in one category.
    pub fn count(&self, c: Category) -> usize {
        match c {
            Category::Processes => self.processes.len(),
            Category::Syscalls => self.syscalls.len(),
            Category::Egress => self.egress.len(),
            Category::Listen => self.listen.len(),
            Category::Files => self.files.len(),
        }
    }

    /// The entries first seen at or before `t` (a hand-written entry, never seen, is not).
    pub fn seen_by(&self, t: Timestamp) -> BehaviorSet {
        fn keep<R: Rule + Clone>(rules: &Rules<R>, t: Timestamp) -> Rules<R> {
            Rules::from_entries(
                rules
                    .entries()
                    .iter()
                    .filter(|e| e.seen.first_seen.is_some_and(|f| f <= t))
                    .cloned(),
            )
        }
        BehaviorSet {
            processes: keep(&self.processes, t),
            syscalls: keep(&self.syscalls, t),
            egress: keep(&self.egress, t),
            listen: keep(&self.listen, t),
            files: keep(&self.files, t),
        }
    }

    /// Folds `other` into `self` within `limits`. Merging is commutative, associative and
    /// idempotent on the entries that fit, so deltas may arrive in any order, and twice.
    pub fn merge(&mut self, other: &BehaviorSet, limits: &Limits) -> MergeReport {
        let mut r = MergeReport::default();
        let d = &mut r.dropped;
        merge_category(
            &mut self.processes,
            &other.processes,
            limits.processes,
            &mut r.added.processes,
            &mut r.refreshed,
            &mut d.processes,
        );
        merge_category(
            &mut self.syscalls,
            &other.syscalls,
            limits.syscalls,
            &mut r.added.syscalls,
            &mut r.refreshed,
            &mut d.syscalls,
        );
        merge_category(
            &mut self.egress,
            &other.egress,
            limits.egress,
            &mut r.added.egress,
            &mut r.refreshed,
            &mut d.egress,
        );
        merge_category(
            &mut self.listen,
            &other.listen,
            limits.listen,
            &mut r.added.listen,
            &mut r.refreshed,
            &mut d.listen,
        );
        merge_category(
            &mut self.files,
            &other.files,
            limits.files,
            &mut r.added.files,
            &mut r.refreshed,
            &mut d.files,
        );
        r
    }

    /// What `newer` allows that `self` does not (added), and the reverse (removed).
    pub fn diff(&self, newer: &BehaviorSet) -> BehaviorDiff {
        BehaviorDiff {
            added: minus_all(newer, self),
            removed: minus_all(self, newer),
        }
    }

    /// Categories holding more entries than `limits` allow (e.g. after a user lowered them).
    pub fn over_limits(&self, limits: &Limits) -> Vec<Category> {
        Category::ALL
            .into_iter()
            .filter(|c| self.count(*c) > limits.of(*c))
            .collect()
    }

    /// Rough size in bytes of this set serialised as JSON in a Kubernetes object. It errs on
    /// the large side; a test checks it against the real serialised size.
    pub fn estimated_size(&self) -> usize {
        self.processes.estimated_size()
            + self.syscalls.estimated_size()
            + self.egress.estimated_size()
            + self.listen.estimated_size()
            + self.files.estimated_size()
            + 120
    }
}

fn minus_all(a: &BehaviorSet, b: &BehaviorSet) -> Changes {
    Changes {
        processes: a.processes.minus(&b.processes),
        syscalls: a.syscalls.minus(&b.syscalls),
        egress: a.egress.minus(&b.egress),
        listen: a.listen.minus(&b.listen),
        files: a.files.minus(&b.files),
        truncated: 0,
    }
}

/// Estimated serialised size of a list of changes (used to bound revision history).
pub fn changes_estimated_size(c: &Changes) -> usize {
    c.estimated_size()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::ReplicaId;

    fn t(s: i64) -> Timestamp {
        Timestamp(s)
    }

    fn proc_entry(exe: &str, uid: u32, at: i64, pod: &str) -> Entry<ProcessRule> {
        Entry {
            rule: ProcessRule {
                exe: exe.into(),
                argv: None,
                uid: Some(uid),
            },
            seen: Seen::once(t(at), ReplicaId::from_pod_uid(pod)),
        }
    }

    #[test]
    fn merge_keeps_first_last_and_distinct_replicas() {
        let mut a = BehaviorSet::new();
        a.processes.merge_entry(
            &proc_entry("/usr/sbin/nginx", 101, 100, "pod-a"),
            usize::MAX,
        );
        let mut b = BehaviorSet::new();
        b.processes
            .merge_entry(&proc_entry("/usr/sbin/nginx", 101, 50, "pod-b"), usize::MAX);
        b.processes.merge_entry(
            &proc_entry("/usr/sbin/nginx", 101, 300, "pod-a"),
            usize::MAX,
        );

        let report = a.merge(&b, &Limits::DEFAULT);
        assert!(report.added.is_empty(), "same key is not new");
        assert_eq!(report.refreshed, 1);
        let e = &a.processes.entries()[0];
        assert_eq!(e.seen.first_seen, Some(t(50)));
        assert_eq!(e.seen.last_seen, Some(t(300)));
        assert_eq!(e.seen.seen_replicas(), 2);

        let again = a.merge(&b, &Limits::DEFAULT);
        assert!(
            !again.changed(),
            "merging the same delta twice changes nothing"
        );
    }

    #[test]
    fn merge_order_does_not_matter() {
        let mut x = BehaviorSet::new();
        x.processes
            .merge_entry(&proc_entry("/bin/a", 0, 10, "p1"), usize::MAX);
        x.syscalls.merge_entry(
            &Entry {
                rule: SyscallRule {
                    name: "read".into(),
                },
                seen: Seen::once(t(5), ReplicaId(1)),
            },
            usize::MAX,
        );
        let mut y = BehaviorSet::new();
        y.processes
            .merge_entry(&proc_entry("/bin/a", 0, 20, "p2"), usize::MAX);
        y.files.merge_entry(
            &Entry {
                rule: FileRule::path("/etc/", Access::READ),
                seen: Seen::once(t(7), ReplicaId(2)),
            },
            usize::MAX,
        );

        let mut xy = x.clone();
        xy.merge(&y, &Limits::DEFAULT);
        let mut yx = y.clone();
        yx.merge(&x, &Limits::DEFAULT);
        assert_eq!(xy, yx);
    }

    #[test]
    fn widening_file_access_counts_as_added() {
        let mut set = BehaviorSet::new();
        set.files.merge_entry(
            &Entry::manual(FileRule::path("/var/log", Access::READ)),
            usize::MAX,
        );
        let mut delta = BehaviorSet::new();
        delta.files.merge_entry(
            &Entry::manual(FileRule::path("/var/log/", Access::WRITE)),
            usize::MAX,
        );
        let r = set.merge(&delta, &Limits::DEFAULT);
        assert_eq!(
            r.added.files,
            vec![FileRule::path("/var/log", Access::WRITE)]
        );
        assert_eq!(
            set.files.entries()[0].rule.access,
            Access::READ | Access::WRITE
        );
    }

    #[test]
    fn limits_drop_and_count_instead_of_growing() {
        let limits = Limits {
            syscalls: 3,
            ..Limits::DEFAULT
        };
        let mut set = BehaviorSet::new();
        let mut delta = BehaviorSet::new();
        for name in ["read", "write", "openat", "close", "mmap"] {
            delta.syscalls.merge_entry(
                &Entry::manual(SyscallRule { name: name.into() }),
                usize::MAX,
            );
        }
        let r = set.merge(&delta, &limits);
        assert_eq!(set.syscalls.len(), 3);
        assert_eq!(r.dropped.syscalls, 2);
        assert_eq!(r.dropped.total(), 2);
        // Known entries still refresh while the category is full.
        let mut again = BehaviorSet::new();
        again.syscalls.merge_entry(
            &Entry {
                rule: SyscallRule {
                    name: "close".into(),
                },
                seen: Seen::once(t(9), ReplicaId(3)),
            },
            usize::MAX,
        );
        let r = set.merge(&again, &limits);
        assert_eq!(r.refreshed, 1);
        assert_eq!(
            set.over_limits(&Limits {
                syscalls: 2,
                ..limits
            }),
            vec![Category::Syscalls]
        );
    }

    #[test]
    fn diff_reports_both_directions() {
        let mut old = BehaviorSet::new();
        old.processes
            .merge_entry(&proc_entry("/bin/app", 1000, 1, "p"), usize::MAX);
        old.listen.merge_entry(
            &Entry::manual(ListenRule {
                port: 8080,
                protocol: Protocol::Tcp,
            }),
            usize::MAX,
        );
        old.files.merge_entry(
            &Entry::manual(FileRule::path("/data", Access::READ | Access::WRITE)),
            usize::MAX,
        );
        let mut new = old.clone();
        new.processes
            .merge_entry(&proc_entry("/bin/app", 0, 2, "p"), usize::MAX);
        new.listen.remove(&ListenRule {
            port: 8080,
            protocol: Protocol::Tcp,
        });
        new.files = Rules::from_entries([Entry::manual(FileRule::path(
            "/data",
            Access::READ | Access::CREATE,
        ))]);

        let d = old.diff(&new);
        assert_eq!(
            d.added.processes,
            vec![ProcessRule {
                exe: "/bin/app".into(),
                argv: None,
                uid: Some(0)
            }]
        );
        assert_eq!(d.added.files, vec![FileRule::path("/data", Access::CREATE)]);
        assert_eq!(
            d.removed.listen,
            vec![ListenRule {
                port: 8080,
                protocol: Protocol::Tcp
            }]
        );
        assert_eq!(
            d.removed.files,
            vec![FileRule::path("/data", Access::WRITE)]
        );
        assert!(old.diff(&old).is_empty());
    }

    #[test]
    fn changes_stay_bounded() {
        let mut c = Changes::default();
        let more = Changes {
            syscalls: (0..10)
                .map(|i| SyscallRule {
                    name: format!("s{i}"),
                })
                .collect(),
            ..Changes::default()
        };
        c.extend_bounded(more.clone(), 4);
        c.extend_bounded(more, 4);
        assert_eq!(c.len(), 4);
        assert_eq!(c.truncated, 16);
        assert_eq!(c.total(), 20);
        assert_eq!(c.summary(), "4 syscalls (+16 more)");
    }

    #[test]
    fn serialises_as_lists_and_reads_back_normalised() {
        let mut set = BehaviorSet::new();
        set.processes
            .merge_entry(&proc_entry("/bin/sh", 0, 42, "p"), usize::MAX);
        set.egress.merge_entry(
            &Entry::manual(EgressRule {
                peer: "10.0.0.0/8".parse().unwrap(),
                port: Some(443),
                protocol: Protocol::Tcp,
            }),
            usize::MAX,
        );
        set.files.merge_entry(
            &Entry::manual(FileRule::path("/tmp", Access::READ | Access::CREATE)),
            usize::MAX,
        );
        let json = serde_json::to_string(&set).unwrap();
        assert!(json.contains(r#""exe":"/bin/sh""#), "{json}");
        assert!(json.contains(r#""peer":"10.0.0.0/8""#), "{json}");
        assert!(json.contains(r#""access":["read","create"]"#), "{json}");
        let back: BehaviorSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);

        // Duplicate keys written by hand are merged on read.
        let dup = r#"{"syscalls":[{"name":"read"},{"name":"read","firstSeen":5}]}"#;
        let set: BehaviorSet = serde_json::from_str(dup).unwrap();
        assert_eq!(set.syscalls.len(), 1);
        assert_eq!(set.syscalls.entries()[0].seen.first_seen, Some(t(5)));
        assert!(serde_json::from_str::<BehaviorSet>(
            r#"{"files":[{"prefix":"/x","access":["exec"]}]}"#
        )
        .is_err());
    }
}
