//! Turning kernel bytes (argv blocks, executable and file paths) into text.
//!
//! Neither argv nor paths are UTF-8 by contract, and herdwatch must neither crash on them nor
//! let them forge output (a newline inside an argument must not start a new `observe`
//! line). Valid UTF-8 passes through unchanged; each byte that is not part of a valid
//! sequence, and each control character, becomes `\xNN` (C1 controls, which are valid
//! UTF-8 but steer terminals, become `\u{NN}`). The rendering is lossless for everything
//! except text that already contains a literal `\xNN`, which reads the same as the escape:
//! a trade-off made so that ordinary arguments, regexes with backslashes included, read as
//! typed.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Renders `bytes` as text, escaping invalid UTF-8 and control characters.
/// Borrows when nothing needs escaping, which is the common case.
pub fn escape_bytes(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        if !s.chars().any(char::is_control) {
            return Cow::Borrowed(s);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(&mut out, c);
        }
        for b in chunk.invalid() {
            push_byte_escape(&mut out, *b);
        }
    }
    Cow::Owned(out)
}

fn push_char(out: &mut String, c: char) {
    if !c.is_control() {
        out.push(c);
    } else if (c as u32) < 0x80 {
        push_byte_escape(out, c as u8);
    } else {
        // Writing to a String cannot fail.
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    }
}

fn push_byte_escape(out: &mut String, b: u8) {
    let _ = write!(out, "\\x{b:02x}");
}

/// A decoded argument vector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Argv {
    /// The arguments, escaped as [`escape_bytes`] does.
    pub args: Box<[Box<str>]>,
    /// The kernel (or /proc) cut the block short: the last argument may be partial and
    /// later ones are missing.
    pub truncated: bool,
}

impl Argv {
    /// Decodes arguments that are already split.
    pub fn from_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>, truncated: bool) -> Self {
        let args = parts
            .into_iter()
            .map(|a| Box::from(escape_bytes(a).as_ref()))
            .collect();
        Argv { args, truncated }
    }

    /// Decodes a NUL-separated block, as in `/proc/<pid>/cmdline` or the exec event. A
    /// trailing NUL ends the last argument; it does not start an empty one.
    pub fn from_nul_block(block: &[u8], truncated: bool) -> Self {
        Self::from_parts(split_nul_block(block), truncated)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.args.iter().map(AsRef::as_ref)
    }

    /// One line for people: arguments separated by spaces, an argument that holds a space,
    /// a quote or nothing at all in single quotes, and `…` when the kernel truncated it.
    pub fn display(&self) -> String {
        let mut out = String::new();
        for (i, arg) in self.args.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            if arg.is_empty() || arg.contains([' ', '\'', '"']) {
                out.push('\'');
                out.push_str(&arg.replace('\'', "'\\''"));
                out.push('\'');
            } else {
                out.push_str(arg);
            }
        }
        if self.truncated {
            out.push('…');
        }
        out
    }
}

/// Splits a NUL-separated block; an empty block has no arguments.
pub fn split_nul_block(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    let empty = block.is_empty();
    block.split(|b| *b == 0).filter(move |_| !empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, prop_assert, prop_assert_eq, Just};

    #[test]
    fn clean_utf8_is_borrowed_unchanged() {
        let e = escape_bytes("/usr/bin/curl -s 'ünïcødé' a\\b".as_bytes());
        assert!(matches!(e, Cow::Borrowed(_)));
        assert_eq!(e, "/usr/bin/curl -s 'ünïcødé' a\\b");
    }

    #[test]
    fn invalid_utf8_becomes_hex_escapes() {
        assert_eq!(escape_bytes(b"/tmp/\xff\xfeevil"), "/tmp/\\xff\\xfeevil");
        // A truncated multi-byte sequence at the end (the kernel cut the path).
        assert_eq!(escape_bytes(b"caf\xc3"), "caf\\xc3");
        // Valid text after an invalid byte is kept.
        assert_eq!(escape_bytes(b"\x80\xc3\xa9t\xc3\xa9"), "\\x80été");
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        assert_eq!(
            escape_bytes(b"a\nb\tc\x1b[31m\x7f"),
            "a\\x0ab\\x09c\\x1b[31m\\x7f"
        );
        assert_eq!(escape_bytes("x\u{9b}y".as_bytes()), "x\\u{9b}y");
    }

    #[test]
    fn argv_block_splits_on_nul() {
        let argv = Argv::from_nul_block(b"sh\0-c\0echo hi\0", false);
        assert_eq!(argv.iter().collect::<Vec<_>>(), ["sh", "-c", "echo hi"]);
        assert!(!argv.truncated);
    }

    #[test]
    fn argv_keeps_empty_arguments_but_not_the_trailing_nul() {
        let argv = Argv::from_nul_block(b"printf\0\0x\0", false);
        assert_eq!(argv.iter().collect::<Vec<_>>(), ["printf", "", "x"]);
        // Without the trailing NUL (a truncated block) the last argument is still there.
        let argv = Argv::from_nul_block(b"printf\0par", true);
        assert_eq!(argv.iter().collect::<Vec<_>>(), ["printf", "par"]);
        assert!(argv.truncated);
    }

    #[test]
    fn empty_block_has_no_arguments() {
        assert!(Argv::from_nul_block(b"", false).args.is_empty());
        assert!(Argv::from_nul_block(b"\0", false).args.is_empty());
    }

    #[test]
    fn non_utf8_argv_is_escaped_per_argument() {
        let argv = Argv::from_nul_block(b"cat\0/data/\xe9t\xe9\0", false);
        assert_eq!(
            argv.iter().collect::<Vec<_>>(),
            ["cat", "/data/\\xe9t\\xe9"]
        );
    }

    #[test]
    fn display_quotes_and_marks_truncation() {
        let argv = Argv::from_nul_block(b"sh\0-c\0echo it's\0\0", true);
        assert_eq!(argv.display(), "sh -c 'echo it'\\''s' ''…");
        let argv = Argv::from_nul_block(b"ls\0-l\0", false);
        assert_eq!(argv.display(), "ls -l");
    }

    proptest::proptest! {
        /// Whatever bytes a process puts in its arguments, and whatever length the event
        /// claims, decoding neither panics nor grows without bound: at most one argument per
        /// byte, each byte escaped to at most four.
        #[test]
        fn any_block_decodes_within_bounds(
            block in proptest::collection::vec(
                proptest::prop_oneof![Just(0u8), Just(b'a'), Just(b'\n'), Just(0xc3u8), any::<u8>()],
                0..600,
            ),
            claimed_len in any::<u32>(),
            truncated in any::<bool>(),
        ) {
            let argv = Argv::from_nul_block(&block, truncated);
            prop_assert!(argv.args.len() <= block.len());
            let text: usize = argv.args.iter().map(|a| a.len()).sum();
            prop_assert!(text <= 4 * block.len());
            prop_assert!(argv.iter().all(|a| !a.chars().any(char::is_control)));
            prop_assert_eq!(argv.truncated, truncated);

            let mut ev = herdwatch_abi::ExecEvent {
                flags: 0,
                filename_len: claimed_len,
                argv_len: claimed_len,
                ..empty_exec()
            };
            let n = block.len().min(herdwatch_abi::MAX_ARGV);
            ev.argv[..n].copy_from_slice(&block[..n]);
            let from_event = Argv::from_parts(ev.argv(), ev.argv_truncated());
            prop_assert!(from_event.args.len() <= herdwatch_abi::MAX_ARGV);
            if (claimed_len as usize) >= n {
                prop_assert_eq!(from_event.args, Argv::from_nul_block(&ev.argv[..(claimed_len as usize).min(herdwatch_abi::MAX_ARGV)], false).args);
            }
        }
    }

    fn empty_exec() -> herdwatch_abi::ExecEvent {
        match crate::synth::exec(0, 0, 0, 0, 0, b"", b"") {
            herdwatch_abi::Event::Exec(e) => e,
            _ => unreachable!("synth::exec makes an exec"),
        }
    }

    #[test]
    fn argv_from_the_abi_event_matches_the_block_decoder() {
        let mut ev = herdwatch_abi::ExecEvent {
            flags: herdwatch_abi::EXEC_ARGV_TRUNCATED,
            filename_len: 0,
            argv_len: 0,
            ..empty_exec()
        };
        let block = b"curl\0-s\0http://x\xff\0";
        ev.argv[..block.len()].copy_from_slice(block);
        ev.argv_len = block.len() as u32;
        let argv = Argv::from_parts(ev.argv(), ev.argv_truncated());
        assert_eq!(
            argv.iter().collect::<Vec<_>>(),
            ["curl", "-s", "http://x\\xff"]
        );
        assert!(argv.truncated);
        assert_eq!(argv, Argv::from_nul_block(block, true));
    }
}
