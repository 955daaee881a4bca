//! Fills [`KernelOffsets`] for the running kernel: struct members from its BTF. Every
//! program is a BTF tracepoint, so no tracepoint record layout (and no tracefs) is needed.

use herdwatch_abi::KernelOffsets;

use super::btf::{Btf, BtfError};

/// Why the offsets could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("kernel layout not supported: {0}")]
    Btf(#[from] BtfError),
}

/// How far past an overlay inode's VFS inode its upper dentry is kept; 0 (no layer told)
/// when the kernel has no overlayfs in its BTF or lays it out otherwise.
fn overlay_upper(btf: &Btf) -> u32 {
    let Ok(inode_size) = btf.struct_size("inode") else {
        return 0;
    };
    match (
        btf.offset_of("ovl_inode", &["vfs_inode"], inode_size),
        btf.offset_of("ovl_inode", &["__upperdentry"], 8),
    ) {
        (Ok(vfs), Ok(upper)) if upper > vfs => upper - vfs,
        _ => 0,
    }
}

/// Resolves every offset the programs use.
pub fn resolve(btf: &Btf) -> Result<KernelOffsets, OffsetsError> {
    const PTR: u32 = 8;
    let o = |s: &str, path: &[&str], size: u32| btf.offset_of(s, path, size);
    Ok(KernelOffsets {
        task_mm: o("task_struct", &["mm"], PTR)?,
        task_real_parent: o("task_struct", &["real_parent"], PTR)?,
        task_tgid: o("task_struct", &["tgid"], 4)?,
        task_start_boottime: o("task_struct", &["start_boottime"], 8)?,
        task_cred: o("task_struct", &["cred"], PTR)?,
        task_exit_code: o("task_struct", &["exit_code"], 4)?,
        task_signal: o("task_struct", &["signal"], PTR)?,
        signal_live: o("signal_struct", &["live"], 4)?,
        mm_arg_start: o("mm_struct", &["arg_start"], 8)?,
        mm_arg_end: o("mm_struct", &["arg_end"], 8)?,
        cred_euid: o("cred", &["euid"], 4)?,
        cred_egid: o("cred", &["egid"], 4)?,
        cred_fsuid: o("cred", &["fsuid"], 4)?,
        cred_fsgid: o("cred", &["fsgid"], 4)?,
        cred_cap_effective: o("cred", &["cap_effective"], 8)?,
        bprm_filename: o("linux_binprm", &["filename"], PTR)?,
        bprm_file: o("linux_binprm", &["file"], PTR)?,
        file_dentry: o("file", &["f_path", "dentry"], PTR)?,
        dentry_name: o("dentry", &["d_name", "name"], PTR)?,
        sock_family: o("sock", &["__sk_common", "skc_family"], 2)?,
        sock_daddr: o("sock", &["__sk_common", "skc_daddr"], 4)?,
        sock_dport: o("sock", &["__sk_common", "skc_dport"], 2)?,
        sock_v6_daddr: o("sock", &["__sk_common", "skc_v6_daddr"], 16)?,
        sock_rcv_saddr: o("sock", &["__sk_common", "skc_rcv_saddr"], 4)?,
        sock_num: o("sock", &["__sk_common", "skc_num"], 2)?,
        sock_v6_rcv_saddr: o("sock", &["__sk_common", "skc_v6_rcv_saddr"], 16)?,
        sock_protocol: o("sock", &["sk_protocol"], 2)?,
        sock_cgroup: o("sock", &["sk_cgrp_data", "cgroup"], PTR)?,
        cgroup_kn: o("cgroup", &["kn"], PTR)?,
        kernfs_node_id: o("kernfs_node", &["id"], 8)?,
        task_cgroups: o("task_struct", &["cgroups"], PTR)?,
        css_set_dfl_cgrp: o("css_set", &["dfl_cgrp"], PTR)?,
        kernfs_node_parent: o("kernfs_node", &["__parent"], PTR)
            .or_else(|_| o("kernfs_node", &["parent"], PTR))?,
        task_fs: o("task_struct", &["fs"], PTR)?,
        fs_pwd_mnt: o("fs_struct", &["pwd", "mnt"], PTR)?,
        fs_pwd_dentry: o("fs_struct", &["pwd", "dentry"], PTR)?,
        fs_root_mnt: o("fs_struct", &["root", "mnt"], PTR)?,
        fs_root_dentry: o("fs_struct", &["root", "dentry"], PTR)?,
        dentry_parent: o("dentry", &["d_parent"], PTR)?,
        task_thread_pid: o("task_struct", &["thread_pid"], PTR)?,
        pid_level: o("pid", &["level"], 4)?,
        // A flexible array since Linux 6.x; `numbers[1]` before.
        pid_numbers: o("pid", &["numbers"], 0).or_else(|_| o("pid", &["numbers"], 16))?,
        upid_nr: o("upid", &["nr"], 4)?,
        upid_size: btf.struct_size("upid")?,
        task_group_leader: o("task_struct", &["group_leader"], PTR)?,
        file_inode: o("file", &["f_inode"], PTR)?,
        inode_ino: o("inode", &["i_ino"], 8)?,
        inode_sb: o("inode", &["i_sb"], PTR)?,
        sb_dev: o("super_block", &["s_dev"], 4)?,
        sb_magic: o("super_block", &["s_magic"], 8)?,
        ovl_upper_from_inode: overlay_upper(btf),
    })
}
