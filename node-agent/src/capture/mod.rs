//! Loads herdwatch's eBPF programs into the kernel and reads their events.
//!
//! [`Capture::load`] checks what the kernel must offer (BTF, privileges), resolves
//! the kernel struct offsets the programs need from the running kernel's BTF (aya-ebpf has
//! no CO-RE relocations), loads the object built from `node-agent-ebpf` by the build
//! script, and attaches every program. [`Capture::next_batch`] then waits for the ring
//! buffer and hands out decoded [`Event`]s; the per-kind counters say how many records were
//! submitted and how many did not fit. Dropping the `Capture` detaches everything.
//!
//! Interface (the rest of the agent codes against it):
//! - `Capture::load(&CaptureConfig) -> Result<Capture, CaptureError>` loads and attaches;
//! - `Capture::next_batch(&mut self, &mut Vec<herdwatch_abi::Event>)` waits for the ring
//!   buffer and drains it, decoded;
//! - `Capture::lost_counts()` / `emitted_counts()` read the per-CPU counters, summed,
//!   indexed by `herdwatch_abi::EventKind as usize`;
//! - `Capture::map_memory_bytes()` reports the BPF map memory;
//! - `Capture::try_drain()` drains without waiting, for callers without a runtime;
//! - `Capture` implements [`ExecRuleMaps`], through which the agent writes the cgroups and
//!   executables whose execs the kernel kills (see `crate::evaluate::kernel`).

mod btf;
mod offsets;
pub mod pins;
pub mod syscalls;

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues};
use aya::pin::PinError;
use aya::programs::links::FdLink;
use aya::programs::{BtfTracePoint, ProgramError};
use aya::{include_bytes_aligned, Ebpf, EbpfError, EbpfLoader};
use herdwatch_abi::{
    decode, AgentState, CachedBitmap, Enforcement, Event, ExeKey, ExeVerdict, FileKey, NetKey,
    SyscallBitmap, SyscallCache, AGENT_STATE_MAP, EMITTED_MAP, ENFORCE_MAP, EVENTS_MAP,
    EVENT_KIND_SLOTS, EXE_RULES_MAP, FILE_SEEN_MAP, LOST_MAP, NET_SEEN_MAP, OFFSETS_GLOBAL,
    SYSCALL_CACHE_MAP, SYSCALL_SEEN_MAP,
};
use herdwatch_ringbuf::RingReader;
use pins::PinSet;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub use offsets::OffsetsError;

/// The eBPF object the build script produced (empty when it was told to skip it).
fn object() -> &'static [u8] {
    include_bytes_aligned!(concat!(env!("OUT_DIR"), "/herdwatch-ebpf.o"))
}

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// Records handed out per `next_batch` at most, so one busy burst cannot starve the rest
/// of the agent's tasks.
const MAX_BATCH: usize = 8192;

/// Counters indexed by `EventKind as usize`.
pub type KindCounts = [u64; EVENT_KIND_SLOTS as usize];

/// Sizes of the kernel-side maps.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// Ring buffer size in bytes: a power of two, at least one page (4096). Events that do
    /// not fit while the agent is behind are counted as lost.
    pub ring_buffer_bytes: u32,
    /// cgroups whose syscall bitmap is kept (LRU): one per container, plus host cgroups.
    pub cgroup_entries: u32,
    /// (cgroup, path, access) triples remembered for file deduplication (LRU, ~350 bytes
    /// each).
    pub file_entries: u32,
    /// (cgroup, op, peer, port) tuples remembered for network deduplication (LRU).
    pub net_entries: u32,
    /// cgroups whose execs the kernel may kill (one per enforced container). Allocated as
    /// used.
    pub enforced_cgroups: u32,
    /// Executable rules (allowed paths, denied paths and names) over all enforced cgroups,
    /// twice what is in force at once: a cgroup's new rules are written before its old ones
    /// go. Allocated as used.
    pub exe_rules: u32,
    /// Where the programs' links and maps are pinned, on a BPF filesystem, so that they
    /// outlive this process (see [`pins`]); a complete set pinned there by an earlier agent
    /// of the same build is adopted instead of loaded. None: nothing is pinned, and
    /// everything is detached when the `Capture` is dropped.
    pub pin_root: Option<PathBuf>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            ring_buffer_bytes: 4 << 20,
            cgroup_entries: 4096,
            file_entries: 16384,
            net_entries: 8192,
            enforced_cgroups: 4096,
            exe_rules: 65536,
            pin_root: None,
        }
    }
}

/// What went wrong loading or reading the programs; each says what is missing.
#[derive(thiserror::Error, Debug)]
pub enum CaptureError {
    #[error(
        "this agent was built without its eBPF object (HERDWATCH_SKIP_EBPF); rebuild with the \
         toolchain from scripts/install-ebpf-toolchain.sh"
    )]
    NoObject,
    #[error("kernel has no BTF at {VMLINUX_BTF}: herdwatch needs CONFIG_DEBUG_INFO_BTF")]
    NoBtf,
    #[error("cannot read the kernel's BTF at {VMLINUX_BTF}")]
    ReadBtf(#[source] io::Error),
    #[error("BPF not permitted: run as root or grant CAP_BPF and CAP_PERFMON ({0})")]
    NotPermitted(String),
    #[error(transparent)]
    Offsets(#[from] OffsetsError),
    #[error("invalid capture configuration: {0}")]
    Config(String),
    #[error("loading the eBPF object failed")]
    Load(#[source] EbpfError),
    #[error("program {program} is missing from the eBPF object")]
    MissingProgram { program: &'static str },
    #[error("loading or attaching program {program} failed")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map {map} is missing from the eBPF object")]
    MissingMap { map: &'static str },
    #[error("map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("polling the ring buffer failed")]
    Poll(#[source] io::Error),
    #[error(
        "{root} is not on a BPF filesystem, so nothing can be pinned there: mount one \
         (`mount -t bpf bpf /sys/fs/bpf`; the chart's init container does) or turn pinning \
         off (agent.pinPrograms=false, --pin-root '')"
    )]
    NoBpffs { root: PathBuf },
    #[error("pinning under {path} failed")]
    Pin {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The loaded, attached programs and the maps user space reads.
pub struct Capture {
    /// Polled ring buffer, once `next_batch` has run inside a tokio runtime.
    polled: Option<AsyncFd<RingReader>>,
    /// The ring buffer before that (loading does not need a runtime).
    ring: Option<RingReader>,
    lost: PerCpuArray<MapData, u64>,
    emitted: PerCpuArray<MapData, u64>,
    enforce: HashMap<MapData, u64, Enforcement>,
    exe_rules: HashMap<MapData, ExeKey, ExeVerdict>,
    /// The first-sighting state, which [`Capture::forget_cgroup`] clears for one cgroup.
    syscall_seen: HashMap<MapData, u64, SyscallBitmap>,
    syscall_cache: PerCpuArray<MapData, SyscallCache>,
    file_seen: HashMap<MapData, FileKey, u8>,
    net_seen: HashMap<MapData, NetKey, u8>,
    agent_state: Array<MapData, u64>,
    decode_errors: u64,
    map_memory_bytes: u64,
    /// The pinned set this capture runs on, and what it found there.
    pinned: Option<Pinned>,
    /// Owns the programs and their links when nothing is pinned: dropping it detaches
    /// them. None when the programs were adopted from pins. Declared last so it is dropped
    /// after the maps taken out of it.
    _ebpf: Option<Ebpf>,
}

/// What loading found in the pin root.
#[derive(Clone, Debug)]
pub struct Pinned {
    /// The set this capture runs on.
    pub set: PinSet,
    /// Whether an earlier agent's set was adopted (its programs never stopped), rather
    /// than loaded now.
    pub adopted: bool,
    /// Sets of other builds (the agent before an upgrade), still attached: they keep
    /// killing until this agent's rules are in place; then [`Capture::retire_earlier`].
    pub earlier: Vec<PinSet>,
}

/// (program, tracepoint) pairs of the programs, all BTF tracepoints: attaching them needs
/// no tracefs, which a freshly booted node does not have mounted.
pub const BTF_PROGRAMS: [(&str, &str); 5] = [
    ("inet_sock_set_state", "inet_sock_set_state"),
    ("sock_send_length", "sock_send_length"),
    ("sched_process_exec", "sched_process_exec"),
    ("sched_process_exit", "sched_process_exit"),
    // Last: once it runs, first sightings flow, and the others are in place to see them.
    ("sys_enter", "sys_enter"),
];

impl Capture {
    /// Loads and attaches every program, or adopts them from the pins of an earlier agent
    /// of the same build (`config.pin_root`).
    pub fn load(config: &CaptureConfig) -> Result<Capture, CaptureError> {
        let object = object();
        if object.is_empty() {
            return Err(CaptureError::NoObject);
        }
        check_config(config)?;
        if !Path::new(VMLINUX_BTF).exists() {
            return Err(CaptureError::NoBtf);
        }
        check_capabilities()?;
        let Some(root) = config.pin_root.as_deref() else {
            return Capture::load_fresh(object, config, None);
        };
        let pin_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CaptureError::Pin { path, source }
        };
        std::fs::create_dir_all(root).map_err(pin_error(root))?;
        if !pins::on_bpffs(root).map_err(pin_error(root))? {
            return Err(CaptureError::NoBpffs {
                root: root.to_path_buf(),
            });
        }
        let set = PinSet::new(root, &pins::object_id(object, config));
        let earlier = PinSet::others(root, &set).map_err(pin_error(root))?;
        let programs: Vec<&str> = BTF_PROGRAMS.iter().map(|(name, _)| *name).collect();
        if set.is_complete(&programs) {
            match Capture::adopt(&set, earlier.clone()) {
                Ok(capture) => return Ok(capture),
                // A set that cannot be read back is no use to anyone: load afresh.
                Err(error) => {
                    tracing::warn!(%error, dir = %set.dir().display(), "cannot adopt the pinned programs; loading them afresh")
                }
            }
        }
        // Partial (an agent stopped while pinning) or unreadable: start it over. Its
        // links, if any, go first, so no half set stays attached.
        set.remove().map_err(pin_error(set.dir()))?;
        set.create_dirs().map_err(pin_error(set.dir()))?;
        let pinned = Pinned {
            set,
            adopted: false,
            earlier,
        };
        Capture::load_fresh(object, config, Some(pinned))
    }

    /// Loads the object, attaches its programs, and pins them if asked.
    fn load_fresh(
        object: &[u8],
        config: &CaptureConfig,
        pinned: Option<Pinned>,
    ) -> Result<Capture, CaptureError> {
        let raw_btf = std::fs::read(VMLINUX_BTF).map_err(CaptureError::ReadBtf)?;
        let offsets = offsets::resolve(&btf::Btf::parse(&raw_btf).map_err(OffsetsError::from)?)?;
        let kernel_btf = aya::Btf::from_sys_fs().map_err(|e| CaptureError::Load(e.into()))?;

        let mut ebpf = EbpfLoader::new()
            .btf(Some(&kernel_btf))
            .set_global(OFFSETS_GLOBAL, &offsets, true)
            .set_max_entries(EVENTS_MAP, config.ring_buffer_bytes)
            .set_max_entries(SYSCALL_SEEN_MAP, config.cgroup_entries)
            .set_max_entries(FILE_SEEN_MAP, config.file_entries)
            .set_max_entries(NET_SEEN_MAP, config.net_entries)
            .set_max_entries(ENFORCE_MAP, config.enforced_cgroups)
            .set_max_entries(EXE_RULES_MAP, config.exe_rules)
            .load(object)
            .map_err(|e| permission_or(e, CaptureError::Load))?;

        // Every named map, before any program runs: an adopting agent finds them all. (The
        // sections of globals, `.rodata` and the like, are the programs' alone, and the BPF
        // filesystem refuses names with a leading dot.)
        if let Some(pinned) = &pinned {
            for (name, map) in ebpf.maps().filter(|(name, _)| !name.starts_with('.')) {
                let path = pinned.set.map(name);
                map.pin(&path).map_err(|e| CaptureError::Pin {
                    path,
                    source: pin_io_error(e),
                })?;
            }
        }

        let program_error = |program: &'static str| {
            move |source: ProgramError| {
                permission_or(source, |source| CaptureError::Program { program, source })
            }
        };
        for (name, tracepoint) in BTF_PROGRAMS {
            let prog: &mut BtfTracePoint = program(&mut ebpf, name)?;
            prog.load(tracepoint, &kernel_btf)
                .map_err(program_error(name))?;
            let link_id = prog.attach().map_err(program_error(name))?;
            if let Some(pinned) = &pinned {
                // The pin holds the link; this process's reference goes at once.
                let link: FdLink = prog.take_link(link_id).map_err(program_error(name))?.into();
                let path = pinned.set.link(name);
                link.pin(&path).map_err(|e| CaptureError::Pin {
                    path,
                    source: pin_io_error(e),
                })?;
            }
        }

        let map_memory_bytes = ebpf.maps().map(|(_, map)| map_memlock(map)).sum();
        let mut named = |name: &'static str| take_map(&mut ebpf, name);
        let mut capture = Capture::from_maps(&mut named, pinned, map_memory_bytes)?;
        capture._ebpf = Some(ebpf);
        Ok(capture)
    }

    /// Opens the maps of a complete pinned set; its programs are attached already.
    fn adopt(set: &PinSet, earlier: Vec<PinSet>) -> Result<Capture, CaptureError> {
        let mut memory = 0;
        let mut named = |name: &'static str| -> Result<Map, CaptureError> {
            let data = MapData::from_pin(set.map(name))
                .map_err(|source| CaptureError::Map { map: name, source })?;
            let map = match name {
                EVENTS_MAP => Map::RingBuf(data),
                LOST_MAP | EMITTED_MAP | SYSCALL_CACHE_MAP => Map::PerCpuArray(data),
                AGENT_STATE_MAP => Map::Array(data),
                ENFORCE_MAP | EXE_RULES_MAP => Map::HashMap(data),
                _ => Map::LruHashMap(data),
            };
            memory += map_memlock(&map);
            Ok(map)
        };
        let pinned = Pinned {
            set: set.clone(),
            adopted: true,
            earlier,
        };
        let mut capture = Capture::from_maps(&mut named, Some(pinned), 0)?;
        capture.map_memory_bytes = memory;
        let adoptions = capture.agent_state(AgentState::Adoptions)?;
        capture.set_agent_state(AgentState::Adoptions, adoptions + 1)?;
        Ok(capture)
    }

    /// The capture over the maps `named` gives.
    fn from_maps(
        named: &mut dyn FnMut(&'static str) -> Result<Map, CaptureError>,
        pinned: Option<Pinned>,
        map_memory_bytes: u64,
    ) -> Result<Capture, CaptureError> {
        let err = |map: &'static str| move |source| CaptureError::Map { map, source };
        Ok(Capture {
            polled: None,
            ring: Some(ring_reader(named(EVENTS_MAP)?)?),
            lost: PerCpuArray::try_from(named(LOST_MAP)?).map_err(err(LOST_MAP))?,
            emitted: PerCpuArray::try_from(named(EMITTED_MAP)?).map_err(err(EMITTED_MAP))?,
            enforce: HashMap::try_from(named(ENFORCE_MAP)?).map_err(err(ENFORCE_MAP))?,
            exe_rules: HashMap::try_from(named(EXE_RULES_MAP)?).map_err(err(EXE_RULES_MAP))?,
            syscall_seen: HashMap::try_from(named(SYSCALL_SEEN_MAP)?)
                .map_err(err(SYSCALL_SEEN_MAP))?,
            syscall_cache: PerCpuArray::try_from(named(SYSCALL_CACHE_MAP)?)
                .map_err(err(SYSCALL_CACHE_MAP))?,
            file_seen: HashMap::try_from(named(FILE_SEEN_MAP)?).map_err(err(FILE_SEEN_MAP))?,
            net_seen: HashMap::try_from(named(NET_SEEN_MAP)?).map_err(err(NET_SEEN_MAP))?,
            agent_state: Array::try_from(named(AGENT_STATE_MAP)?).map_err(err(AGENT_STATE_MAP))?,
            decode_errors: 0,
            map_memory_bytes,
            pinned,
            _ebpf: None,
        })
    }

    /// What loading found in the pin root; None when nothing is pinned.
    pub fn pinned(&self) -> Option<&Pinned> {
        self.pinned.as_ref()
    }

    /// Removes the sets of earlier builds, which detaches their programs: called once this
    /// agent's own rules are in the kernel. Returns how many were removed.
    pub fn retire_earlier(&mut self) -> Result<usize, CaptureError> {
        let Some(pinned) = self.pinned.as_mut() else {
            return Ok(0);
        };
        let earlier = std::mem::take(&mut pinned.earlier);
        for set in &earlier {
            set.remove().map_err(|source| CaptureError::Pin {
                path: set.dir().to_path_buf(),
                source,
            })?;
        }
        Ok(earlier.len())
    }

    /// Removes this capture's own pins, so that its programs are detached when it is
    /// dropped: herdwatch is being uninstalled from the node.
    pub fn unpin(&mut self) -> Result<(), CaptureError> {
        if let Some(pinned) = self.pinned.take() {
            pinned.set.remove().map_err(|source| CaptureError::Pin {
                path: pinned.set.dir().to_path_buf(),
                source,
            })?;
        }
        Ok(())
    }

    /// The last heartbeat and the stop time (Unix ns) the agent of the set `set` left, if
    /// it can be read: for an earlier build's set, which this capture does not run on.
    pub fn pinned_agent_times(set: &PinSet) -> Option<(u64, u64)> {
        let data = MapData::from_pin(set.map(AGENT_STATE_MAP)).ok()?;
        let state: Array<MapData, u64> = Array::try_from(Map::Array(data)).ok()?;
        let slot = |slot: AgentState| state.get(&(slot as u32), 0).ok();
        Some((slot(AgentState::Heartbeat)?, slot(AgentState::Stopped)?))
    }

    /// One slot of the agent's state kept with the maps.
    pub fn agent_state(&self, slot: AgentState) -> Result<u64, CaptureError> {
        self.agent_state
            .get(&(slot as u32), 0)
            .map_err(|source| CaptureError::Map {
                map: AGENT_STATE_MAP,
                source,
            })
    }

    pub fn set_agent_state(&mut self, slot: AgentState, value: u64) -> Result<(), CaptureError> {
        self.agent_state
            .set(slot as u32, value, 0)
            .map_err(|source| CaptureError::Map {
                map: AGENT_STATE_MAP,
                source,
            })
    }

    /// The in-kernel enforcement as the maps hold it: each enforced cgroup's entry, and
    /// the executable keys of its generation. An agent that adopted the maps starts from
    /// this rather than from nothing.
    pub fn enforcement(&self) -> Result<Vec<(u64, Enforcement, Vec<ExeKey>)>, CaptureError> {
        // (cgroup, generation) → its keys: one pass over each map, however many rules.
        let mut cgroups: std::collections::HashMap<(u64, u32), (Enforcement, Vec<ExeKey>)> =
            std::collections::HashMap::new();
        for entry in self.enforce.iter() {
            let (cgroup_id, enforcement) = entry.map_err(|source| CaptureError::Map {
                map: ENFORCE_MAP,
                source,
            })?;
            cgroups.insert(
                (cgroup_id, enforcement.generation),
                (enforcement, Vec::new()),
            );
        }
        for key in self.exe_rule_keys()? {
            if let Some((_, keys)) = cgroups.get_mut(&(key.cgroup_id, key.generation)) {
                keys.push(key);
            }
        }
        Ok(cgroups
            .into_iter()
            .map(|((cgroup_id, _), (enforcement, keys))| (cgroup_id, enforcement, keys))
            .collect())
    }

    /// Every executable key in the kernel, of any generation.
    pub fn exe_rule_keys(&self) -> Result<Vec<ExeKey>, CaptureError> {
        self.exe_rules
            .keys()
            .map(|key| {
                key.map_err(|source| CaptureError::Map {
                    map: EXE_RULES_MAP,
                    source,
                })
            })
            .collect()
    }

    /// Waits until the ring buffer has records, then appends them, decoded, to `out` (at
    /// most a few thousand per call). Records that do not decode are counted in
    /// [`Capture::decode_errors`], not returned. Cancel safe: a record is consumed only
    /// once it is in `out`.
    pub async fn next_batch(&mut self, out: &mut Vec<Event>) -> Result<(), CaptureError> {
        if self.polled.is_none() {
            let ring = self.ring.take().ok_or_else(|| {
                CaptureError::Poll(io::Error::other(
                    "the ring buffer was lost by an earlier error",
                ))
            })?;
            // tokio 1.54 made the safe constructors deprecated in favour of an `unsafe fn`
            // whose contract is that the fd stays open and the same while registered. It
            // holds here: the RingReader owns its map fd (an OwnedFd) for as long as the
            // AsyncFd owns the reader, and returns the same fd every time.
            // This crate forbids unsafe code, so the deprecated safe wrapper it is.
            #[expect(deprecated, reason = "the I/O-safety contract holds, see above")]
            let registered = AsyncFd::try_with_interest(ring, Interest::READABLE);
            match registered {
                Ok(polled) => self.polled = Some(polled),
                Err(err) => {
                    let (ring, error) = err.into_parts();
                    self.ring = Some(ring);
                    return Err(CaptureError::Poll(error));
                }
            }
        }
        let Some(polled) = self.polled.as_mut() else {
            return Err(CaptureError::Poll(io::Error::other(
                "ring buffer not set up",
            )));
        };
        loop {
            let mut guard = polled.readable_mut().await.map_err(CaptureError::Poll)?;
            let (consumed, more) = drain_into(guard.get_inner_mut(), out, &mut self.decode_errors);
            if !more {
                // Drained to empty: wait for the next wake-up. The kernel signals each
                // record submitted after this point, so none is missed.
                guard.clear_ready();
            }
            if consumed > 0 {
                return Ok(());
            }
        }
    }

    /// Appends what the ring buffer holds now, without waiting (at most a few thousand
    /// records per call); returns how many records were consumed. For callers without an
    /// async runtime, such as benchmarks.
    pub fn try_drain(&mut self, out: &mut Vec<Event>) -> usize {
        let ring = match (self.polled.as_mut(), self.ring.as_mut()) {
            (Some(polled), _) => polled.get_mut(),
            (None, Some(ring)) => ring,
            (None, None) => return 0,
        };
        drain_into(ring, out, &mut self.decode_errors).0
    }

    /// Records that could not be decoded: the object and the agent disagree on the ABI.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// Events the kernel could not submit because the ring buffer was full, by kind.
    pub fn lost_counts(&self) -> Result<KindCounts, CaptureError> {
        sum_per_cpu(&self.lost, LOST_MAP)
    }

    /// Events the kernel submitted, by kind.
    pub fn emitted_counts(&self) -> Result<KindCounts, CaptureError> {
        sum_per_cpu(&self.emitted, EMITTED_MAP)
    }

    /// Kernel memory charged for the maps (ring buffer included), in bytes, as the kernel
    /// reports it (`memlock` in `/proc/self/fdinfo`). The maps are preallocated, so this
    /// does not change after loading.
    pub fn map_memory_bytes(&self) -> u64 {
        self.map_memory_bytes
    }

    /// Forgets what the kernel has reported of `cgroup_id` (its syscalls, files and
    /// peers), so that each is reported once more the next time it happens. The agent does
    /// this when a container's profile starts judging: something the container did while
    /// learning that never reached the profile would otherwise never be reported, and so
    /// never judged, in that container again. Returns how many entries were forgotten.
    pub fn forget_cgroup(&mut self, cgroup_id: u64) -> Result<usize, CaptureError> {
        let mut forgotten = 0;
        // The shared bitmap first, then the CPUs' copies: a copy refreshed in between
        // comes from the emptied bitmap.
        if self.syscall_seen.remove(&cgroup_id).is_ok() {
            forgotten += 1;
        }
        let cache_error = |source| CaptureError::Map {
            map: SYSCALL_CACHE_MAP,
            source,
        };
        let mut caches: Vec<SyscallCache> = self
            .syscall_cache
            .get(&0, 0)
            .map_err(cache_error)?
            .iter()
            .copied()
            .collect();
        let mut touched = false;
        for cache in &mut caches {
            for slot in cache.slots.iter_mut().filter(|s| s.cgroup_id == cgroup_id) {
                *slot = CachedBitmap::default();
                touched = true;
            }
        }
        if touched {
            let values = PerCpuValues::try_from(caches).map_err(|e| {
                cache_error(MapError::IoError(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    e,
                )))
            })?;
            self.syscall_cache.set(0, values, 0).map_err(cache_error)?;
        }
        let files: Vec<FileKey> = self
            .file_seen
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.cgroup_id == cgroup_id)
            .collect();
        for key in &files {
            if self.file_seen.remove(key).is_ok() {
                forgotten += 1;
            }
        }
        let peers: Vec<NetKey> = self
            .net_seen
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.cgroup_id == cgroup_id)
            .collect();
        for key in &peers {
            if self.net_seen.remove(key).is_ok() {
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }
}

/// The kernel maps of in-kernel enforcement, as the agent writes them: the [`Capture`],
/// or a table in tests. The layouts and the protocol (rules under a generation, then the
/// cgroup's entry) are described in `herdwatch_abi::Enforcement`.
pub trait ExecRuleMaps {
    /// Puts `cgroup_id` under `enforcement` (or changes its generation or mode).
    fn set_enforcement(&mut self, cgroup_id: u64, enforcement: Enforcement) -> io::Result<()>;
    /// Takes `cgroup_id` out of enforcement; absent already is fine.
    fn remove_enforcement(&mut self, cgroup_id: u64) -> io::Result<()>;
    fn insert_exe_rule(&mut self, key: &ExeKey, verdict: ExeVerdict) -> io::Result<()>;
    /// Absent already is fine.
    fn remove_exe_rule(&mut self, key: &ExeKey) -> io::Result<()>;
}

/// The errno of a map operation as an `io::Error`; a missing key is `NotFound`.
fn map_io_error(error: MapError) -> io::Error {
    match error {
        MapError::SyscallError(e) => e.io_error,
        MapError::KeyNotFound => io::ErrorKind::NotFound.into(),
        other => io::Error::other(other),
    }
}

fn absent_is_fine(result: Result<(), MapError>) -> io::Result<()> {
    match result.map_err(map_io_error) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl ExecRuleMaps for Capture {
    fn set_enforcement(&mut self, cgroup_id: u64, enforcement: Enforcement) -> io::Result<()> {
        self.enforce
            .insert(cgroup_id, enforcement, 0)
            .map_err(map_io_error)
    }

    fn remove_enforcement(&mut self, cgroup_id: u64) -> io::Result<()> {
        absent_is_fine(self.enforce.remove(&cgroup_id))
    }

    fn insert_exe_rule(&mut self, key: &ExeKey, verdict: ExeVerdict) -> io::Result<()> {
        self.exe_rules.insert(key, verdict, 0).map_err(map_io_error)
    }

    fn remove_exe_rule(&mut self, key: &ExeKey) -> io::Result<()> {
        absent_is_fine(self.exe_rules.remove(key))
    }
}

/// Drains up to `MAX_BATCH` records; returns (records consumed, whether more may remain).
fn drain_into(ring: &mut RingReader, out: &mut Vec<Event>, errors: &mut u64) -> (usize, bool) {
    ring.drain(MAX_BATCH, |record| match decode(record) {
        Ok(event) => out.push(event),
        Err(_) => *errors += 1,
    })
}

/// The reader of the ring buffer map `map`, with a descriptor of its own.
fn ring_reader(map: Map) -> Result<RingReader, CaptureError> {
    let error = |source| CaptureError::Map {
        map: EVENTS_MAP,
        source,
    };
    let Map::RingBuf(data) = map else {
        return Err(error(MapError::InvalidMapType { map_type: 0 }));
    };
    let size = data.info().map_err(error)?.max_entries();
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| error(MapError::IoError(e)))?;
    RingReader::new(fd, size).map_err(|e| error(MapError::IoError(io::Error::other(e))))
}

fn sum_per_cpu(
    array: &PerCpuArray<MapData, u64>,
    map: &'static str,
) -> Result<KindCounts, CaptureError> {
    let mut counts = [0; EVENT_KIND_SLOTS as usize];
    for (kind, count) in counts.iter_mut().enumerate() {
        let values = array
            .get(&(kind as u32), 0)
            .map_err(|source| CaptureError::Map { map, source })?;
        *count = values.iter().sum();
    }
    Ok(counts)
}

fn check_config(config: &CaptureConfig) -> Result<(), CaptureError> {
    let ring = config.ring_buffer_bytes;
    if !ring.is_power_of_two() || ring < 4096 {
        return Err(CaptureError::Config(format!(
            "ring_buffer_bytes is {ring}: it must be a power of two of at least 4096 (one page)"
        )));
    }
    for (name, value) in [
        ("cgroup_entries", config.cgroup_entries),
        ("file_entries", config.file_entries),
        ("net_entries", config.net_entries),
        ("enforced_cgroups", config.enforced_cgroups),
        ("exe_rules", config.exe_rules),
    ] {
        if value == 0 {
            return Err(CaptureError::Config(format!("{name} must be at least 1")));
        }
    }
    Ok(())
}

/// Fails early, with the fix in the message, when the process cannot use BPF tracing:
/// it needs CAP_BPF with CAP_PERFMON, or CAP_SYS_ADMIN. (Without this check the first
/// symptom is an EPERM from some map or program far into loading.)
fn check_capabilities() -> Result<(), CaptureError> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    // When /proc is unreadable the kernel decides, and `permission_or` explains an EPERM.
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Ok(());
    };
    let Some(effective) = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return Ok(());
    };
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err(CaptureError::NotPermitted(format!(
            "effective capabilities are {effective:#x}"
        )))
    }
}

/// Turns an error whose cause is EPERM into [`CaptureError::NotPermitted`], anything
/// else into `other(error)`.
fn permission_or<E: std::error::Error + 'static>(
    error: E,
    other: impl FnOnce(E) -> CaptureError,
) -> CaptureError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if io.raw_os_error() == Some(libc::EPERM) {
                return CaptureError::NotPermitted(format!("the kernel said: {error}"));
            }
        }
        cause = err.source();
    }
    other(error)
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, CaptureError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or(CaptureError::MissingProgram { program: name })?;
    prog.try_into().map_err(|source| CaptureError::Program {
        program: name,
        source,
    })
}

/// A pin error as the `io::Error` it carries.
fn pin_io_error(error: PinError) -> io::Error {
    match error {
        PinError::SyscallError(e) => e.io_error,
        other => io::Error::other(other),
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, CaptureError> {
    ebpf.take_map(name)
        .ok_or(CaptureError::MissingMap { map: name })
}

/// Kernel memory charged for one map, from its fdinfo (0 if that cannot be read).
fn map_memlock(map: &Map) -> u64 {
    let data = match map {
        Map::Array(d)
        | Map::BloomFilter(d)
        | Map::CpuMap(d)
        | Map::DevMap(d)
        | Map::DevMapHash(d)
        | Map::HashMap(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::Queue(d)
        | Map::RingBuf(d)
        | Map::SockHash(d)
        | Map::SockMap(d)
        | Map::Stack(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d)
        | Map::XskMap(d) => d,
    };
    let fd = data.fd().as_fd().as_raw_fd();
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}
