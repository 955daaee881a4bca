//! From an attributed kernel event to the model's terms: the [`Event`] that learning and
//! evaluation take, and the workload container it belongs to.
//!
//! Everything here is pure. Kernel events that mean nothing to the model (exits, accepted
//! connections, failed or no-op identity changes, relative file paths) translate to
//! nothing, and so do events whose process is unknown: the model judges processes, and one
//! without an executable cannot be judged fairly.

use std::borrow::Cow;
use std::sync::Arc;

use herdwatch_abi::{
    Event as KernelEvent, ACCESS_CREATE, ACCESS_READ, ACCESS_TRUNCATE, ACCESS_WRITE, IPPROTO_TCP,
    IPPROTO_UDP, NET_CONNECT, NET_LISTEN, NET_UDP_SEND,
};
use herdwatch_model::net::Protocol;
use herdwatch_model::{Access, Event, EventKind, Process as ModelProcess, WorkloadKey};

use crate::attribution::argv::escape_bytes;
use crate::attribution::pipeline::Attributed;
use crate::attribution::pods::{ContainerKind, ContainerMeta, PodMeta};
use crate::attribution::proctable::Process;
use crate::capture::syscalls;
use crate::observe::net_addr;

/// Owner kinds a BehaviorProfile can target, and so the only workloads worth publishing
/// observations for (a bare pod, a static pod's `Node` owner or an orphaned ReplicaSet has
/// no profile to merge into).
pub const LEARNED_KINDS: [&str; 5] = ["Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"];

/// Identity syscalls that change the user id (the gid and capability ones do not).
const UID_SYSCALLS: [&str; 4] = ["setuid", "setreuid", "setresuid", "setfsuid"];

/// What an event did, with its text owned or borrowed from the kernel record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KindParts<'e> {
    Exec,
    File {
        path: Cow<'e, str>,
        access: Access,
    },
    Connect {
        ip: std::net::IpAddr,
        port: u16,
        protocol: Protocol,
    },
    Listen {
        port: u16,
        protocol: Protocol,
    },
    Syscall {
        name: Cow<'static, str>,
    },
    SetUid {
        uid: u32,
    },
}

impl KindParts<'_> {
    /// The same, owning its text.
    pub fn into_owned(self) -> KindParts<'static> {
        match self {
            KindParts::Exec => KindParts::Exec,
            KindParts::File { path, access } => KindParts::File {
                path: Cow::Owned(path.into_owned()),
                access,
            },
            KindParts::Connect { ip, port, protocol } => KindParts::Connect { ip, port, protocol },
            KindParts::Listen { port, protocol } => KindParts::Listen { port, protocol },
            KindParts::Syscall { name } => KindParts::Syscall { name },
            KindParts::SetUid { uid } => KindParts::SetUid { uid },
        }
    }

    /// The model's view, borrowing from `self`.
    pub fn kind(&self) -> EventKind<'_> {
        match self {
            KindParts::Exec => EventKind::Exec,
            KindParts::File { path, access } => EventKind::File {
                path,
                access: *access,
            },
            KindParts::Connect { ip, port, protocol } => EventKind::Connect {
                ip: *ip,
                port: *port,
                protocol: *protocol,
            },
            KindParts::Listen { port, protocol } => EventKind::Listen {
                port: *port,
                protocol: *protocol,
            },
            KindParts::Syscall { name } => EventKind::Syscall { name },
            KindParts::SetUid { uid } => EventKind::SetUid { uid: *uid },
        }
    }
}

fn protocol(p: u8) -> Option<Protocol> {
    match p {
        IPPROTO_TCP => Some(Protocol::Tcp),
        IPPROTO_UDP => Some(Protocol::Udp),
        _ => None,
    }
}

/// `ACCESS_*` bits as the model's [`Access`].
pub fn access(bits: u32) -> Access {
    let mut a = Access::NONE;
    for (bit, kind) in [
        (ACCESS_READ, Access::READ),
        (ACCESS_WRITE, Access::WRITE),
        (ACCESS_CREATE, Access::CREATE),
        (ACCESS_TRUNCATE, Access::TRUNCATE),
    ] {
        if bits & bit != 0 {
            a |= kind;
        }
    }
    a
}

/// What `event` did in the model's terms, or None when the model has no word for it.
pub fn kind_parts(event: &KernelEvent) -> Option<KindParts<'_>> {
    match event {
        KernelEvent::Exec(_) => Some(KindParts::Exec),
        KernelEvent::Exit(_) => None,
        KernelEvent::Syscall(e) => Some(KindParts::Syscall {
            name: syscalls::display(e.nr),
        }),
        KernelEvent::Net(e) => {
            let protocol = protocol(e.protocol)?;
            match e.op {
                NET_CONNECT | NET_UDP_SEND => Some(KindParts::Connect {
                    ip: net_addr(e.family, &e.daddr)?,
                    port: e.dport,
                    protocol,
                }),
                NET_LISTEN => Some(KindParts::Listen {
                    port: e.sport,
                    protocol,
                }),
                // An accepted connection is the far side's egress, and the listening port
                // was seen when it was opened.
                _ => None,
            }
        }
        KernelEvent::File(e) => {
            let path = escape_bytes(e.path());
            // Relative to a working directory the agent does not know: learning it would
            // record a meaningless prefix, and judging it could only raise false alarms.
            if !path.starts_with('/') {
                return None;
            }
            Some(KindParts::File {
                path,
                access: access(e.access),
            })
        }
        KernelEvent::Identity(e) => {
            let name = syscalls::name(e.syscall_nr)?;
            // The effective uid is the one permission checks use; for setuid() by root the
            // real one follows it.
            (e.ret == 0 && UID_SYSCALLS.contains(&name) && e.old_uid != e.new_uid)
                .then_some(KindParts::SetUid { uid: e.new_uid })
        }
    }
}

/// The header's uid when the kernel did not know it.
const UNKNOWN_ID: u32 = u32::MAX;

/// The process part of a model event, with the arguments it borrows.
#[derive(Clone, Debug, Default)]
pub struct ProcessParts {
    /// Arguments, filled for exec events only: only they are judged by their arguments.
    pub argv: Vec<String>,
}

/// The model's view of `process` doing `event`. `in_image` is the drift probe's answer
/// for an exec (None otherwise).
pub fn model_process<'a>(
    event: &KernelEvent,
    process: &'a Process,
    parts: &'a mut ProcessParts,
    in_image: Option<bool>,
) -> ModelProcess<'a> {
    parts.argv.clear();
    if matches!(event, KernelEvent::Exec(_)) {
        parts.argv.extend(process.argv.iter().map(str::to_owned));
    }
    // An exec is judged by its effective uid: a set-user-ID program runs as its owner.
    let uid = match (event, event.header().uid) {
        (KernelEvent::Exec(e), _) if e.euid != UNKNOWN_ID => e.euid,
        (_, UNKNOWN_ID) => process.uid,
        (_, uid) => uid,
    };
    ModelProcess {
        exe: &process.exe,
        file_name: process.file_name.as_deref(),
        argv: &parts.argv,
        uid,
        exec_session: process.exec_session,
        in_image,
    }
}

/// The pod container an attributed event belongs to.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub pod: &'a Arc<PodMeta>,
    pub container: &'a ContainerMeta,
    /// The runtime's id of the container (from its cgroup).
    pub container_id: &'a Arc<str>,
}

/// The pod container of `a`, when the pod watch knows it.
pub fn target<'a>(a: &Attributed<'a>) -> Option<Target<'a>> {
    let pod = a.pod?;
    Some(Target {
        pod: &pod.pod,
        container: pod.container()?,
        container_id: &a.cgroup?.kind.container()?.id,
    })
}

/// The learning key of a container: its workload container and image digest. None for
/// containers herdwatch does not learn: ephemeral debug containers (`kubectl debug` is not
/// the workload's behaviour), workloads no profile can target, and containers whose image
/// digest is not known yet.
pub fn learning_key(pod: &PodMeta, container: &ContainerMeta) -> Option<(WorkloadKey, String)> {
    if container.kind == ContainerKind::Ephemeral
        || !LEARNED_KINDS.contains(&pod.workload.kind.as_str())
    {
        return None;
    }
    let digest = container.image_digest.as_deref()?;
    Some((
        WorkloadKey {
            namespace: pod.namespace.clone(),
            owner_kind: pod.workload.kind.clone(),
            owner_name: pod.workload.name.clone(),
            container: container.name.clone(),
        },
        digest.to_owned(),
    ))
}

/// A model event together with what it borrows, built once per kernel event.
pub fn model_event<'a>(kind: &'a KindParts<'_>, process: ModelProcess<'a>) -> Event<'a> {
    Event {
        process,
        kind: kind.kind(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::argv::Argv;
    use crate::attribution::pods::Workload;
    use crate::attribution::proctable::{NewProcess, ProcessTable, TableConfig};
    use crate::synth;
    use herdwatch_abi::{AF_INET6, NET_ACCEPT};

    fn pod(kind: &str) -> PodMeta {
        PodMeta {
            uid: "uid-1".into(),
            namespace: "shop".into(),
            name: "web-1".into(),
            labels: Default::default(),
            workload: Workload {
                kind: kind.into(),
                name: "web".into(),
                uid: Some("uid-web".into()),
            },
            containers: vec![container(ContainerKind::App, Some("sha256:ab"))],
        }
    }

    fn container(kind: ContainerKind, digest: Option<&str>) -> ContainerMeta {
        ContainerMeta {
            name: "nginx".into(),
            kind,
            image: "nginx:1".into(),
            image_id: String::new(),
            image_digest: digest.map(str::to_owned),
            runtime: None,
            container_ids: vec!["c1".into()],
        }
    }

    #[test]
    fn learning_keys_only_for_targetable_workloads_with_a_digest() {
        let p = pod("Deployment");
        let (key, digest) = learning_key(&p, &p.containers[0]).unwrap();
        assert_eq!(
            key,
            WorkloadKey {
                namespace: "shop".into(),
                owner_kind: "Deployment".into(),
                owner_name: "web".into(),
                container: "nginx".into(),
            }
        );
        assert_eq!(digest, "sha256:ab");
        for kind in ["Pod", "Node", "ReplicaSet"] {
            let p = pod(kind);
            assert!(learning_key(&p, &p.containers[0]).is_none(), "{kind}");
        }
        let p = pod("StatefulSet");
        assert!(
            learning_key(&p, &container(ContainerKind::Ephemeral, Some("sha256:ab"))).is_none()
        );
        assert!(learning_key(&p, &container(ContainerKind::App, None)).is_none());
        assert!(learning_key(&p, &container(ContainerKind::Init, Some("sha256:ab"))).is_some());
    }

    #[test]
    fn kernel_events_become_model_kinds() {
        assert_eq!(
            kind_parts(&synth::file(
                1,
                2,
                b"/etc/passwd",
                ACCESS_READ | ACCESS_WRITE
            )),
            Some(KindParts::File {
                path: "/etc/passwd".into(),
                access: Access::READ | Access::WRITE
            })
        );
        assert_eq!(kind_parts(&synth::file(1, 2, b"rel/x", ACCESS_READ)), None);
        assert_eq!(
            kind_parts(&synth::net(
                1,
                2,
                NET_CONNECT,
                IPPROTO_TCP,
                [10, 0, 0, 1],
                5432
            )),
            Some(KindParts::Connect {
                ip: "10.0.0.1".parse().unwrap(),
                port: 5432,
                protocol: Protocol::Tcp
            })
        );
        assert_eq!(
            kind_parts(&synth::net(
                1,
                2,
                NET_UDP_SEND,
                IPPROTO_UDP,
                [10, 96, 0, 10],
                53
            )),
            Some(KindParts::Connect {
                ip: "10.96.0.10".parse().unwrap(),
                port: 53,
                protocol: Protocol::Udp
            })
        );
        assert_eq!(
            kind_parts(&synth::net(
                1,
                2,
                NET_ACCEPT,
                IPPROTO_TCP,
                [10, 0, 0, 9],
                80
            )),
            None
        );
        let mut listen = synth::net(1, 2, NET_LISTEN, IPPROTO_TCP, [0; 4], 0);
        if let KernelEvent::Net(e) = &mut listen {
            e.sport = 8080;
        }
        assert_eq!(
            kind_parts(&listen),
            Some(KindParts::Listen {
                port: 8080,
                protocol: Protocol::Tcp
            })
        );
        // A v4-mapped peer of a dual-stack socket is its IPv4 address.
        let mut v6 = synth::net(1, 2, NET_CONNECT, IPPROTO_TCP, [0; 4], 443);
        if let KernelEvent::Net(e) = &mut v6 {
            e.family = AF_INET6;
            e.daddr = std::net::Ipv6Addr::from([0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0001]).octets();
        }
        assert!(matches!(
            kind_parts(&v6),
            Some(KindParts::Connect { ip, .. }) if ip == "10.0.0.1".parse::<std::net::IpAddr>().unwrap()
        ));
        assert_eq!(
            kind_parts(&synth::syscall(1, 2, 59)),
            Some(KindParts::Syscall {
                name: "execve".into()
            })
        );
        assert!(kind_parts(&synth::exit(1, 2, 0)).is_none());
    }

    #[test]
    fn only_effective_uid_changes_that_took_effect_are_set_uid() {
        // setuid(105) from 0 to 101.
        assert_eq!(
            kind_parts(&synth::identity(1, 2, 105, 0, 101)),
            Some(KindParts::SetUid { uid: 101 })
        );
        assert_eq!(kind_parts(&synth::identity(1, 2, 105, 101, 101)), None);
        // setgid is not a uid change.
        assert_eq!(kind_parts(&synth::identity(1, 2, 106, 0, 101)), None);
        let mut failed = synth::identity(1, 2, 105, 1000, 0);
        if let KernelEvent::Identity(e) = &mut failed {
            e.ret = -1;
        }
        assert_eq!(kind_parts(&failed), None);
    }

    #[test]
    fn processes_carry_argv_only_for_execs() {
        let mut table = ProcessTable::new(TableConfig::default());
        let p = table
            .exec(NewProcess {
                pid: 7,
                ppid: 1,
                start_time_ns: 1,
                uid: 33,
                exe: "/usr/bin/wget".into(),
                file_name: Some("busybox".into()),
                argv: Argv::from_nul_block(b"wget\0-q\0http://x\0", false),
                cgroup_id: 2,
                container: Some("c1".into()),
            })
            .clone();
        let mut parts = ProcessParts::default();
        let exec = synth::exec(7, 1, 33, 2, 1, b"/usr/bin/wget", b"wget\0");
        let m = model_process(&exec, &p, &mut parts, Some(false));
        assert_eq!(
            (m.exe, m.uid, m.in_image),
            ("/usr/bin/wget", 33, Some(false))
        );
        assert_eq!(m.argv, ["wget", "-q", "http://x"]);
        assert_eq!(m.file_name, Some("busybox"));
        let file = synth::file(7, 2, b"/x", ACCESS_READ);
        let m = model_process(&file, &p, &mut parts, None);
        assert!(m.argv.is_empty());
        let kind = kind_parts(&file).unwrap();
        let ev = model_event(&kind, m);
        assert_eq!(ev.kind_name(), "file");
    }
}
