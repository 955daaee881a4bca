//! Keeping the programs and their maps in the kernel while no agent runs.
//!
//! A loaded program lives only as long as something holds it: without pins, an agent that
//! crashes, is OOM-killed or is upgraded takes every hook and every in-kernel kill with it,
//! and the node is unguarded until the next agent has loaded and synced. So each map and
//! each program's link is pinned in the BPF filesystem, under
//! `<root>/<object id>/maps/<MAP>` and `<root>/<object id>/links/<program>`:
//!
//! - the object id names the eBPF object and the map sizes it was loaded with, so an agent
//!   adopts only a set it could have loaded itself, byte for byte;
//! - the links are pinned last, so a set whose links are all there is complete; a partial
//!   set (an agent killed while pinning) is removed and loaded afresh;
//! - a set of another id (the agent before an upgrade) keeps running until the new agent
//!   has written its own rules, then it is removed ([`PinSet::remove`]), which detaches it.
//!
//! Pins do not survive a reboot: the BPF filesystem is in memory, and a fresh boot starts
//! from nothing, as it should.

use std::io;
use std::path::{Path, PathBuf};

use herdwatch_abi::{
    EMITTED_MAP, ENFORCE_MAP, EXE_RULES_MAP, FILE_SEEN_MAP, NET_SEEN_MAP, SYSCALL_SEEN_MAP,
};

use super::CaptureConfig;

/// Where the chart's agents pin by default.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/herdwatch";

/// `f_type` of a BPF filesystem (linux/magic.h).
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// Whether `path` is on a BPF filesystem; `Ok(false)` when it is on another one.
pub fn on_bpffs(path: &Path) -> io::Result<bool> {
    let stat = rustix::fs::statfs(path)?;
    // The field's integer type differs between architectures.
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    let f_type = stat.f_type as u64;
    Ok(f_type == BPF_FS_MAGIC)
}

/// Mounts a BPF filesystem on `path` unless one is there; says which it did. With
/// `mount_namespace` (the host's: `/proc/1/ns/mnt` of a pod with hostPID), the mount is
/// made there: the agent's init container runs this for the host's /sys/fs/bpf, which a
/// freshly booted node may not have mounted. Entering a mount namespace needs a process
/// with one thread: call this before any runtime starts threads.
pub fn ensure_bpffs_in(mount_namespace: Option<&Path>, path: &Path) -> io::Result<bool> {
    if let Some(namespace) = mount_namespace {
        // `parent`: the namespace of whoever started this process, the container
        // runtime's shim, which runs in the host's (the host's pid 1 may not be readable).
        let namespace = if namespace == Path::new("parent") {
            PathBuf::from(format!(
                "/proc/{}/ns/mnt",
                std::os::unix::process::parent_id()
            ))
        } else {
            namespace.to_path_buf()
        };
        let fd = std::fs::File::open(&namespace)?;
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&fd),
            Some(rustix::thread::LinkNameSpaceType::Mount),
        )?;
    }
    ensure_bpffs(path)
}

/// Mounts a BPF filesystem on `path` unless one is there; says which it did.
pub fn ensure_bpffs(path: &Path) -> io::Result<bool> {
    if on_bpffs(path)? {
        return Ok(false);
    }
    rustix::mount::mount(
        "bpf",
        path,
        "bpf",
        rustix::mount::MountFlags::NOSUID
            | rustix::mount::MountFlags::NODEV
            | rustix::mount::MountFlags::NOEXEC,
        Some(c"mode=0700"),
    )?;
    Ok(true)
}

/// A 64-bit FNV-1a hash: stable across builds and Rust versions, which the object id must
/// be (std's hasher is not promised to be).
fn fnv1a(bytes: impl IntoIterator<Item = u8>, mut hash: u64) -> u64 {
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The id of a set loaded from `object` with `config`.
pub fn object_id(object: &[u8], config: &CaptureConfig) -> String {
    let mut hash = fnv1a(object.iter().copied(), 0xcbf2_9ce4_8422_2325);
    for size in [
        config.ring_buffer_bytes,
        config.cgroup_entries,
        config.file_entries,
        config.net_entries,
        config.enforced_cgroups,
        config.exe_rules,
    ] {
        hash = fnv1a(size.to_le_bytes(), hash);
    }
    format!("{hash:016x}")
}

/// The maps an adopting agent opens by name, besides the ring buffer and the counters: the
/// rest (scratch space, the programs' private tables) is pinned too, but only the programs
/// use it.
pub const ADOPTED_MAPS: [&str; 6] = [
    EMITTED_MAP,
    ENFORCE_MAP,
    EXE_RULES_MAP,
    SYSCALL_SEEN_MAP,
    FILE_SEEN_MAP,
    NET_SEEN_MAP,
];

/// One pinned set: the maps and links of one object id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinSet {
    dir: PathBuf,
}

impl PinSet {
    pub fn new(root: &Path, id: &str) -> PinSet {
        PinSet { dir: root.join(id) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    pub fn link(&self, program: &str) -> PathBuf {
        self.dir.join("links").join(program)
    }

    /// Whether every one of `programs` has its link pinned (they are pinned last).
    pub fn is_complete(&self, programs: &[&str]) -> bool {
        self.dir.is_dir() && programs.iter().all(|p| self.link(p).exists())
    }

    /// Creates the set's directories (the root included).
    pub fn create_dirs(&self) -> io::Result<()> {
        std::fs::create_dir_all(self.dir.join("maps"))?;
        std::fs::create_dir_all(self.dir.join("links"))
    }

    /// Removes the set's pins, links first: once the last reference to a link goes, its
    /// program is detached; the maps go with the last program that uses them. Absent
    /// already is fine.
    pub fn remove(&self) -> io::Result<()> {
        for sub in ["links", "maps"] {
            let dir = self.dir.join(sub);
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                remove_absent_ok(&entry?.path(), |p| std::fs::remove_file(p))?;
            }
            remove_absent_ok(&dir, |p| std::fs::remove_dir(p))?;
        }
        remove_absent_ok(&self.dir, |p| std::fs::remove_dir(p))
    }

    /// The sets under `root` other than `own`: those of earlier agents.
    pub fn others(root: &Path, own: &PinSet) -> io::Result<Vec<PinSet>> {
        let mut sets = PinSet::all(root)?;
        sets.retain(|set| set != own);
        Ok(sets)
    }

    /// Every set under `root`, in order of their ids.
    pub fn all(root: &Path) -> io::Result<Vec<PinSet>> {
        let entries = match std::fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut sets = Vec::new();
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                sets.push(PinSet { dir: entry.path() });
            }
        }
        sets.sort_by(|a, b| a.dir.cmp(&b.dir));
        Ok(sets)
    }
}

/// What the kernel ran while no agent did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapKernel {
    /// The pinned programs of this very build: they went on capturing into the ring
    /// buffer and killing at exec, and this agent adopted them.
    Adopted,
    /// An earlier build's pinned programs (an upgrade): they went on killing at exec, but
    /// what they captured is not read by this agent.
    Earlier,
    /// Nothing was pinned.
    None,
}

impl GapKernel {
    pub fn label(self) -> &'static str {
        match self {
            GapKernel::Adopted => "adopted",
            GapKernel::Earlier => "earlier",
            GapKernel::None => "none",
        }
    }
}

/// A time this node went without a running agent, from the state the earlier agent left
/// with its maps ([`herdwatch_abi::AgentState`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentGap {
    /// The earlier agent's last sign of life (its last heartbeat, or its stop), Unix ns.
    pub from_ns: u64,
    /// When this agent took over, Unix ns.
    pub to_ns: u64,
    pub kernel: GapKernel,
}

impl AgentGap {
    /// The gap before `now_ns`, if an earlier agent left a heartbeat or a stop time.
    pub fn since(
        heartbeat_ns: u64,
        stopped_ns: u64,
        now_ns: u64,
        kernel: GapKernel,
    ) -> Option<Self> {
        let from_ns = heartbeat_ns.max(stopped_ns);
        (from_ns > 0).then_some(AgentGap {
            from_ns,
            to_ns: now_ns.max(from_ns),
            kernel,
        })
    }

    pub fn seconds(&self) -> f64 {
        (self.to_ns - self.from_ns) as f64 / 1e9
    }
}

/// Removes every set under `root`, and `root` itself; returns how many sets there were.
pub fn remove_all(root: &Path) -> io::Result<usize> {
    let sets = PinSet::all(root)?;
    for set in &sets {
        set.remove()?;
    }
    remove_absent_ok(root, |p| std::fs::remove_dir(p))?;
    Ok(sets.len())
}

fn remove_absent_ok(path: &Path, remove: impl Fn(&Path) -> io::Result<()>) -> io::Result<()> {
    match remove(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_runs_from_the_earlier_agents_last_sign_of_life() {
        let gap = AgentGap::since(
            10_000_000_000,
            12_000_000_000,
            15_000_000_000,
            GapKernel::Adopted,
        )
        .unwrap();
        assert_eq!((gap.from_ns, gap.to_ns), (12_000_000_000, 15_000_000_000));
        assert!((gap.seconds() - 3.0).abs() < 1e-9);
        assert_eq!(
            AgentGap::since(0, 0, 15, GapKernel::None),
            None,
            "no earlier agent"
        );
        let clock_went_back = AgentGap::since(20, 0, 15, GapKernel::Adopted).unwrap();
        assert_eq!(clock_went_back.seconds(), 0.0);
    }

    #[test]
    fn the_id_names_the_object_and_the_map_sizes() {
        let config = CaptureConfig::default();
        let id = object_id(b"object", &config);
        assert_eq!(id.len(), 16);
        assert_eq!(id, object_id(b"object", &config), "stable");
        assert_ne!(id, object_id(b"objecu", &config), "another object");
        let bigger = CaptureConfig {
            ring_buffer_bytes: config.ring_buffer_bytes * 2,
            ..config.clone()
        };
        assert_ne!(id, object_id(b"object", &bigger), "another ring size");
    }

    #[test]
    fn a_set_is_complete_only_with_every_link_and_others_are_found() {
        let root = std::env::temp_dir().join(format!("herdwatch-pins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let own = PinSet::new(&root, "aaaa");
        let earlier = PinSet::new(&root, "bbbb");
        assert!(
            PinSet::others(&root, &own).unwrap().is_empty(),
            "no root yet"
        );
        own.create_dirs().unwrap();
        earlier.create_dirs().unwrap();
        std::fs::write(own.link("exec"), b"").unwrap();
        assert!(!own.is_complete(&["exec", "exit"]));
        std::fs::write(own.link("exit"), b"").unwrap();
        std::fs::write(own.map("ENFORCE"), b"").unwrap();
        assert!(own.is_complete(&["exec", "exit"]));
        assert_eq!(PinSet::others(&root, &own).unwrap(), vec![earlier.clone()]);
        own.remove().unwrap();
        assert!(!own.dir().exists());
        own.remove().unwrap();
        earlier.remove().unwrap();
        std::fs::remove_dir(&root).unwrap();
    }
}
