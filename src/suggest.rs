//! "Did you mean": the one rule that picks the name a mistyped key, value, column or arm
//! most likely meant.
//!
//! A candidate is a likely typo of `word` when their Jaro-Winkler similarity is at least
//! 0.8, compared as written or with case, `_`, `-` and spaces ignored (`userId` for
//! `user_id`), or when at most two edits separate them (`budgt` for `budget`). The most
//! similar such candidate wins; the first of equals.

/// The candidate `word` most likely meant, if any is close enough to be a typo of it.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let normalised = normalise(word);
    let mut best: Option<(f64, &str)> = None;
    for candidate in candidates {
        let similarity = strsim::jaro_winkler(word, candidate)
            .max(strsim::jaro_winkler(&normalised, &normalise(candidate)));
        let likely = similarity >= 0.8 || strsim::levenshtein(word, candidate) <= 2;
        if likely && best.is_none_or(|(b, _)| similarity > b) {
            best = Some((similarity, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// `s` without case, `_`, `-` and spaces.
fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn keys_values_and_columns_find_what_they_meant() {
        assert_eq!(
            closest("budgt", ["strategy", "budget", "per_user"]),
            Some("budget")
        );
        assert_eq!(
            closest("uncertanty", ["random", "uncertainty"]),
            Some("uncertainty")
        );
        let columns = ["userId", "movieId", "rating", "timestamp"];
        assert_eq!(closest("user_id", columns), Some("userId"));
        assert_eq!(closest("ratings", columns), Some("rating"));
        assert_eq!(closest("time_stamp", columns), Some("timestamp"));
    }

    #[test]
    fn nothing_close_suggests_nothing() {
        assert_eq!(closest("zzz", ["strategy", "budget"]), None);
        assert_eq!(
            closest("price", ["userId", "movieId", "rating", "timestamp"]),
            None
        );
        assert_eq!(closest("x", []), None);
    }
}
