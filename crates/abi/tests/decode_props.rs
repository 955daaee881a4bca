//! Property tests of the user-space side of the ABI: the ring-buffer decoder, the accessors
//! of the records it returns, and the hashes the kernel and the agent must agree on.
//!
//! Record contents are chosen by the workloads herdwatch watches (executable paths, argument
//! blocks, opened paths), and a mismatch between the eBPF object and the agent shows up as
//! records of unexpected kinds and lengths: no bytes may make the agent panic or read past
//! a record, and a record the kernel side writes must read back as written.

use std::mem::size_of;

use herdwatch_abi::*;
use proptest::prelude::*;

/// The size of the record of `kind`.
fn record_size(kind: EventKind) -> usize {
    match kind {
        EventKind::Exec => size_of::<ExecEvent>(),
        EventKind::Exit => size_of::<ExitEvent>(),
        EventKind::Syscall => size_of::<SyscallEvent>(),
        EventKind::Net => size_of::<NetEvent>(),
        EventKind::File => size_of::<FileEvent>(),
        EventKind::Identity => size_of::<IdentityEvent>(),
    }
}

/// The bytes of a decoded record, as the kernel side wrote them.
fn event_bytes(event: &Event) -> &[u8] {
    match event {
        Event::Exec(e) => as_bytes(e),
        Event::Exit(e) => as_bytes(e),
        Event::Syscall(e) => as_bytes(e),
        Event::Net(e) => as_bytes(e),
        Event::File(e) => as_bytes(e),
        Event::Identity(e) => as_bytes(e),
    }
}

/// A record of `kind` with every other byte zero. Built through the decoder rather than
/// field by field, so that a field added to a record does not break these tests; the
/// round trip below sets fields by name and checks them by name.
fn blank(kind: EventKind) -> Event {
    let mut bytes = vec![0u8; record_size(kind)];
    bytes[..4].copy_from_slice(&(kind as u32).to_ne_bytes());
    decode(&bytes).expect("a zeroed record of a known kind decodes")
}

/// FNV-1a 64, written out as the reference the kernel's hashes are checked against.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The part of `path` after its last `/`.
fn last_component(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

/// Bytes with the separators the parsers look for (NUL, `/`) common enough to matter, and
/// the start of a multi-byte UTF-8 sequence. Drawn as plain bytes and mapped: a strategy per
/// byte would make the 512-byte blocks slow to generate.
fn path_bytes(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), len).prop_map(|bytes| {
        bytes
            .into_iter()
            .map(|b| match b {
                0..=39 => 0,
                40..=79 => b'/',
                80..=89 => 0xc3,
                b => b,
            })
            .collect()
    })
}

/// [`path_bytes`] without NULs: a path or an argument as the kernel copies it.
fn string_bytes(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<u8>> {
    path_bytes(len).prop_map(|bytes| bytes.into_iter().map(|b| b.max(1)).collect())
}

/// A header kind: mostly the known ones and their neighbours, sometimes anything.
fn header_kind() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0..(EVENT_KIND_SLOTS + 1), 1 => any::<u32>()]
}

/// Bytes that start like a record: a header kind, then a length near that kind's record
/// size (short, exact, or with a tail), or any length at all.
fn record_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        header_kind(),
        prop_oneof![(-16i64..24).prop_map(Some), Just(None)],
        0..1600usize,
        any::<u64>(),
    )
        .prop_map(|(kind, delta, any_len, seed)| {
            let len = match (EventKind::from_u32(kind), delta) {
                (Some(k), Some(d)) => (record_size(k) as i64 + d).max(0) as usize,
                _ => any_len,
            };
            // Cheap, deterministic filler: proptest shrinks the seed, not 1400 bytes.
            let mut state = seed;
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    (state >> 56) as u8
                })
                .collect();
            let n = bytes.len().min(4);
            bytes[..n].copy_from_slice(&kind.to_ne_bytes()[..n]);
            bytes
        })
}

/// What the accessors of a decoded record may return, whatever its length fields say.
fn check_accessors(event: &Event) -> Result<(), TestCaseError> {
    match event {
        Event::Exec(e) => {
            prop_assert!(e.filename().len() <= MAX_PATH);
            let args: Vec<&[u8]> = e.argv().collect();
            prop_assert!(args.len() <= MAX_ARGV);
            prop_assert!(args.iter().map(|a| a.len()).sum::<usize>() <= MAX_ARGV);
            prop_assert!(args.iter().all(|a| !a.contains(&0)));
            if let Some(name) = e.real_file_name() {
                prop_assert!(!name.is_empty() && name.len() < MAX_FILE_NAME);
            }
            if let Some(dir) = e.working_directory() {
                prop_assert!(dir.starts_with(b"/"));
                prop_assert!(dir.len() <= CWD_DEPTH * CWD_COMPONENT);
                prop_assert!(!dir.contains(&0));
            }
        }
        Event::File(e) => prop_assert!(e.path().len() <= MAX_PATH),
        _ => {}
    }
    Ok(())
}

/// A record of each kind with its fields set from `fields`, and the values it must read
/// back: the path or argument list an exec or open carried.
#[derive(Clone, Debug)]
struct Written {
    header: EventHeader,
    kind: EventKind,
    path: Vec<u8>,
    args: Vec<Vec<u8>>,
    numbers: [u32; 8],
    addrs: [[u8; 16]; 2],
    start_times: [u64; 2],
}

fn written() -> impl Strategy<Value = Written> {
    let header =
        (any::<[u32; 5]>(), any::<u64>(), any::<u64>()).prop_map(|(ids, cg, t)| EventHeader {
            kind: 0,
            pid: ids[0],
            tid: ids[1],
            uid: ids[2],
            gid: ids[3],
            ppid: ids[4],
            cgroup_id: cg,
            ktime_ns: t,
        });
    // Arguments whose NUL-terminated block fits the record.
    let args = prop::collection::vec(string_bytes(0..=24), 0..24)
        .prop_filter("fits in the argv block", |args| {
            args.iter().map(|a| a.len() + 1).sum::<usize>() <= MAX_ARGV
        });
    (
        header,
        prop::sample::select(EventKind::ALL.to_vec()),
        string_bytes(0..=MAX_PATH - 1),
        args,
        any::<[u32; 8]>(),
        any::<[[u8; 16]; 2]>(),
        any::<[u64; 2]>(),
    )
        .prop_map(
            |(header, kind, path, args, numbers, addrs, start_times)| Written {
                header,
                kind,
                path,
                args,
                numbers,
                addrs,
                start_times,
            },
        )
}

impl Written {
    /// The record, written field by field as the eBPF programs fill it.
    fn record(&self) -> Event {
        let mut event = blank(self.kind);
        let n = self.numbers;
        match &mut event {
            Event::Exec(e) => {
                e.ppid = n[0];
                e.euid = n[1];
                e.egid = n[2];
                e.flags = n[3];
                e.start_time_ns = self.start_times[0];
                e.parent_start_time_ns = self.start_times[1];
                e.filename[..self.path.len()].copy_from_slice(&self.path);
                e.filename_len = self.path.len() as u32;
                let block: Vec<u8> = self
                    .args
                    .iter()
                    .flat_map(|a| a.iter().copied().chain([0]))
                    .collect();
                e.argv[..block.len()].copy_from_slice(&block);
                e.argv_len = block.len() as u32;
            }
            Event::Exit(e) => e.exit_code = n[0] as i32,
            Event::Syscall(e) => e.nr = n[0],
            Event::Net(e) => {
                e.op = n[0] as u8;
                e.family = n[1] as u8;
                e.protocol = n[2] as u8;
                e.sport = n[3] as u16;
                e.dport = n[4] as u16;
                e.saddr = self.addrs[0];
                e.daddr = self.addrs[1];
            }
            Event::File(e) => {
                e.access = n[0];
                e.flags = n[1];
                e.open_flags = n[2];
                e.path[..self.path.len()].copy_from_slice(&self.path);
                e.path_len = self.path.len() as u32;
            }
            Event::Identity(e) => {
                e.syscall_nr = n[0];
                e.ret = n[1] as i32;
                e.old_uid = n[2];
                e.old_gid = n[3];
                e.new_uid = n[4];
                e.new_gid = n[5];
                e.args = [n[6], n[7], n[0]];
            }
        }
        *event.header_mut() = EventHeader {
            kind: self.kind as u32,
            ..self.header
        };
        event
    }

    /// Checks a decoded record field by field against what was written.
    fn check(&self, event: &Event) -> Result<(), TestCaseError> {
        prop_assert_eq!(event.kind(), self.kind);
        prop_assert_eq!(
            *event.header(),
            EventHeader {
                kind: self.kind as u32,
                ..self.header
            }
        );
        let n = self.numbers;
        match event {
            Event::Exec(e) => {
                prop_assert_eq!((e.ppid, e.euid, e.egid, e.flags), (n[0], n[1], n[2], n[3]));
                prop_assert_eq!(
                    (e.start_time_ns, e.parent_start_time_ns),
                    (self.start_times[0], self.start_times[1])
                );
                prop_assert_eq!(e.filename(), &self.path[..]);
                let args: Vec<&[u8]> = e.argv().collect();
                // One empty argument makes the block "\0", which reads as no arguments (a
                // trailing NUL does not make an empty last argument).
                let want: Vec<&[u8]> = if self.args == [Vec::<u8>::new()] {
                    Vec::new()
                } else {
                    self.args.iter().map(Vec::as_slice).collect()
                };
                prop_assert_eq!(args, want);
            }
            Event::Exit(e) => prop_assert_eq!(e.exit_code, n[0] as i32),
            Event::Syscall(e) => prop_assert_eq!(e.nr, n[0]),
            Event::Net(e) => {
                prop_assert_eq!(
                    (e.op, e.family, e.protocol, e.sport, e.dport),
                    (n[0] as u8, n[1] as u8, n[2] as u8, n[3] as u16, n[4] as u16)
                );
                prop_assert_eq!((e.saddr, e.daddr), (self.addrs[0], self.addrs[1]));
            }
            Event::File(e) => {
                prop_assert_eq!((e.access, e.flags, e.open_flags), (n[0], n[1], n[2]));
                prop_assert_eq!(e.path(), &self.path[..]);
            }
            Event::Identity(e) => {
                prop_assert_eq!(
                    (
                        e.syscall_nr,
                        e.ret,
                        e.old_uid,
                        e.old_gid,
                        e.new_uid,
                        e.new_gid
                    ),
                    (n[0], n[1] as i32, n[2], n[3], n[4], n[5])
                );
                prop_assert_eq!(e.args, [n[6], n[7], n[0]]);
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The decoder is the header's kind and the record's size, and nothing else: shorter
    /// input is refused with the size it needed, an unknown kind is named, and a record is
    /// read from exactly its own bytes.
    #[test]
    fn any_bytes_decode_as_their_header_says(bytes in record_like_bytes()) {
        let decoded = decode(&bytes);
        let header_len = size_of::<EventHeader>();
        if bytes.len() < header_len {
            prop_assert_eq!(
                decoded.unwrap_err(),
                DecodeError::Truncated { kind: 0, len: bytes.len(), need: header_len }
            );
            return Ok(());
        }
        let kind = u32::from_ne_bytes(bytes[..4].try_into().unwrap());
        let Some(known) = EventKind::from_u32(kind) else {
            prop_assert_eq!(decoded.unwrap_err(), DecodeError::UnknownKind(kind));
            return Ok(());
        };
        let need = record_size(known);
        if bytes.len() < need {
            prop_assert_eq!(
                decoded.unwrap_err(),
                DecodeError::Truncated { kind, len: bytes.len(), need }
            );
            return Ok(());
        }
        let event = decoded.unwrap();
        prop_assert_eq!(event.kind(), known);
        prop_assert_eq!(event_bytes(&event), &bytes[..need]);
        check_accessors(&event)?;
    }

    /// A record written field by field reads back field by field, whatever follows it in
    /// the buffer; cut short anywhere, it is refused, never half read.
    #[test]
    fn written_records_read_back_and_cut_records_are_refused(
        written in written(),
        tail in prop::collection::vec(any::<u8>(), 0..16),
        cut in any::<prop::sample::Index>(),
    ) {
        let record = written.record();
        let mut bytes = event_bytes(&record).to_vec();
        let len = bytes.len();
        bytes.extend_from_slice(&tail);
        let event = decode(&bytes).unwrap();
        written.check(&event)?;
        prop_assert_eq!(event_bytes(&event), &bytes[..len]);

        let short = cut.index(len);
        let kind = if short < size_of::<EventHeader>() { 0 } else { written.kind as u32 };
        let need = if kind == 0 { size_of::<EventHeader>() } else { len };
        prop_assert_eq!(
            decode(&bytes[..short]).unwrap_err(),
            DecodeError::Truncated { kind, len: short, need }
        );
    }

    /// The kernel hashes an exec's path and its last component (`exe_hashes`) to look up
    /// the executable rules; the agent hashes the rules' paths with `ExeHashes::of`. Both
    /// must be FNV-1a of the path up to its length or its first NUL, whichever comes first.
    #[test]
    fn exe_hashes_are_fnv_of_the_path_up_to_its_end(
        bytes in path_bytes(0..=MAX_PATH),
        len in prop_oneof![0..=MAX_PATH + 8, any::<usize>()],
    ) {
        let mut path = [0u8; MAX_PATH];
        path[..bytes.len()].copy_from_slice(&bytes);
        let within = &path[..len.min(MAX_PATH)];
        let string = within.split(|&b| b == 0).next().unwrap_or(within);
        let name = last_component(string);
        let want = ExeHashes {
            path: fnv1a(string),
            path_len: string.len() as u16,
            name: fnv1a(name),
            name_len: name.len() as u16,
        };
        prop_assert_eq!(exe_hashes(&path, len), want);
        if string.len() < MAX_PATH {
            prop_assert_eq!(ExeHashes::of(string), Some(want));
        }
    }

    /// The kernel names `argv[0]` and `argv[1]` by their last component (`argv_names`);
    /// the agent splits the same block into arguments (`ExecEvent::argv`). A name the
    /// kernel reports must be the one the agent sees, or a denied program could pass under
    /// one and be judged under the other.
    #[test]
    fn argv_names_agree_with_the_agents_split(
        bytes in path_bytes(0..=MAX_ARGV),
        len in prop_oneof![0..=MAX_ARGV + 8, any::<usize>()],
    ) {
        let mut block = [0u8; MAX_ARGV];
        block[..bytes.len()].copy_from_slice(&bytes);
        let names = argv_names(&block, len);

        let within = &block[..len.min(MAX_ARGV)];
        let pieces: Vec<&[u8]> = within.split(|&b| b == 0).collect();
        // Every piece but the last ends with a NUL; the last may have been cut.
        let complete = (pieces.len() - 1).min(2);
        prop_assert_eq!(usize::from(names.complete), complete);
        let reported = [(names.argv0, names.argv0_len), (names.argv1, names.argv1_len)];

        let Event::Exec(mut exec) = blank(EventKind::Exec) else { unreachable!() };
        exec.argv = block;
        exec.argv_len = u32::try_from(len).unwrap_or(u32::MAX);
        let split: Vec<&[u8]> = exec.argv().collect();
        for (k, &(hash, hash_len)) in reported.iter().enumerate().take(complete) {
            let name = last_component(pieces[k]);
            prop_assert_eq!(
                (hash, usize::from(hash_len)),
                (fnv1a(name), name.len()),
                "argv[{}]", k
            );
            // The agent's split has the same argument (an empty block reads as none).
            prop_assert_eq!(split.get(k).copied().unwrap_or(b""), pieces[k], "argv[{}]", k);
        }
    }
}
