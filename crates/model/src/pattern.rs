//! The glob syntax of process rules.
//!
//! An executable path may be a glob, and an argument list is a [`ArgvPattern`]: a list of
//! globs, one per argument. Within one argument glob `*` matches any run of characters
//! (including none, and including `/`) and `?` exactly one character; every other character
//! matches itself.
//!
//! An executable path glob ([`path_glob_match`]) is judged against the path as the kernel
//! resolved it ([`normalize_path`]), and there `*` and `?` stop at `/`: `*` matches any run of
//! characters within one component, `?` one character other than `/`, and `**` any run of
//! characters across components (`/opt/app/*` matches `/opt/app/run` but neither
//! `/opt/app/a/b` nor `/opt/app/../../tmp/x`; `/opt/app/**` matches both of the first two).
//! Before, `*` crossed `/` in executable paths too: a glob that relied on it now says `**`. A token that is exactly `**` matches any number of whole arguments, including
//! none. So `["python3", "-m", "*"]` allows `python3 -m http.server` but not
//! `python3 -c 'code'`, and `["nginx", "**"]` allows nginx with any arguments.
//!
//! Learning writes patterns too, for multi-call binaries: `["sh", "**"]` for busybox run as
//! `sh` (see [`crate::policy::applet_pattern`]), with arguments turned into tokens by
//! [`literal_token`].

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Whether the glob `pattern` matches all of `text`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    // Position after the last `*` seen, and the text position it is currently stretched to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || (p[pi] != b'*' && p[pi] == t[ti])) {
            // `?` consumes one byte; paths and arguments are treated as bytes, which is how the
            // kernel hands them over.
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi + 1, ti));
            pi += 1;
        } else if let Some((after_star, stretched)) = star {
            pi = after_star;
            ti = stretched + 1;
            star = Some((after_star, stretched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// `path` as the kernel resolved it, lexically: `//` collapsed, `.` components dropped, `..`
/// removing the component before it (and staying at `/` above the root), no trailing `/`.
/// Links are not followed (the kernel reports the path a program was started by). A relative
/// path (not starting with `/`) comes back unchanged: it cannot be judged by path, and each
/// caller decides what it means (see [`crate::ProfileIndex::allows_process`] and
/// [`crate::policy::Deny::Drift`]). Borrows when `path` is already normal.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    if !path.starts_with('/') || is_normal_path(path) {
        return Cow::Borrowed(path);
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Cow::Borrowed("/");
    }
    let mut out = String::with_capacity(path.len());
    for c in parts {
        out.push('/');
        out.push_str(c);
    }
    Cow::Owned(out)
}

fn is_normal_path(path: &str) -> bool {
    path == "/"
        || path
            .split('/')
            .skip(1)
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Whether the executable path glob `pattern` matches all of `path` (see the module docs:
/// `*` and `?` stop at `/`, `**` crosses it). Takes the path as given: normalise it first.
///
/// Dynamic programming over the pattern's elements × the path's bytes with one row, so the
/// work is at most their product whatever either holds.
pub fn path_glob_match(pattern: &str, path: &str) -> bool {
    if !is_glob(pattern) {
        return pattern == path;
    }
    let p = pattern.as_bytes();
    let t = path.as_bytes();
    // row[j]: the pattern read so far matches exactly `t[..j]`.
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    let mut i = 0;
    while i < p.len() {
        let mut alive = false;
        match p[i] {
            b'*' if p.get(i + 1) == Some(&b'*') => {
                // `**`, or a longer run of stars: any run of bytes.
                while p.get(i + 1) == Some(&b'*') {
                    i += 1;
                }
                let mut seen = false;
                for cell in row.iter_mut() {
                    seen |= *cell;
                    *cell = seen;
                }
                alive = seen;
            }
            b'*' => {
                for j in 0..row.len() {
                    if !row[j] && j > 0 && row[j - 1] && t[j - 1] != b'/' {
                        row[j] = true;
                    }
                    alive |= row[j];
                }
            }
            c => {
                for j in (1..row.len()).rev() {
                    let byte_ok = if c == b'?' {
                        t[j - 1] != b'/'
                    } else {
                        t[j - 1] == c
                    };
                    row[j] = row[j - 1] && byte_ok;
                    alive |= row[j];
                }
                row[0] = false;
            }
        }
        if !alive {
            return false;
        }
        i += 1;
    }
    row[t.len()]
}

/// Whether `s` contains glob syntax, i.e. is not matched only by itself.
pub fn is_glob(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// The token that matches any number of whole arguments, including none.
pub const ANY_ARGUMENTS: &str = "**";

/// Most tokens an argument pattern may have: the CRD schema's `maxItems` for `argv`.
pub const MAX_TOKENS: usize = 64;

/// Most `**` tokens an argument pattern may have: a CEL rule on `argv` in the CRD. Matching
/// stays linear without it; the cap keeps patterns readable and their cost small.
pub const MAX_ANY_ARGUMENTS: usize = 8;

/// Longest token, in bytes: the CRD schema's `maxLength` for an `argv` item (which counts
/// characters, never more than bytes).
pub const MAX_TOKEN_LEN: usize = 1024;

/// A token that matches the argument `arg`, for a pattern learned from an observed argument
/// list. The syntax has no escapes, so a `*` or `?` in `arg` becomes `?`: the token then also
/// matches arguments of the same length that differ in those bytes, which is the least it
/// can over-match (a `**` argument becomes `??`, one argument of two bytes). An argument
/// longer than [`MAX_TOKEN_LEN`] is cut, and the token ends in `*` so that it still matches.
pub fn literal_token(arg: &str) -> String {
    let mut token: String = arg
        .chars()
        .map(|c| if matches!(c, '*' | '?') { '?' } else { c })
        .collect();
    crate::text::truncate_marked(&mut token, MAX_TOKEN_LEN, "*");
    token
}

/// A pattern over a whole argument list (`argv[0]` included).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ArgvPattern(pub Vec<String>);

impl ArgvPattern {
    /// Whether this pattern matches `argv`.
    pub fn matches<S: AsRef<str>>(&self, argv: &[S]) -> bool {
        match_tokens(&self.0, argv)
    }
}

/// Whether `tokens` match all of `argv`, in O(tokens × arguments) glob matches whatever the
/// pattern: a profile is written by a tenant and an argument list by a process, and neither
/// may make the agent's work per exec grow faster than their sizes. It walks the tokens
/// once, keeping the set of argument positions the tokens so far can end at; a `**` opens
/// every position from the first reachable one on (a run of them is one), any other token
/// moves each reachable position one argument on when it matches that argument.
fn match_tokens<S: AsRef<str>>(tokens: &[String], argv: &[S]) -> bool {
    let n = argv.len();
    let mut reach = vec![false; n + 1];
    reach[0] = true;
    let mut after_any = false;
    for token in tokens {
        if token == ANY_ARGUMENTS {
            if !after_any {
                let mut open = false;
                for r in reach.iter_mut() {
                    open |= *r;
                    *r = open;
                }
            }
            after_any = true;
            continue;
        }
        after_any = false;
        let mut next = vec![false; n + 1];
        let mut any = false;
        for (j, arg) in argv.iter().enumerate() {
            if reach[j] && glob_match(token, arg.as_ref()) {
                next[j + 1] = true;
                any = true;
            }
        }
        if !any {
            return false;
        }
        reach = next;
    }
    reach[n]
}

impl fmt::Display for ArgvPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, tok) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if tok.is_empty() || tok.contains(char::is_whitespace) {
                write!(f, "{tok:?}")?;
            } else {
                f.write_str(tok)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn glob_basics() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything/at/all"));
        assert!(glob_match("/usr/bin/python3*", "/usr/bin/python3.12"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*.conf", "/etc/nginx/nginx.conf"));
        assert!(!glob_match("*.conf", "/etc/nginx/nginx.conf.bak"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn paths_are_normalised_as_the_kernel_resolves_them() {
        assert_eq!(normalize_path("//dev/shm/x"), "/dev/shm/x");
        assert_eq!(normalize_path("/usr/../tmp/x"), "/tmp/x");
        assert_eq!(normalize_path("/opt/app/../../tmp/x"), "/tmp/x");
        assert_eq!(normalize_path("/../../x"), "/x");
        assert_eq!(normalize_path("/./usr/bin/./env/"), "/usr/bin/env");
        assert_eq!(normalize_path("/.."), "/");
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(
            normalize_path("./x/../y"),
            "./x/../y",
            "relative: left to the caller"
        );
        assert!(matches!(normalize_path("/usr/bin/env"), Cow::Borrowed(_)));
    }

    #[test]
    fn path_globs_stop_at_slash() {
        assert!(path_glob_match("/opt/app/*", "/opt/app/run"));
        assert!(!path_glob_match("/opt/app/*", "/opt/app/a/b"));
        assert!(!path_glob_match(
            "/opt/app/*",
            &normalize_path("/opt/app/../../tmp/x")
        ));
        assert!(path_glob_match("/opt/app/**", "/opt/app/a/b"));
        assert!(path_glob_match("/usr/bin/python3*", "/usr/bin/python3.12"));
        assert!(path_glob_match("/usr/*/python?", "/usr/bin/python3"));
        assert!(!path_glob_match("/usr/bin?python3", "/usr/bin/python3"));
        assert!(path_glob_match("/usr/bin/env", "/usr/bin/env"));
        assert!(!path_glob_match("*", "/x"));
        assert!(path_glob_match("**", "/x"));
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![Just("/"), Just("."), Just(".."), Just("a"), Just("b")],
            0..12,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent_and_leaves_no_dot_components(p in path()) {
            let abs = format!("/{p}");
            let n = normalize_path(&abs).into_owned();
            prop_assert_eq!(normalize_path(&n), n.as_str());
            prop_assert!(n.starts_with('/'));
            let slashed = format!("{n}/");
            prop_assert!(!slashed.contains("//") || n == "/");
            prop_assert!(!slashed.contains("/./") && !slashed.contains("/../"), "{}", n);
            if !p.starts_with('/') {
                prop_assert_eq!(normalize_path(&p), p.as_str(), "relative paths stay as they are");
            }
        }

        #[test]
        fn a_single_star_never_crosses_slash(
            prefix in "[ab/]{0,4}",
            middle in "[ab/]{0,4}",
            suffix in "[ab/]{0,4}",
        ) {
            let pattern = format!("{prefix}*{suffix}");
            let text = format!("{prefix}{middle}{suffix}");
            let matched = path_glob_match(&pattern, &text);
            prop_assert_eq!(matched, glob_match_no_star_crossing(&pattern, &text));
            if !middle.contains('/') {
                prop_assert!(matched, "{} matches {}", pattern, text);
            }
        }
    }

    /// The same question answered by brute force: some split of `text` puts a `/`-free run at
    /// the `*` of `pattern` (one `*`, no `?`).
    fn glob_match_no_star_crossing(pattern: &str, text: &str) -> bool {
        let (pre, suf) = pattern.split_once('*').unwrap();
        text.len() >= pre.len() + suf.len()
            && text.starts_with(pre)
            && text.ends_with(suf)
            && !text[pre.len()..text.len() - suf.len()].contains('/')
    }

    #[test]
    fn literal_tokens_match_their_argument_and_stay_within_the_schema() {
        for arg in ["wget", "", "-/wget", "a*b", "w?et", "**", "é*"] {
            let token = literal_token(arg);
            assert!(glob_match(&token, arg), "{arg:?} → {token:?}");
            assert!(
                ArgvPattern(vec![token.clone()]).matches(&[arg]),
                "{arg:?} → {token:?}"
            );
        }
        assert_eq!(literal_token("wget"), "wget");
        assert_eq!(literal_token("a*b"), "a?b");
        assert!(!glob_match(&literal_token("a*b"), "anything-b"));
        let double_star = ArgvPattern(vec![literal_token("**")]);
        assert!(!double_star.matches(&["nc", "-l"]), "not any arguments");
        assert!(!double_star.matches::<&str>(&[]));

        let long = "é".repeat(MAX_TOKEN_LEN);
        let token = literal_token(&long);
        assert!(token.len() <= MAX_TOKEN_LEN && token.ends_with('*'));
        assert!(glob_match(&token, &long));
    }

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn argv_patterns() {
        let p = ArgvPattern(argv("python3 -m *"));
        assert!(p.matches(&argv("python3 -m http.server")));
        assert!(!p.matches(&argv("python3 -c code")));
        assert!(
            !p.matches(&argv("python3 -m a b")),
            "one token matches one argument"
        );

        let any = ArgvPattern(argv("nginx **"));
        assert!(any.matches(&argv("nginx")));
        assert!(any.matches(&argv("nginx -g daemon off;")));

        let middle = ArgvPattern(argv("java ** -jar /app/*.jar"));
        assert!(middle.matches(&argv("java -Xmx1g -Dx=y -jar /app/svc.jar")));
        assert!(!middle.matches(&argv("java -jar /tmp/evil.jar")));
        assert_eq!(middle.to_string(), "java ** -jar /app/*.jar");
    }

    /// The plain recursive matcher the linear one replaced, kept as the reference it must
    /// agree with.
    fn reference<S: AsRef<str>>(tokens: &[String], argv: &[S]) -> bool {
        match tokens.split_first() {
            None => argv.is_empty(),
            Some((tok, rest)) if tok == ANY_ARGUMENTS => {
                (0..=argv.len()).any(|skip| reference(rest, &argv[skip..]))
            }
            Some((tok, rest)) => match argv.split_first() {
                Some((arg, args)) => glob_match(tok, arg.as_ref()) && reference(rest, args),
                None => false,
            },
        }
    }

    #[test]
    fn many_double_stars_against_many_arguments_are_linear() {
        // 20 literals between `**`s against 200 arguments that never match the last one:
        // the recursive matcher explores a number of splits exponential in the `**`s.
        let mut tokens = Vec::new();
        for _ in 0..20 {
            tokens.push(ANY_ARGUMENTS.to_owned());
            tokens.push("a".to_owned());
        }
        tokens.push("never".to_owned());
        let argv: Vec<String> = (0..200).map(|_| "a".to_owned()).collect();
        assert!(!ArgvPattern(tokens.clone()).matches(&argv));
        tokens.pop();
        assert!(ArgvPattern(tokens).matches(&argv));
    }

    mod properties {
        use super::*;

        fn token() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("**".to_owned()),
                Just("*".to_owned()),
                Just("a".to_owned()),
                Just("b".to_owned()),
                Just("a*".to_owned()),
                Just("?".to_owned()),
            ]
        }

        proptest! {
            #[test]
            fn the_linear_matcher_agrees_with_the_recursive_one(
                tokens in prop::collection::vec(token(), 0..8),
                argv in prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("ab"), Just("")], 0..8),
            ) {
                prop_assert_eq!(ArgvPattern(tokens.clone()).matches(&argv), reference(&tokens, &argv));
            }
        }
    }
}
