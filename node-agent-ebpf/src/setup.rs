//! The container runtime's set-up is not the workload.
//!
//! runc's init runs inside the container's cgroup before it execs the container's
//! entrypoint: it mounts, pivots its root, unshares and enters namespaces, installs
//! seccomp, changes its ids and caps, and opens the runtime's own state files on the host.
//! `runc exec` (kubectl exec, exec probes) does the same before it execs the command. None
//! of that is the workload's behaviour, so none of it may be learned, judged, or marked
//! as seen (a mark would hide the workload's own first use later).
//!
//! How the set-up is told from the workload, with what the kernel says and a container
//! cannot forge:
//! - A task is *set-up* when its parent is outside its cgroup and outside its pod, and its
//!   process has not yet made an *entry exec*. The runtime's init is a child of the runtime
//!   (runc, crun, the containerd shim) on the host.
//! - An entry exec is an exec by a task whose parent is outside its cgroup: the runtime's
//!   init becoming the entrypoint (or the exec session's command). From then on that
//!   process is the workload, and so is everything it starts (their parent is inside).
//! - A parent in a sibling cgroup of the same pod counts as inside: in a pod that shares
//!   its pid namespace, orphans are adopted by the sandbox's pause process, and they stay
//!   the workload's.
//! Only the paths that already cost something call this (a first sighting, a file open
//! about to be reported, an identity change), never the common syscall path.

use aya_ebpf::{macros::map, maps::HashMap};

use crate::common::{current_task, exec_file_name, kread, off, Error};

/// Processes (tgid) whose exec entered their cgroup from outside it. Deleted when the
/// process ends; a stale entry only makes a later process of that pid judged, never
/// hidden.
#[map]
static ENTERED: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// A task's cgroup v2 directory: (`task->cgroups->dfl_cgrp->kn`, its id).
#[inline(always)]
fn cgroup_node(task: usize) -> Result<(usize, u64), Error> {
    let css_set: usize = kread(task, off!(task_cgroups))?;
    let cgroup: usize = kread(css_set, off!(css_set_dfl_cgrp))?;
    let kn: usize = kread(cgroup, off!(cgroup_kn))?;
    Ok((kn, kread(kn, off!(kernfs_node_id))?))
}

/// The id of the cgroup v2 directory above `task`'s own.
#[inline(always)]
pub fn parent_cgroup_id(task: usize) -> Result<u64, Error> {
    let (kn, _) = cgroup_node(task)?;
    let parent: usize = kread(kn, off!(kernfs_node_parent))?;
    kread(parent, off!(kernfs_node_id))
}

/// Whether `task`'s parent is outside its cgroup `cgroup_id`. With `or_pod`, a parent in a
/// sibling cgroup (same parent directory: the same pod) counts as inside.
#[inline(always)]
fn parent_outside(task: usize, cgroup_id: u64, or_pod: bool) -> Result<bool, Error> {
    let parent: usize = kread(task, off!(task_real_parent))?;
    let (parent_kn, parent_cgroup) = cgroup_node(parent)?;
    if parent_cgroup == cgroup_id {
        return Ok(false);
    }
    if !or_pod {
        return Ok(true);
    }
    let (kn, _) = cgroup_node(task)?;
    let dir: usize = kread(kn, off!(kernfs_node_parent))?;
    let parent_dir: usize = kread(parent_kn, off!(kernfs_node_parent))?;
    Ok(dir != parent_dir)
}

/// Whether the current task, in cgroup `cgroup_id`, is the runtime setting up a container
/// or an exec into one. When the kernel's structures cannot be read, it is judged as the
/// workload: nothing is hidden on an error.
#[inline(never)]
pub fn in_runtime_setup(cgroup_id: u64) -> bool {
    let task = current_task();
    if !parent_outside(task, cgroup_id, true).unwrap_or(false) {
        return false;
    }
    // SAFETY: helper without arguments.
    let tgid = (unsafe { aya_ebpf::helpers::gen::bpf_get_current_pid_tgid() } >> 32) as u32;
    // SAFETY: a lookup in a map of plain integers.
    unsafe { ENTERED.get(&tgid) }.is_none()
}

/// At an exec by `task` in `cgroup_id`: an exec whose parent is outside the cgroup enters
/// it, and the process is the workload from now on. (The map holds one entry per live
/// entrypoint and exec session of the node, far below its size.)
#[inline(always)]
pub fn note_exec(task: usize, tgid: u32, cgroup_id: u64) {
    if parent_outside(task, cgroup_id, false).unwrap_or(false) {
        let _ = ENTERED.insert(&tgid, &1, 0);
    }
}

/// Whether the exec about to run is the runtime running itself again inside the
/// container's cgroup: runc's `runc exec` and `runc run` start their init by exec'ing a
/// copy of runc sealed in a memfd (`memfd:runc_cloned:/proc/self/exe`), or runc itself. It
/// is set-up, not an entry: it is not reported and does not enter. Only a task that has
/// not entered can be here (`in_runtime_setup`), so a workload process cannot use a file
/// of that name to hide.
#[inline(always)]
pub fn is_runtime_reexec(bprm: usize, cgroup_id: u64) -> bool {
    const MEMFD_RUNC: &[u8; 10] = b"memfd:runc";
    let name = exec_file_name(bprm).and_then(|name| kread::<[u8; 10]>(name, 0));
    match name {
        Ok(prefix) if &prefix == MEMFD_RUNC || prefix.starts_with(b"runc\0") => {
            in_runtime_setup(cgroup_id)
        }
        _ => false,
    }
}

/// The process `tgid` ended.
#[inline(always)]
pub fn forget(tgid: u32) {
    let _ = ENTERED.remove(&tgid);
}
