//! x86_64 syscall numbers to names, for `observe` output and learned profiles.
//!
//! The numbers are the x86_64 ABI (`arch/x86/entry/syscalls/syscall_64.tbl` in the kernel),
//! which never renumbers: a name, once assigned, keeps its number. Numbers 336 to 423 are
//! not used on x86_64 (the range was skipped so that every architecture's new syscalls
//! share numbers from 424 on). Other architectures number differently, so on them this
//! table answers nothing rather than something wrong.

/// Syscalls 0 ..= 335.
#[cfg(target_arch = "x86_64")]
const LOW: &[&str] = &[
    "read",
    "write",
    "open",
    "close",
    "stat",
    "fstat",
    "lstat",
    "poll",
    "lseek",
    "mmap",
    "mprotect",
    "munmap",
    "brk",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "ioctl",
    "pread64",
    "pwrite64",
    "readv",
    "writev",
    "access",
    "pipe",
    "select",
    "sched_yield",
    "mremap",
    "msync",
    "mincore",
    "madvise",
    "shmget",
    "shmat",
    "shmctl",
    "dup",
    "dup2",
    "pause",
    "nanosleep",
    "getitimer",
    "alarm",
    "setitimer",
    "getpid",
    "sendfile",
    "socket",
    "connect",
    "accept",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "shutdown",
    "bind",
    "listen",
    "getsockname",
    "getpeername",
    "socketpair",
    "setsockopt",
    "getsockopt",
    "clone",
    "fork",
    "vfork",
    "execve",
    "exit",
    "wait4",
    "kill",
    "uname",
    "semget",
    "semop",
    "semctl",
    "shmdt",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "fcntl",
    "flock",
    "fsync",
    "fdatasync",
    "truncate",
    "ftruncate",
    "getdents",
    "getcwd",
    "chdir",
    "fchdir",
    "rename",
    "mkdir",
    "rmdir",
    "creat",
    "link",
    "unlink",
    "symlink",
    "readlink",
    "chmod",
    "fchmod",
    "chown",
    "fchown",
    "lchown",
    "umask",
    "gettimeofday",
    "getrlimit",
    "getrusage",
    "sysinfo",
    "times",
    "ptrace",
    "getuid",
    "syslog",
    "getgid",
    "setuid",
    "setgid",
    "geteuid",
    "getegid",
    "setpgid",
    "getppid",
    "getpgrp",
    "setsid",
    "setreuid",
    "setregid",
    "getgroups",
    "setgroups",
    "setresuid",
    "getresuid",
    "setresgid",
    "getresgid",
    "getpgid",
    "setfsuid",
    "setfsgid",
    "getsid",
    "capget",
    "capset",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigqueueinfo",
    "rt_sigsuspend",
    "sigaltstack",
    "utime",
    "mknod",
    "uselib",
    "personality",
    "ustat",
    "statfs",
    "fstatfs",
    "sysfs",
    "getpriority",
    "setpriority",
    "sched_setparam",
    "sched_getparam",
    "sched_setscheduler",
    "sched_getscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "mlock",
    "munlock",
    "mlockall",
    "munlockall",
    "vhangup",
    "modify_ldt",
    "pivot_root",
    "_sysctl",
    "prctl",
    "arch_prctl",
    "adjtimex",
    "setrlimit",
    "chroot",
    "sync",
    "acct",
    "settimeofday",
    "mount",
    "umount2",
    "swapon",
    "swapoff",
    "reboot",
    "sethostname",
    "setdomainname",
    "iopl",
    "ioperm",
    "create_module",
    "init_module",
    "delete_module",
    "get_kernel_syms",
    "query_module",
    "quotactl",
    "nfsservctl",
    "getpmsg",
    "putpmsg",
    "afs_syscall",
    "tuxcall",
    "security",
    "gettid",
    "readahead",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "tkill",
    "time",
    "futex",
    "sched_setaffinity",
    "sched_getaffinity",
    "set_thread_area",
    "io_setup",
    "io_destroy",
    "io_getevents",
    "io_submit",
    "io_cancel",
    "get_thread_area",
    "lookup_dcookie",
    "epoll_create",
    "epoll_ctl_old",
    "epoll_wait_old",
    "remap_file_pages",
    "getdents64",
    "set_tid_address",
    "restart_syscall",
    "semtimedop",
    "fadvise64",
    "timer_create",
    "timer_settime",
    "timer_gettime",
    "timer_getoverrun",
    "timer_delete",
    "clock_settime",
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "exit_group",
    "epoll_wait",
    "epoll_ctl",
    "tgkill",
    "utimes",
    "vserver",
    "mbind",
    "set_mempolicy",
    "get_mempolicy",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
    "kexec_load",
    "waitid",
    "add_key",
    "request_key",
    "keyctl",
    "ioprio_set",
    "ioprio_get",
    "inotify_init",
    "inotify_add_watch",
    "inotify_rm_watch",
    "migrate_pages",
    "openat",
    "mkdirat",
    "mknodat",
    "fchownat",
    "futimesat",
    "newfstatat",
    "unlinkat",
    "renameat",
    "linkat",
    "symlinkat",
    "readlinkat",
    "fchmodat",
    "faccessat",
    "pselect6",
    "ppoll",
    "unshare",
    "set_robust_list",
    "get_robust_list",
    "splice",
    "tee",
    "sync_file_range",
    "vmsplice",
    "move_pages",
    "utimensat",
    "epoll_pwait",
    "signalfd",
    "timerfd_create",
    "eventfd",
    "fallocate",
    "timerfd_settime",
    "timerfd_gettime",
    "accept4",
    "signalfd4",
    "eventfd2",
    "epoll_create1",
    "dup3",
    "pipe2",
    "inotify_init1",
    "preadv",
    "pwritev",
    "rt_tgsigqueueinfo",
    "perf_event_open",
    "recvmmsg",
    "fanotify_init",
    "fanotify_mark",
    "prlimit64",
    "name_to_handle_at",
    "open_by_handle_at",
    "clock_adjtime",
    "syncfs",
    "sendmmsg",
    "setns",
    "getcpu",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "finit_module",
    "sched_setattr",
    "sched_getattr",
    "renameat2",
    "seccomp",
    "getrandom",
    "memfd_create",
    "kexec_file_load",
    "bpf",
    "execveat",
    "userfaultfd",
    "membarrier",
    "mlock2",
    "copy_file_range",
    "preadv2",
    "pwritev2",
    "pkey_mprotect",
    "pkey_alloc",
    "pkey_free",
    "statx",
    "io_pgetevents",
    "rseq",
    "uretprobe",
];

/// First number of the shared range.
#[cfg(target_arch = "x86_64")]
const HIGH_BASE: u32 = 424;

/// Syscalls 424 ..= 469.
#[cfg(target_arch = "x86_64")]
const HIGH: &[&str] = &[
    "pidfd_send_signal",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "pidfd_open",
    "clone3",
    "close_range",
    "openat2",
    "pidfd_getfd",
    "faccessat2",
    "process_madvise",
    "epoll_pwait2",
    "mount_setattr",
    "quotactl_fd",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    "memfd_secret",
    "process_mrelease",
    "futex_waitv",
    "set_mempolicy_home_node",
    "cachestat",
    "fchmodat2",
    "map_shadow_stack",
    "futex_wake",
    "futex_wait",
    "futex_requeue",
    "statmount",
    "listmount",
    "lsm_get_self_attr",
    "lsm_set_self_attr",
    "lsm_list_modules",
    "mseal",
    "setxattrat",
    "getxattrat",
    "listxattrat",
    "removexattrat",
    "open_tree_attr",
    "file_getattr",
    "file_setattr",
];

/// Names of the agent's own numbers for sockets a plain `socket` entry must not cover
/// (see [`herdwatch_abi::SYSCALL_RAW_SOCKET`]): learned and judged like syscalls.
pub const RAW_SOCKET: &str = "socket_raw";
pub const PACKET_SOCKET: &str = "socket_packet";

fn pseudo(nr: u32) -> Option<&'static str> {
    match nr {
        herdwatch_abi::SYSCALL_RAW_SOCKET => Some(RAW_SOCKET),
        herdwatch_abi::SYSCALL_PACKET_SOCKET => Some(PACKET_SOCKET),
        _ => None,
    }
}

/// The name of syscall `nr`, when this build knows it.
#[cfg(target_arch = "x86_64")]
pub fn name(nr: u32) -> Option<&'static str> {
    if let Some(p) = pseudo(nr) {
        return Some(p);
    }
    let nr_usize = nr as usize;
    if nr_usize < LOW.len() {
        return Some(LOW[nr_usize]);
    }
    nr.checked_sub(HIGH_BASE)
        .and_then(|i| HIGH.get(i as usize))
        .copied()
}

/// The name of syscall `nr`, when this build knows it.
#[cfg(not(target_arch = "x86_64"))]
pub fn name(nr: u32) -> Option<&'static str> {
    pseudo(nr)
}

/// The name, or `syscall_<nr>` for numbers this build does not know (a newer kernel).
pub fn display(nr: u32) -> std::borrow::Cow<'static, str> {
    match name(nr) {
        Some(n) => std::borrow::Cow::Borrowed(n),
        None => std::borrow::Cow::Owned(format!("syscall_{nr}")),
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn well_known_numbers() {
        for (nr, want) in [
            (0, "read"),
            (1, "write"),
            (2, "open"),
            (39, "getpid"),
            (42, "connect"),
            (59, "execve"),
            (60, "exit"),
            (62, "kill"),
            (101, "ptrace"),
            (105, "setuid"),
            (117, "setresuid"),
            (126, "capset"),
            (165, "mount"),
            (231, "exit_group"),
            (257, "openat"),
            (272, "unshare"),
            (308, "setns"),
            (321, "bpf"),
            (322, "execveat"),
            (334, "rseq"),
            (335, "uretprobe"),
            (424, "pidfd_send_signal"),
            (425, "io_uring_setup"),
            (435, "clone3"),
            (437, "openat2"),
            (462, "mseal"),
            (469, "file_setattr"),
        ] {
            assert_eq!(name(nr), Some(want), "syscall {nr}");
        }
    }

    #[test]
    fn gaps_and_unknown_numbers_have_no_name() {
        assert_eq!(name(336), None);
        assert_eq!(name(423), None);
        assert_eq!(name(470), None);
        assert_eq!(name(u32::MAX), None);
        assert_eq!(display(400), "syscall_400");
        assert_eq!(display(59), "execve");
    }

    #[test]
    fn raw_and_packet_sockets_have_names_of_their_own() {
        assert_eq!(name(herdwatch_abi::SYSCALL_RAW_SOCKET), Some("socket_raw"));
        assert_eq!(
            name(herdwatch_abi::SYSCALL_PACKET_SOCKET),
            Some("socket_packet")
        );
        // Above every real syscall, inside the kernel's first-sighting bitmap.
        const {
            assert!(herdwatch_abi::SYSCALL_RAW_SOCKET > HIGH_BASE + HIGH.len() as u32);
            assert!(herdwatch_abi::SYSCALL_PACKET_SOCKET < herdwatch_abi::MAX_SYSCALL_NR);
        }
    }

    #[test]
    fn names_are_unique() {
        let mut all: Vec<&str> = LOW
            .iter()
            .chain(HIGH)
            .chain(&[RAW_SOCKET, PACKET_SOCKET])
            .copied()
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
