//! Fills [`KernelOffsets`] for the running kernel: struct members from its BTF, tracepoint
//! record fields from the tracepoint's format file.

use std::collections::HashMap;
use std::path::Path;

use herdwatch_abi::KernelOffsets;

use super::btf::{Btf, BtfError};

/// The tracepoints whose records the network programs read.
pub const SOCK_CATEGORY: &str = "sock";
pub const SOCK_STATE_NAME: &str = "inet_sock_set_state";
pub const SOCK_SEND_NAME: &str = "sock_send_length";

/// Why the offsets could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("kernel layout not supported: {0}")]
    Btf(#[from] BtfError),
    #[error("cannot read tracepoint format {path}: {source}")]
    Format {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tracepoint {tracepoint} has no field {field} of {size} bytes (format changed?)")]
    Field {
        tracepoint: String,
        field: &'static str,
        size: u32,
    },
}

/// Resolves every offset the programs use.
pub fn resolve(btf: &Btf, tracefs: &Path) -> Result<KernelOffsets, OffsetsError> {
    const PTR: u32 = 8;
    let o = |s: &str, path: &[&str], size: u32| btf.offset_of(s, path, size);
    let mut offsets = KernelOffsets {
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
        sock_cgroup: o("sock", &["sk_cgrp_data", "cgroup"], PTR)?,
        cgroup_kn: o("cgroup", &["kn"], PTR)?,
        kernfs_node_id: o("kernfs_node", &["id"], 8)?,
        ..KernelOffsets::default()
    };

    let state = Format::read(tracefs, SOCK_CATEGORY, SOCK_STATE_NAME)?;
    offsets.tp_skaddr = state.field("skaddr", 8)?;
    offsets.tp_oldstate = state.field("oldstate", 4)?;
    offsets.tp_newstate = state.field("newstate", 4)?;
    offsets.tp_sport = state.field("sport", 2)?;
    offsets.tp_dport = state.field("dport", 2)?;
    offsets.tp_family = state.field("family", 2)?;
    offsets.tp_protocol = state.field("protocol", 2)?;
    offsets.tp_saddr = state.field("saddr", 4)?;
    offsets.tp_daddr = state.field("daddr", 4)?;
    offsets.tp_saddr_v6 = state.field("saddr_v6", 16)?;
    offsets.tp_daddr_v6 = state.field("daddr_v6", 16)?;
    let send = Format::read(tracefs, SOCK_CATEGORY, SOCK_SEND_NAME)?;
    offsets.tp_send_sk = send.field("sk", 8)?;
    offsets.tp_send_protocol = send.field("protocol", 2)?;
    offsets.tp_send_ret = send.field("ret", 4)?;
    Ok(offsets)
}

/// The fields of one tracepoint's record.
struct Format {
    tracepoint: String,
    fields: HashMap<String, (u32, u32)>,
}

impl Format {
    fn read(tracefs: &Path, category: &str, name: &str) -> Result<Format, OffsetsError> {
        let tracepoint = format!("{category}/{name}");
        let path = tracefs.join("events").join(&tracepoint).join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| OffsetsError::Format {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Format {
            tracepoint,
            fields: parse_format(&text),
        })
    }

    /// The offset of `field`, which must be `size` bytes.
    fn field(&self, field: &'static str, size: u32) -> Result<u32, OffsetsError> {
        match self.fields.get(field) {
            Some(&(offset, actual)) if actual == size => Ok(offset),
            _ => Err(OffsetsError::Field {
                tracepoint: self.tracepoint.clone(),
                field,
                size,
            }),
        }
    }
}

/// Field name → (offset, size) from a tracepoint format file, whose lines read
/// `field:__u8 saddr[4];<TAB>offset:32;<TAB>size:4;<TAB>signed:0;`.
pub fn parse_format(text: &str) -> HashMap<String, (u32, u32)> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in line.split(';').map(str::trim) {
            if let Some(d) = part.strip_prefix("field:") {
                decl = Some(d);
            } else if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse().ok();
            }
        }
        if let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) {
            // The name is the declaration's last word, without an array suffix.
            let name = decl.rsplit([' ', '*']).next().unwrap_or(decl);
            let name = name.split('[').next().unwrap_or(name);
            fields.insert(name.to_owned(), (offset, size));
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_format_file() {
        let text = "name: inet_sock_set_state\nID: 2287\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\
            \tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
            \tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n\n\
            print fmt: \"family=%s\", REC->family\n";
        let fields = parse_format(text);
        assert_eq!(fields["common_type"], (0, 2));
        assert_eq!(fields["skaddr"], (8, 8));
        assert_eq!(fields["saddr_v6"], (40, 16));
        assert_eq!(fields.len(), 3);
    }
}
