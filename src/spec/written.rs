//! Closed choices (the unit variants of a pipeline file's enums: `loss`, `refit`, `space`,
//! `uncertainty`) are shown exactly as they are written in YAML: by their serde names, so
//! each name is defined once, by its enum's `rename_all`.

use std::fmt;

use serde::Serialize;

use crate::plan::{DiversitySpace, UncertaintyMode};
use crate::scoring::Loss;
use crate::spec::schema::RefitChoice;

/// `choice` as written in YAML: its serde name.
pub fn written_name(choice: &impl Serialize) -> String {
    match serde_json::to_value(choice) {
        Ok(serde_json::Value::String(name)) => name,
        other => format!("{other:?}"),
    }
}

/// Displays each of the closed choices as written ([`written_name`]).
macro_rules! display_as_written {
    ($($choice:ty),+ $(,)?) => {$(
        impl fmt::Display for $choice {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&written_name(self))
            }
        }
    )+};
}

display_as_written!(Loss, RefitChoice, DiversitySpace, UncertaintyMode);

#[cfg(test)]
mod tests {
    use super::*;

    /// Each choice reads back from the name it is shown with.
    fn reads_back<T>(choices: &[T])
    where
        T: fmt::Display + serde::de::DeserializeOwned + PartialEq + fmt::Debug,
    {
        for choice in choices {
            let read: T = serde_yaml::from_str(&choice.to_string()).unwrap();
            assert_eq!(&read, choice);
        }
    }

    #[test]
    fn closed_choices_read_back_from_the_names_they_are_shown_with() {
        reads_back(&Loss::ALL);
        reads_back(&[
            RefitChoice::NewLabels,
            RefitChoice::Rehearsal,
            RefitChoice::AllLabels,
        ]);
        reads_back(&[DiversitySpace::Text, DiversitySpace::Factors]);
        reads_back(&[
            UncertaintyMode::Ensemble,
            UncertaintyMode::McDropout,
            UncertaintyMode::None,
        ]);
        assert_eq!(Loss::CrossEntropy.to_string(), "cross_entropy");
        assert_eq!(UncertaintyMode::McDropout.to_string(), "mc_dropout");
    }
}
