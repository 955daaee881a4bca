//! Bounding text that ends up in Kubernetes objects, whose schemas cap string lengths.

/// Shortens `s` to at most `max` bytes when it is longer, cutting on a character boundary
/// and ending it with `marker` (which counts towards `max`), so that a reader sees it was
/// cut.
pub fn truncate_marked(s: &mut String, max: usize, marker: &str) {
    if s.len() <= max {
        return;
    }
    let mut cut = max.saturating_sub(marker.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push_str(marker);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(s: &str, max: usize, marker: &str) -> String {
        let mut s = s.to_owned();
        truncate_marked(&mut s, max, marker);
        s
    }

    #[test]
    fn text_within_the_bound_is_left_alone() {
        assert_eq!(cut("wget", 4, "..."), "wget");
        assert_eq!(cut("", 0, "*"), "");
    }

    #[test]
    fn longer_text_is_cut_on_a_character_boundary_and_marked() {
        assert_eq!(cut("abcdefgh", 6, "..."), "abc...");
        assert_eq!(cut("abcdefgh", 5, ""), "abcde");
        // `é` is two bytes: a cut inside it moves before it.
        assert_eq!(cut("aébc", 3, "*"), "a*");
        assert_eq!(cut("aébc", 2, ""), "a");
        for max in 0..12 {
            assert!(cut("héllo wörld", max, "*").len() <= max.max(1));
        }
    }
}
