//! `herdwatch-agent observe`: what runs on this host, one line per event, then a summary
//! per cgroup. No Kubernetes needed; this is how a user tries herdwatch on any Linux host,
//! and how tests see what the agent sees.
//!
//! The line formats ([`json_line`], [`text_line`]) and the [`Summary`] are pure; [`observe`]
//! is the wiring: attach, seed from /proc, print until the duration ends or Ctrl-C.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herdwatch_abi::{
    Event, EventKind, NetEvent, ACCESS_CREATE, ACCESS_READ, ACCESS_WRITE, AF_INET, AF_INET6,
    EVENT_KIND_SLOTS, FILE_PATH_TRUNCATED, IPPROTO_TCP, IPPROTO_UDP, NET_ACCEPT, NET_CONNECT,
    NET_LISTEN, NET_UDP_SEND,
};
use serde::Serialize;
use tracing::{info, warn};

use crate::args::{CaptureArgs, ObserveArgs, OutputFormat};
use crate::attribution::argv::escape_bytes;
use crate::attribution::cgroup::{
    find_cgroup2_mount, Cgroup2Mount, CgroupResolver, FsCgroupSource, ResolverConfig,
};
use crate::attribution::pipeline::{Attributed, FailureReason, Pipeline, PipelineStats};
use crate::attribution::pods::PodStore;
use crate::attribution::procfs::Procfs;
use crate::attribution::proctable::{ProcessTable, TableConfig};
use crate::capture::syscalls;
use crate::capture::{Capture, CaptureConfig};
use crate::error::Result;

const SLOTS: usize = EVENT_KIND_SLOTS as usize;
/// The header's uid when the kernel does not know it.
const UNKNOWN_ID: u32 = u32::MAX;

/// `NET_*` as a word.
pub fn net_op_name(op: u8) -> Cow<'static, str> {
    match op {
        NET_CONNECT => "connect".into(),
        NET_ACCEPT => "accept".into(),
        NET_LISTEN => "listen".into(),
        NET_UDP_SEND => "udp_send".into(),
        other => format!("op_{other}").into(),
    }
}

pub fn protocol_name(protocol: u8) -> Cow<'static, str> {
    match protocol {
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        other => format!("proto_{other}").into(),
    }
}

/// An address of a [`NetEvent`] (network order; IPv4 in the first four bytes).
pub fn net_addr(family: u8, bytes: &[u8; 16]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        // An IPv4 peer of a dual-stack socket reads as IPv4 (::ffff:a.b.c.d → a.b.c.d).
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*bytes)).to_canonical()),
        _ => None,
    }
}

/// `ACCESS_*` bits as `read`, `write,create`, …; `none` for an `O_PATH` open.
pub fn access_string(access: u32) -> String {
    let names: Vec<&str> = [
        (ACCESS_READ, "read"),
        (ACCESS_WRITE, "write"),
        (ACCESS_CREATE, "create"),
    ]
    .into_iter()
    .filter(|(bit, _)| access & bit != 0)
    .map(|(_, name)| name)
    .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(",")
    }
}

/// How a process ended, from a `wait(2)` status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

pub fn exit_status(wait_status: i32) -> ExitStatus {
    let signal = wait_status & 0x7f;
    if signal == 0 {
        ExitStatus::Code((wait_status >> 8) & 0xff)
    } else {
        ExitStatus::Signal(signal)
    }
}

/// Which endpoints of a network event mean something for its op.
struct NetView {
    saddr: Option<IpAddr>,
    sport: Option<u16>,
    daddr: Option<IpAddr>,
    dport: Option<u16>,
}

fn net_view(e: &NetEvent) -> NetView {
    let saddr = net_addr(e.family, &e.saddr).filter(|a| !a.is_unspecified() || e.op == NET_LISTEN);
    let daddr = net_addr(e.family, &e.daddr);
    match e.op {
        NET_LISTEN => NetView {
            saddr,
            sport: Some(e.sport),
            daddr: None,
            dport: None,
        },
        NET_UDP_SEND => NetView {
            saddr: None,
            sport: None,
            daddr,
            dport: Some(e.dport),
        },
        _ => NetView {
            saddr,
            sport: (e.sport != 0).then_some(e.sport),
            daddr,
            dport: Some(e.dport),
        },
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    kind: &'static str,
    /// Nanoseconds since boot (the kernel's boot-time clock).
    time_ns: u64,
    pid: u32,
    tid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    ppid: Option<u32>,
    /// Absent when the kernel could not tell (an accepted connection whose listener is
    /// unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exe: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    argv: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    argv_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    exec_session: Option<bool>,
    cgroup_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup_path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod_uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_digest: Option<&'a str>,
    #[serde(flatten)]
    detail: Detail<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Detail<'a> {
    Exec {},
    Exit {
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
    Syscall {
        syscall: Cow<'static, str>,
        nr: u32,
    },
    Net {
        op: Cow<'static, str>,
        protocol: Cow<'static, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        saddr: Option<IpAddr>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sport: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        daddr: Option<IpAddr>,
        #[serde(skip_serializing_if = "Option::is_none")]
        dport: Option<u16>,
    },
    File {
        path: Cow<'a, str>,
        access: String,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        path_truncated: bool,
    },
    Identity {
        syscall: Cow<'static, str>,
        ret: i32,
        old_uid: u32,
        new_uid: u32,
        old_gid: u32,
        new_gid: u32,
    },
}

fn detail<'a>(event: &'a Event) -> Detail<'a> {
    match event {
        Event::Exec(_) => Detail::Exec {},
        Event::Exit(e) => match exit_status(e.exit_code) {
            ExitStatus::Code(c) => Detail::Exit {
                exit_code: Some(c),
                signal: None,
            },
            ExitStatus::Signal(s) => Detail::Exit {
                exit_code: None,
                signal: Some(s),
            },
        },
        Event::Syscall(e) => Detail::Syscall {
            syscall: syscalls::display(e.nr),
            nr: e.nr,
        },
        Event::Net(e) => {
            let v = net_view(e);
            Detail::Net {
                op: net_op_name(e.op),
                protocol: protocol_name(e.protocol),
                saddr: v.saddr,
                sport: v.sport,
                daddr: v.daddr,
                dport: v.dport,
            }
        }
        Event::File(e) => Detail::File {
            path: escape_bytes(e.path()),
            access: access_string(e.access),
            path_truncated: e.flags & FILE_PATH_TRUNCATED != 0,
        },
        Event::Identity(e) => Detail::Identity {
            syscall: syscalls::display(e.syscall_nr),
            ret: e.ret,
            old_uid: e.old_uid,
            new_uid: e.new_uid,
            old_gid: e.old_gid,
            new_gid: e.new_gid,
        },
    }
}

/// One JSON object (no newline) for an attributed event.
pub fn json_line(event: &Event, a: &Attributed<'_>) -> String {
    let h = event.header();
    let process = a.process;
    let container = a.cgroup.and_then(|c| c.kind.container());
    let pod = a.pod;
    let line = JsonLine {
        kind: event.kind().name(),
        time_ns: h.ktime_ns,
        pid: h.pid,
        tid: h.tid,
        ppid: process.map(|p| p.ppid),
        uid: (h.uid != UNKNOWN_ID).then_some(h.uid),
        exe: process.map(|p| &*p.exe),
        argv: process.map(|p| p.argv.iter().collect()),
        argv_truncated: process.is_some_and(|p| p.argv.truncated),
        exec_session: process.and_then(|p| p.container.is_some().then_some(p.exec_session)),
        cgroup_id: h.cgroup_id,
        cgroup_path: a.cgroup.map(|c| &*c.path),
        container_id: container.map(|c| &*c.id),
        runtime: container.map(|c| c.runtime.as_str()),
        pod_uid: a.cgroup.and_then(|c| c.kind.pod_uid()).map(|u| &**u),
        namespace: pod.map(|p| &*p.pod.namespace),
        pod: pod.map(|p| &*p.pod.name),
        container: pod.and_then(|p| p.container()).map(|c| &*c.name),
        image_digest: pod
            .and_then(|p| p.container())
            .and_then(|c| c.image_digest.as_deref()),
        detail: detail(event),
    };
    // Serialising plain data to a String cannot fail.
    serde_json::to_string(&line).unwrap_or_default()
}

fn endpoint(addr: Option<IpAddr>, port: Option<u16>) -> String {
    match (addr, port) {
        (Some(IpAddr::V6(a)), Some(p)) => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (Some(a), None) => a.to_string(),
        (None, Some(p)) => format!(":{p}"),
        (None, None) => "?".to_owned(),
    }
}

/// What the text format prints after the fixed columns.
fn text_detail(event: &Event, a: &Attributed<'_>) -> String {
    match event {
        Event::Exec(_) => a.process.map(|p| p.argv.display()).unwrap_or_default(),
        Event::Exit(e) => match exit_status(e.exit_code) {
            ExitStatus::Code(c) => format!("exit {c}"),
            ExitStatus::Signal(s) => format!("killed by signal {s}"),
        },
        Event::Syscall(e) => syscalls::display(e.nr).into_owned(),
        Event::Net(e) => {
            let v = net_view(e);
            let proto = protocol_name(e.protocol);
            match e.op {
                NET_LISTEN => format!("listen {proto} {}", endpoint(v.saddr, v.sport)),
                NET_ACCEPT => format!(
                    "accept {proto} {} <- {}",
                    endpoint(v.saddr, v.sport),
                    endpoint(v.daddr, v.dport)
                ),
                op => format!(
                    "{} {proto} -> {}",
                    net_op_name(op),
                    endpoint(v.daddr, v.dport)
                ),
            }
        }
        Event::File(e) => {
            let cut = if e.flags & FILE_PATH_TRUNCATED != 0 {
                "…"
            } else {
                ""
            };
            format!(
                "{} {}{cut}",
                access_string(e.access),
                escape_bytes(e.path())
            )
        }
        Event::Identity(e) => {
            let outcome = if e.ret == 0 {
                String::new()
            } else {
                format!(" (failed: {})", e.ret)
            };
            format!(
                "{} uid {}->{} gid {}->{}{outcome}",
                syscalls::display(e.syscall_nr),
                e.old_uid,
                e.new_uid,
                e.old_gid,
                e.new_gid
            )
        }
    }
}

/// Column heads of the text format.
pub const TEXT_HEADER: &str =
    "KIND      PID      PPID     UID    CONTAINER     EXE                         DETAIL";

/// A short container id, the pod/container in a cluster, or `-` for the host.
fn container_column(a: &Attributed<'_>) -> String {
    if let Some(c) = a.pod.and_then(|p| p.container()) {
        return c.name.clone();
    }
    match a.cgroup.and_then(|c| c.kind.container()) {
        Some(c) => c.id.chars().take(12).collect(),
        None if a.cgroup.is_none() => "?".to_owned(),
        None => "-".to_owned(),
    }
}

/// One aligned line (no newline) for an attributed event.
pub fn text_line(event: &Event, a: &Attributed<'_>) -> String {
    let h = event.header();
    let ppid = a
        .process
        .map_or_else(|| "?".to_owned(), |p| p.ppid.to_string());
    let exe = a.process.map_or("?", |p| &*p.exe);
    let uid = if h.uid == UNKNOWN_ID {
        "?".to_owned()
    } else {
        h.uid.to_string()
    };
    let session = if a.process.is_some_and(|p| p.exec_session) {
        " [exec session]"
    } else {
        ""
    };
    format!(
        "{:<9} {:<8} {:<8} {:<6} {:<13} {:<27} {}{session}",
        event.kind().name(),
        h.pid,
        ppid,
        uid,
        container_column(a),
        exe,
        text_detail(event, a),
    )
}

/// Events per cgroup, for the end of `observe`.
#[derive(Debug, Default)]
pub struct Summary {
    cgroups: BTreeMap<u64, CgroupSummary>,
    /// Events of the agent itself, not shown (reading /proc would fill the output).
    own_events: u64,
}

#[derive(Debug, Default)]
struct CgroupSummary {
    path: Option<Arc<str>>,
    container_id: Option<Arc<str>>,
    counts: [u64; SLOTS],
}

impl Summary {
    pub fn record(&mut self, event: &Event, a: &Attributed<'_>) {
        let entry = self.cgroups.entry(event.header().cgroup_id).or_default();
        entry.counts[event.kind() as usize] += 1;
        if entry.path.is_none() {
            if let Some(c) = a.cgroup {
                entry.path = Some(c.path.clone());
                entry.container_id = c.kind.container().map(|c| c.id.clone());
            }
        }
    }

    pub fn cgroups(&self) -> usize {
        self.cgroups.len()
    }

    /// Counts an event of the agent itself, which is not shown.
    pub fn record_own(&mut self) {
        self.own_events += 1;
    }

    /// The summary lines in the chosen format, then one line of totals that always says
    /// how many events the kernel lost.
    pub fn render(
        &self,
        format: OutputFormat,
        stats: &PipelineStats,
        lost: &[u64; SLOTS],
        decode_errors: u64,
    ) -> Vec<String> {
        let by_kind = |counts: &[u64; SLOTS]| -> BTreeMap<&'static str, u64> {
            EventKind::ALL
                .iter()
                .map(|k| (k.name(), counts[*k as usize]))
                .collect()
        };
        let failures: BTreeMap<&'static str, u64> = FailureReason::ALL
            .iter()
            .map(|r| (r.as_str(), stats.failures[*r as usize]))
            .collect();
        let total_lost: u64 = lost.iter().sum();
        let total_events: u64 = stats.events.iter().sum();
        let mut out = Vec::new();
        match format {
            OutputFormat::Json => {
                for (id, c) in &self.cgroups {
                    out.push(
                        serde_json::json!({
                            "kind": "summary",
                            "cgroup_id": id,
                            "cgroup_path": c.path.as_deref(),
                            "container_id": c.container_id.as_deref(),
                            "events": by_kind(&c.counts),
                            "total": c.counts.iter().sum::<u64>(),
                        })
                        .to_string(),
                    );
                }
                out.push(
                    serde_json::json!({
                        "kind": "totals",
                        "events": by_kind(&stats.events),
                        "total": total_events,
                        "lost": by_kind(lost),
                        "lost_total": total_lost,
                        "decode_errors": decode_errors,
                        "attribution_failures": failures,
                        "cgroups": self.cgroups.len(),
                        "agent_events": self.own_events,
                    })
                    .to_string(),
                );
            }
            OutputFormat::Text => {
                out.push(String::new());
                out.push(format!(
                    "{} events in {} cgroups; {total_lost} lost",
                    total_events,
                    self.cgroups.len()
                ));
                out.push(format!(
                    "{:<10} {:>6} {:>6} {:>8} {:>6} {:>6} {:>9}  {:<13} PATH",
                    "CGROUP", "EXEC", "EXIT", "SYSCALL", "NET", "FILE", "IDENTITY", "CONTAINER"
                ));
                for (id, c) in &self.cgroups {
                    let n = |k: EventKind| c.counts[k as usize];
                    let container: String = c
                        .container_id
                        .as_deref()
                        .map_or_else(|| "-".to_owned(), |c| c.chars().take(12).collect());
                    out.push(format!(
                        "{:<10} {:>6} {:>6} {:>8} {:>6} {:>6} {:>9}  {:<13} {}",
                        id,
                        n(EventKind::Exec),
                        n(EventKind::Exit),
                        n(EventKind::Syscall),
                        n(EventKind::Net),
                        n(EventKind::File),
                        n(EventKind::Identity),
                        container,
                        c.path.as_deref().unwrap_or("(unknown cgroup)"),
                    ));
                }
                let lost_line: Vec<String> = by_kind(lost)
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                out.push(format!("lost (ring buffer full): {}", lost_line.join(" ")));
                if self.own_events > 0 {
                    out.push(format!(
                        "events of herdwatch-agent itself (not shown): {}",
                        self.own_events
                    ));
                }
                if decode_errors > 0 {
                    out.push(format!("undecodable records: {decode_errors}"));
                }
                let failed: Vec<String> = failures
                    .iter()
                    .filter(|(_, v)| **v > 0)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                if !failed.is_empty() {
                    out.push(format!("attribution failures: {}", failed.join(" ")));
                }
            }
        }
        out
    }
}

/// The cgroup2 mount to use: the flag, or the one in /proc/self/mountinfo.
pub fn cgroup_mount(args: &CaptureArgs) -> Result<Cgroup2Mount> {
    match &args.cgroup_root {
        Some(path) => Ok(Cgroup2Mount {
            mount_point: path.clone(),
            root: "/".to_owned(),
        }),
        None => find_cgroup2_mount("/proc/self/mountinfo".as_ref()),
    }
}

/// The pipeline over this host's /proc and cgroup2 hierarchy.
pub fn host_pipeline(
    args: &CaptureArgs,
    pods: Option<Arc<PodStore>>,
) -> Result<Pipeline<FsCgroupSource, Procfs>> {
    let mount = cgroup_mount(args)?;
    info!(mount = %mount.mount_point.display(), "cgroup2 hierarchy");
    let resolver = CgroupResolver::new(FsCgroupSource::new(mount), ResolverConfig::default());
    let table = ProcessTable::new(TableConfig {
        max_processes: args.max_processes,
        ..TableConfig::default()
    });
    Ok(Pipeline::new(
        resolver,
        table,
        Procfs::new(&args.proc_root),
        pods,
    ))
}

/// Loads the capture with the flags' sizes, pinned under `pin_root` if given.
pub fn load_capture(args: &CaptureArgs, pin_root: Option<&Path>) -> Result<Capture> {
    let config = CaptureConfig {
        ring_buffer_bytes: args.ring_buffer_bytes,
        pin_root: pin_root.map(Path::to_path_buf),
        ..CaptureConfig::default()
    };
    let capture = Capture::load(&config)?;
    match capture.pinned() {
        Some(pinned) if pinned.adopted => info!(
            map_memory_bytes = capture.map_memory_bytes(),
            pins = %pinned.set.dir().display(),
            "eBPF programs adopted: they stayed attached while no agent ran"
        ),
        Some(pinned) => info!(
            map_memory_bytes = capture.map_memory_bytes(),
            pins = %pinned.set.dir().display(),
            earlier = pinned.earlier.len(),
            "eBPF programs attached and pinned"
        ),
        None => info!(
            map_memory_bytes = capture.map_memory_bytes(),
            "eBPF programs attached (not pinned: they stop with this process)"
        ),
    }
    Ok(capture)
}

/// Writes lines to stdout; false once stdout is gone (`observe | head`).
fn emit(out: &mut impl Write, lines: &[u8]) -> bool {
    out.write_all(lines).and_then(|()| out.flush()).is_ok()
}

/// Runs `observe` until the duration ends, Ctrl-C, or stdout closes.
pub async fn observe(args: ObserveArgs) -> Result<()> {
    let mut pipeline = host_pipeline(&args.capture, None)?;
    // Attach first, then read /proc: a process started in between is in both, and the
    // table merges the two.
    let mut capture = load_capture(&args.capture, None)?;
    let seed = pipeline.seed_from_proc(Instant::now())?;
    info!(
        processes = seed.processes,
        vanished = seed.vanished,
        "process table seeded from /proc"
    );

    let stdout = std::io::stdout();
    let format = args.format;
    let mut summary = Summary::default();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    if format == OutputFormat::Text {
        buf.extend_from_slice(TEXT_HEADER.as_bytes());
        buf.push(b'\n');
    }
    let deadline = tokio::time::sleep(
        args.duration
            .unwrap_or(Duration::from_secs(100 * 365 * 24 * 3600)),
    );
    tokio::pin!(deadline);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut batch = Vec::with_capacity(4096);
    let mut open = true;
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            () = &mut deadline => break,
            result = capture.next_batch(&mut batch) => result?,
        }
        render_batch(&mut pipeline, &mut summary, format, &mut batch, &mut buf);
        open = emit(&mut stdout.lock(), &buf);
        buf.clear();
        if !open {
            break;
        }
    }
    if open {
        // What arrived before the end still counts.
        capture.try_drain(&mut batch);
        render_batch(&mut pipeline, &mut summary, format, &mut batch, &mut buf);
        let lost = capture.lost_counts().unwrap_or_else(|error| {
            warn!(%error, "cannot read the lost-event counters");
            [0; SLOTS]
        });
        for line in summary.render(format, &pipeline.stats(), &lost, capture.decode_errors()) {
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
        }
        emit(&mut stdout.lock(), &buf);
    }
    Ok(())
}

fn render_batch<C, P>(
    pipeline: &mut Pipeline<C, P>,
    summary: &mut Summary,
    format: OutputFormat,
    batch: &mut Vec<Event>,
    buf: &mut Vec<u8>,
) where
    C: crate::attribution::cgroup::CgroupSource,
    P: crate::attribution::procfs::ProcSource,
{
    let now = Instant::now();
    let own_pid = std::process::id();
    for event in batch.drain(..) {
        let a = pipeline.process(&event, now);
        if event.header().pid == own_pid {
            summary.record_own();
            continue;
        }
        summary.record(&event, &a);
        let line = match format {
            OutputFormat::Json => json_line(&event, &a),
            OutputFormat::Text => text_line(&event, &a),
        };
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::argv::Argv;
    use crate::attribution::cgroup::{parse_cgroup_path, CgroupInfo};
    use crate::attribution::proctable::NewProcess;
    use herdwatch_abi::*;

    const CID: &str = "8d3c2f1b4a5e6d7c8b9a0f1e2d3c4b5a6978877665544332211000ffeeddccbb";

    fn header(kind: EventKind) -> EventHeader {
        EventHeader {
            kind: kind as u32,
            pid: 4242,
            tid: 4243,
            uid: 1000,
            gid: 1000,
            ppid: 0,
            cgroup_id: 77,
            ktime_ns: 5,
        }
    }

    fn cgroup() -> CgroupInfo {
        let path = format!("/kubepods/besteffort/pod4f1c2a3b-5d6e-4f70-8192-a3b4c5d6e7f8/{CID}");
        CgroupInfo {
            id: 77,
            kind: parse_cgroup_path(&path),
            path: Arc::from(path.as_str()),
        }
    }

    fn table() -> ProcessTable {
        let mut t = ProcessTable::new(TableConfig::default());
        t.exec(NewProcess {
            pid: 4242,
            ppid: 1,
            start_time_ns: 1,
            uid: 1000,
            exe: Box::from("/usr/bin/curl"),
            file_name: None,
            argv: Argv::from_nul_block(b"curl\0-s\0http://x/\xff\0", true),
            cgroup_id: 77,
            container: Some(Arc::from(CID)),
        });
        t
    }

    fn json(event: &Event) -> serde_json::Value {
        let t = table();
        let cg = cgroup();
        let a = Attributed {
            process: t.peek(4242),
            cgroup: Some(&cg),
            pod: None,
            unrecognised_runtime: None,
        };
        serde_json::from_str(&json_line(event, &a)).unwrap()
    }

    fn text(event: &Event, with_process: bool) -> String {
        let t = table();
        let cg = cgroup();
        let a = Attributed {
            process: t.peek(4242).filter(|_| with_process),
            cgroup: Some(&cg),
            pod: None,
            unrecognised_runtime: None,
        };
        text_line(event, &a)
    }

    fn net(op: u8, family: u8, protocol: u8) -> NetEvent {
        let mut e = NetEvent {
            header: header(EventKind::Net),
            op,
            family,
            protocol,
            _pad0: 0,
            sport: 0,
            dport: 443,
            saddr: [0; 16],
            daddr: [0; 16],
        };
        if family == AF_INET {
            e.daddr[..4].copy_from_slice(&[10, 0, 0, 7]);
        } else {
            e.daddr = Ipv6Addr::LOCALHOST.octets();
        }
        e
    }

    #[test]
    fn json_line_has_the_common_fields() {
        let ev = Event::Syscall(SyscallEvent {
            header: header(EventKind::Syscall),
            nr: 59,
            _pad: 0,
        });
        let v = json(&ev);
        assert_eq!(v["kind"], "syscall");
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["ppid"], 1);
        assert_eq!(v["uid"], 1000);
        assert_eq!(v["exe"], "/usr/bin/curl");
        assert_eq!(
            v["argv"],
            serde_json::json!(["curl", "-s", "http://x/\\xff"])
        );
        assert_eq!(v["argv_truncated"], true);
        assert_eq!(v["cgroup_id"], 77);
        assert_eq!(
            v["cgroup_path"],
            format!("/kubepods/besteffort/pod4f1c2a3b-5d6e-4f70-8192-a3b4c5d6e7f8/{CID}")
        );
        assert_eq!(v["container_id"], CID);
        assert_eq!(v["pod_uid"], "4f1c2a3b-5d6e-4f70-8192-a3b4c5d6e7f8");
        assert_eq!(v["exec_session"], false);
        assert_eq!(v["syscall"], "execve");
        assert_eq!(v["nr"], 59);
    }

    #[test]
    fn json_line_without_process_or_cgroup_omits_what_is_unknown() {
        let ev = Event::Syscall(SyscallEvent {
            header: header(EventKind::Syscall),
            nr: 9999,
            _pad: 0,
        });
        let a = Attributed {
            process: None,
            cgroup: None,
            pod: None,
            unrecognised_runtime: None,
        };
        let v: serde_json::Value = serde_json::from_str(&json_line(&ev, &a)).unwrap();
        assert_eq!(v["syscall"], "syscall_9999");
        assert_eq!(v["uid"], 1000);
        for absent in [
            "ppid",
            "exe",
            "argv",
            "cgroup_path",
            "container_id",
            "exec_session",
        ] {
            assert!(v.get(absent).is_none(), "{absent} should be absent: {v}");
        }
        assert_eq!(v["cgroup_id"], 77);
    }

    #[test]
    fn json_net_fields_per_op() {
        let v = json(&Event::Net(net(NET_CONNECT, AF_INET, IPPROTO_TCP)));
        assert_eq!(
            (v["op"].as_str(), v["protocol"].as_str()),
            (Some("connect"), Some("tcp"))
        );
        assert_eq!(v["daddr"], "10.0.0.7");
        assert_eq!(v["dport"], 443);
        assert!(v.get("sport").is_none() && v.get("saddr").is_none(), "{v}");

        let v = json(&Event::Net(net(NET_UDP_SEND, AF_INET6, IPPROTO_UDP)));
        assert_eq!(
            (v["op"].as_str(), v["protocol"].as_str()),
            (Some("udp_send"), Some("udp"))
        );
        assert_eq!(v["daddr"], "::1");

        let mut listen = net(NET_LISTEN, AF_INET, IPPROTO_TCP);
        listen.sport = 8080;
        listen.dport = 0;
        let v = json(&Event::Net(listen));
        assert_eq!(v["saddr"], "0.0.0.0");
        assert_eq!(v["sport"], 8080);
        assert!(v.get("daddr").is_none() && v.get("dport").is_none(), "{v}");

        let mut accept = net(NET_ACCEPT, AF_INET, IPPROTO_TCP);
        accept.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        accept.sport = 8080;
        accept.dport = 51_000;
        let v = json(&Event::Net(accept));
        assert_eq!(
            (v["saddr"].as_str(), v["sport"].as_u64()),
            (Some("127.0.0.1"), Some(8080))
        );
        assert_eq!(v["dport"], 51_000);

        // The kernel did not know the listening process: no uid rather than 4294967295.
        accept.header.pid = 0;
        accept.header.uid = u32::MAX;
        let v = json(&Event::Net(accept));
        assert!(v.get("uid").is_none(), "{v}");
        let line = text(&Event::Net(accept), false);
        assert!(
            line.starts_with("net       0        ?        ?      "),
            "{line}"
        );
    }

    #[test]
    fn json_file_identity_and_exit_fields() {
        let mut f = FileEvent {
            header: header(EventKind::File),
            access: ACCESS_WRITE | ACCESS_CREATE,
            flags: FILE_PATH_TRUNCATED,
            open_flags: 0,
            path_len: 0,
            path: [0; MAX_PATH],
        };
        let p = b"/tmp/caf\xe9";
        f.path[..p.len()].copy_from_slice(p);
        f.path_len = p.len() as u32;
        let v = json(&Event::File(f));
        assert_eq!(v["path"], "/tmp/caf\\xe9");
        assert_eq!(v["access"], "write,create");
        assert_eq!(v["path_truncated"], true);

        let id = IdentityEvent {
            header: header(EventKind::Identity),
            syscall_nr: 105,
            ret: 0,
            old_uid: 0,
            old_gid: 0,
            new_uid: 65534,
            new_gid: 0,
            args: [65534, u32::MAX, u32::MAX],
            _pad: 0,
        };
        let v = json(&Event::Identity(id));
        assert_eq!(v["syscall"], "setuid");
        assert_eq!(
            (v["old_uid"].as_u64(), v["new_uid"].as_u64()),
            (Some(0), Some(65534))
        );

        let v = json(&Event::Exit(ExitEvent {
            header: header(EventKind::Exit),
            exit_code: 9,
            _pad: 0,
        }));
        assert_eq!(v["signal"], 9);
        assert!(v.get("exit_code").is_none());
        let v = json(&Event::Exit(ExitEvent {
            header: header(EventKind::Exit),
            exit_code: 3 << 8,
            _pad: 0,
        }));
        assert_eq!(v["exit_code"], 3);
    }

    #[test]
    fn text_lines_read_well() {
        let ev = Event::Net(net(NET_CONNECT, AF_INET6, IPPROTO_TCP));
        let line = text(&ev, true);
        assert!(
            line.starts_with("net       4242     1        1000   8d3c2f1b4a5e  /usr/bin/curl"),
            "{line}"
        );
        assert!(line.ends_with("connect tcp -> [::1]:443"), "{line}");
        let exec = Event::Exec(ExecEvent {
            header: header(EventKind::Exec),
            ppid: 1,
            euid: 0,
            egid: 0,
            flags: 0,
            filename_len: 0,
            argv_len: 0,
            start_time_ns: 1,
            parent_start_time_ns: 0,
            filename: [0; MAX_PATH],
            argv: [0; MAX_ARGV],
            file_name_len: 0,
            cwd_depth: 0,
            file_name: [0; MAX_FILE_NAME],
            cwd: [[0; CWD_COMPONENT]; CWD_DEPTH],
            exe_ino: 0,
            exe_dev: 0,
            _pad_exe: 0,
        });
        assert!(
            text(&exec, true).ends_with("curl -s http://x/\\xff…"),
            "{}",
            text(&exec, true)
        );
        let unknown = text(&exec, false);
        assert!(unknown.contains(" ?  "), "{unknown}");
        // The header's columns line up with the lines'.
        assert_eq!(TEXT_HEADER.find("CONTAINER"), line.find("8d3c2f1b4a5e"));
        assert_eq!(TEXT_HEADER.find("EXE"), line.find("/usr/bin/curl"));
    }

    #[test]
    fn access_and_exit_helpers() {
        assert_eq!(access_string(ACCESS_READ), "read");
        assert_eq!(access_string(ACCESS_READ | ACCESS_WRITE), "read,write");
        assert_eq!(access_string(0), "none");
        assert_eq!(exit_status(0), ExitStatus::Code(0));
        assert_eq!(exit_status(1 << 8), ExitStatus::Code(1));
        assert_eq!(exit_status(9), ExitStatus::Signal(9));
        assert_eq!(net_addr(99, &[0; 16]), None);
        let mapped = Ipv6Addr::from([0, 0, 0, 0, 0, 0xffff, 0x0a58, 0x0017]).octets();
        assert_eq!(
            net_addr(AF_INET6, &mapped),
            Some(IpAddr::V4(Ipv4Addr::new(10, 88, 0, 23)))
        );
    }

    #[test]
    fn summary_counts_per_cgroup_and_always_reports_losses() {
        let t = table();
        let cg = cgroup();
        let mut summary = Summary::default();
        let syscall = Event::Syscall(SyscallEvent {
            header: header(EventKind::Syscall),
            nr: 0,
            _pad: 0,
        });
        let mut other_header = header(EventKind::File);
        other_header.cgroup_id = 1;
        let file = Event::File(FileEvent {
            header: other_header,
            access: 1,
            flags: 0,
            open_flags: 0,
            path_len: 0,
            path: [0; MAX_PATH],
        });
        for _ in 0..3 {
            summary.record(
                &syscall,
                &Attributed {
                    process: t.peek(4242),
                    cgroup: Some(&cg),
                    pod: None,
                    unrecognised_runtime: None,
                },
            );
        }
        summary.record(
            &file,
            &Attributed {
                process: None,
                cgroup: None,
                pod: None,
                unrecognised_runtime: None,
            },
        );
        assert_eq!(summary.cgroups(), 2);

        let mut stats = PipelineStats::default();
        stats.events[EventKind::Syscall as usize] = 3;
        stats.events[EventKind::File as usize] = 1;
        stats.failures[FailureReason::UnknownCgroup as usize] = 1;
        let mut lost = [0u64; SLOTS];
        lost[EventKind::Exec as usize] = 2;

        let json = summary.render(OutputFormat::Json, &stats, &lost, 0);
        assert_eq!(json.len(), 3);
        let first: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
        assert_eq!(first["cgroup_id"], 1);
        assert_eq!(first["cgroup_path"], serde_json::Value::Null);
        let second: serde_json::Value = serde_json::from_str(&json[1]).unwrap();
        assert_eq!(second["events"]["syscall"], 3);
        assert_eq!(second["container_id"], CID);
        let totals: serde_json::Value = serde_json::from_str(&json[2]).unwrap();
        assert_eq!(totals["kind"], "totals");
        assert_eq!(totals["lost"]["exec"], 2);
        assert_eq!(totals["lost_total"], 2);
        assert_eq!(totals["attribution_failures"]["unknown_cgroup"], 1);

        let text = summary
            .render(OutputFormat::Text, &stats, &lost, 0)
            .join("\n");
        assert!(text.contains("4 events in 2 cgroups; 2 lost"), "{text}");
        assert!(text.contains("(unknown cgroup)"), "{text}");
        assert!(text.contains("lost (ring buffer full): exec=2"), "{text}");
        assert!(
            text.contains("attribution failures: unknown_cgroup=1"),
            "{text}"
        );
        assert!(text.contains("8d3c2f1b4a5e"), "{text}");
    }
}
