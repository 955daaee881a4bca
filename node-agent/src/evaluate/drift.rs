//! Drift: whether an executed file comes from the container's image.
//!
//! A container's root filesystem is an overlay: the image's layers read-only below, and a
//! writable upper directory on top that receives every file created or changed after the
//! container started. So an executable that exists in the upper directory was written (or
//! modified) after start, and one on another mount (an emptyDir, a tmpfs, a memfd under
//! `/dev/fd`) was never in the image at all. Both are drift.
//!
//! [`DriftProbe`] reads the container's mount table once (`/proc/<pid>/mountinfo` of any of
//! its processes): the root mount's `upperdir=` and the other mount points. Each exec then
//! costs one `lstat` of the path under the upper directory, reached through the host's root
//! (`/proc/1/root` with the host's pid namespace), so the agent needs no host mount of the
//! runtime's state directory. Answers are `None` when the agent cannot tell: a relative
//! path, a root that is not an overlay, a container whose processes are all gone.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// What the probe keeps of a container's mounts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerMounts {
    /// The overlay upper directory of the root, as a host path.
    pub upperdir: Option<String>,
    /// Mount points other than the root (`/data`, `/tmp`, `/etc/hosts`, …), longest first.
    pub others: Vec<String>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = oct.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                if let Ok(b) = u8::try_from(value) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a process's `/proc/<pid>/mountinfo` (proc(5)): the root mount's overlay upper
/// directory and every other mount point.
pub fn parse_mountinfo(text: &str) -> ContainerMounts {
    let mut mounts = ContainerMounts::default();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4).map(unescape) else {
            continue;
        };
        if mount_point != "/" {
            mounts.others.push(mount_point);
            continue;
        }
        let mut fields = right.split(' ');
        let fstype = fields.next().unwrap_or_default();
        let options = fields.nth(1).unwrap_or_default();
        // A later mount on "/" hides the earlier one: the last line wins.
        mounts.upperdir = (fstype == "overlay")
            .then(|| {
                options
                    .split(',')
                    .find_map(|o| o.strip_prefix("upperdir="))
                    .map(unescape)
            })
            .flatten();
    }
    mounts
        .others
        .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    mounts.others.dedup();
    mounts
}

fn under(path: &str, mount_point: &str) -> bool {
    path == mount_point
        || path
            .strip_prefix(mount_point)
            .is_some_and(|rest| rest.starts_with('/') || mount_point.ends_with('/'))
}

/// Where an executable path lives, as far as the mount table tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location<'a> {
    /// On another mount than the root: not from the image.
    OtherMount,
    /// On the root overlay: in the image unless the upper directory has it.
    Root { upperdir: &'a str },
    /// Unknown: not an overlay root, or a relative path.
    Unknown,
}

/// Where `exe` lives in a container with `mounts`.
pub fn locate<'a>(mounts: &'a ContainerMounts, exe: &str) -> Location<'a> {
    if !exe.starts_with('/') {
        return Location::Unknown;
    }
    if mounts.others.iter().any(|m| under(exe, m)) {
        return Location::OtherMount;
    }
    match &mounts.upperdir {
        Some(upperdir) => Location::Root { upperdir },
        None => Location::Unknown,
    }
}

/// Containers whose mounts are cached; cleared when full.
const MAX_CONTAINERS: usize = 4096;
/// Reads of a container's mount table tried before giving up on it.
const MAX_ATTEMPTS: u8 = 8;

/// Answers "is this executable in the image?" for exec events.
///
/// The mount table is read through a process of the container, and the processes of an
/// exec session are often gone before their exec event is handled (`sh -c 'cp …; ./x'`
/// lasts milliseconds). So the table is read as soon as any event of the container is
/// seen ([`DriftProbe::prime`]), while its long-lived processes are there to show it.
#[derive(Debug)]
pub struct DriftProbe {
    proc_root: PathBuf,
    /// Where the host's root filesystem is visible (upper directories are host paths).
    host_root: PathBuf,
    mounts: HashMap<Arc<str>, Arc<ContainerMounts>>,
    /// Containers whose table could not be read yet, and how often that was tried.
    attempts: HashMap<Arc<str>, u8>,
}

impl DriftProbe {
    pub fn new(proc_root: impl Into<PathBuf>, host_root: impl Into<PathBuf>) -> Self {
        DriftProbe {
            proc_root: proc_root.into(),
            host_root: host_root.into(),
            mounts: HashMap::new(),
            attempts: HashMap::new(),
        }
    }

    /// The mount table of `container` as one of `pids` shows it, if one of them is still
    /// in the container.
    fn read_mounts(&self, container: &str, pids: &[u32]) -> Option<ContainerMounts> {
        // Only a process in the container shows its mount table: a parent outside it (the
        // runtime) shows the host's.
        let text = pids.iter().find_map(|pid| {
            let dir = self.proc_root.join(pid.to_string());
            let cgroup = std::fs::read_to_string(dir.join("cgroup")).ok()?;
            if !cgroup.contains(container) {
                return None;
            }
            std::fs::read_to_string(dir.join("mountinfo")).ok()
        })?;
        Some(parse_mountinfo(&text))
    }

    fn mounts_of(&mut self, container: &Arc<str>, pids: &[u32]) -> Option<Arc<ContainerMounts>> {
        if let Some(m) = self.mounts.get(container) {
            return Some(m.clone());
        }
        let attempts = self.attempts.entry(container.clone()).or_insert(0);
        if *attempts >= MAX_ATTEMPTS {
            return None;
        }
        *attempts += 1;
        let mounts = Arc::new(self.read_mounts(container, pids)?);
        self.attempts.remove(container);
        if self.mounts.len() >= MAX_CONTAINERS {
            self.mounts.clear();
            self.attempts.clear();
        }
        self.mounts.insert(container.clone(), mounts.clone());
        Some(mounts)
    }

    /// Reads the mount table of `container` through `pid` (one of its processes) unless it
    /// is known already. Cheap once known.
    pub fn prime(&mut self, container: &Arc<str>, pid: u32) {
        if !self.mounts.contains_key(container) {
            self.mounts_of(container, &[pid]);
        }
    }

    /// Whether `exe`, just executed in `container` by one of `pids` (the process, then
    /// others of the container in case it is gone), comes from the image.
    pub fn in_image(&mut self, container: &Arc<str>, pids: &[u32], exe: &str) -> Option<bool> {
        // A program run from a memfd (the pipeline names it `/memfd:<name>`) was never a
        // file of the image.
        if exe.starts_with("/memfd:") {
            return Some(false);
        }
        let mounts = self.mounts_of(container, pids)?;
        match locate(&mounts, exe) {
            Location::OtherMount => Some(false),
            Location::Unknown => None,
            Location::Root { upperdir } => {
                let upper = self
                    .host_root
                    .join(upperdir.trim_start_matches('/'))
                    .join(exe.trim_start_matches('/'));
                match std::fs::symlink_metadata(&upper) {
                    Ok(_) => Some(false),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Some(true),
                    // ENOTDIR: a component is a file in the upper layer (nothing below it
                    // was written); anything else: cannot tell.
                    Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Some(true),
                    Err(_) => None,
                }
            }
        }
    }

    /// Forgets a container (it was removed).
    pub fn forget(&mut self, container: &str) {
        self.mounts.remove(container);
        self.attempts.remove(container);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
1563 1373 0:190 / / rw,relatime master:512 - overlay overlay rw,lowerdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/12/fs:/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/11/fs,upperdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/13/fs,workdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/13/work
1564 1563 0:192 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1565 1563 0:193 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
1570 1563 259:1 /var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/scratch /scratch\\040dir rw,relatime - ext4 /dev/nvme0n1p1 rw
1571 1563 259:1 /var/lib/kubelet/pods/u/etc-hosts /etc/hosts rw,relatime - ext4 /dev/nvme0n1p1 rw
";

    #[test]
    fn mountinfo_gives_the_upper_directory_and_other_mounts() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(
            m.upperdir.as_deref(),
            Some("/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/13/fs")
        );
        assert_eq!(m.others, ["/scratch dir", "/etc/hosts", "/proc", "/dev"]);
        let not_overlay = parse_mountinfo("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n");
        assert_eq!(not_overlay.upperdir, None);
    }

    #[test]
    fn paths_on_other_mounts_are_not_from_the_image() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(locate(&m, "/scratch dir/payload"), Location::OtherMount);
        assert_eq!(
            locate(&m, "/dev/fd/3"),
            Location::OtherMount,
            "fileless execution"
        );
        assert!(matches!(locate(&m, "/usr/bin/wget"), Location::Root { .. }));
        assert!(
            matches!(locate(&m, "/device"), Location::Root { .. }),
            "whole components"
        );
        assert_eq!(locate(&m, "./run.sh"), Location::Unknown);
    }

    #[test]
    fn octal_escapes() {
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/odd\\04"), "/odd\\04");
    }

    #[test]
    fn the_upper_directory_decides() {
        let dir = std::env::temp_dir().join(format!("herdwatch-drift-{}", std::process::id()));
        let proc_root = dir.join("proc");
        let host = dir.join("host");
        let upper = "/var/lib/snap/13/fs";
        std::fs::create_dir_all(proc_root.join("42")).unwrap();
        std::fs::create_dir_all(host.join("var/lib/snap/13/fs/tmp")).unwrap();
        std::fs::write(host.join("var/lib/snap/13/fs/tmp/dropper"), b"x").unwrap();
        std::fs::write(
            proc_root.join("42/cgroup"),
            "0::/kubepods/besteffort/podu/c1\n",
        )
        .unwrap();
        // The runtime that started the process: outside the container, with the host's mounts.
        std::fs::create_dir_all(proc_root.join("7")).unwrap();
        std::fs::write(
            proc_root.join("7/cgroup"),
            "0::/system.slice/containerd.service\n",
        )
        .unwrap();
        std::fs::write(
            proc_root.join("7/mountinfo"),
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n",
        )
        .unwrap();
        let mut probe = DriftProbe::new(&proc_root, &host);
        let c: Arc<str> = "c1".into();
        assert_eq!(
            probe.in_image(&c, &[7], "/tmp/dropper"),
            None,
            "a process outside the container says nothing about it"
        );
        std::fs::write(
            proc_root.join("42/mountinfo"),
            format!("1 0 0:1 / / rw - overlay overlay rw,lowerdir=/l,upperdir={upper},workdir=/w\n2 1 0:2 / /data rw - ext4 /dev/x rw\n"),
        )
        .unwrap();
        assert_eq!(probe.in_image(&c, &[7, 42], "/tmp/dropper"), Some(false));
        assert_eq!(probe.in_image(&c, &[42], "/usr/bin/wget"), Some(true));
        assert_eq!(probe.in_image(&c, &[42], "/data/tool"), Some(false));
        assert_eq!(probe.in_image(&c, &[42], "tool"), None);
        // Cached: the process may be gone by the next exec.
        std::fs::remove_dir_all(proc_root.join("42")).unwrap();
        assert_eq!(probe.in_image(&c, &[42], "/tmp/dropper"), Some(false));
        let gone: Arc<str> = "c2".into();
        assert_eq!(probe.in_image(&gone, &[4242], "/bin/sh"), None);

        // Primed by an event of a long-lived process, then asked about one already gone.
        let mut primed = DriftProbe::new(&proc_root, &host);
        std::fs::create_dir_all(proc_root.join("43")).unwrap();
        std::fs::write(
            proc_root.join("43/cgroup"),
            "0::/kubepods/besteffort/podu/c1\n",
        )
        .unwrap();
        std::fs::write(
            proc_root.join("43/mountinfo"),
            format!("1 0 0:1 / / rw - overlay overlay rw,upperdir={upper},workdir=/w\n"),
        )
        .unwrap();
        primed.prime(&c, 43);
        assert_eq!(primed.in_image(&c, &[9999], "/tmp/dropper"), Some(false));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
