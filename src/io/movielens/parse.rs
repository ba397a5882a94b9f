//! The MovieLens text formats, one line (or CSV record) at a time: pure functions from text
//! to rows, with reasons that say what a line should have looked like.

use std::borrow::Cow;

/// One rating.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct RatingRow {
    pub user: i64,
    pub item: i64,
    pub rating: f32,
    pub timestamp: i64,
}

/// One movie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct MovieRow {
    pub id: i64,
    pub title: String,
    pub genres: Vec<String>,
}

/// Why a line could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum LineError {
    /// The line does not have the format's shape; the text says what was expected.
    Malformed(String),
    /// The rating parsed, but as NaN or an infinity (the text is the rating as written).
    NonFiniteRating(String),
}

/// Text of a line or field: UTF-8 when it is valid UTF-8, else Latin-1 (ml-100k and ml-1m
/// titles are Latin-1; ml-10m is mostly UTF-8), decided per line.
pub(super) fn decode_text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

/// Genres of a `|`-separated list, kept verbatim; an empty field is no genre.
pub(super) fn split_genres(field: &str) -> Vec<String> {
    if field.is_empty() {
        Vec::new()
    } else {
        field.split('|').map(str::to_string).collect()
    }
}

/// A rating from its four fields as text.
pub(super) fn rating_fields(
    user: &str,
    item: &str,
    rating: &str,
    timestamp: &str,
) -> Result<RatingRow, LineError> {
    let int = |what: &str, text: &str| {
        text.trim()
            .parse::<i64>()
            .map_err(|_| LineError::Malformed(format!("{what} `{text}` is not an integer")))
    };
    let user = int("user id", user)?;
    let item = int("movie id", item)?;
    let value = rating
        .trim()
        .parse::<f32>()
        .map_err(|_| LineError::Malformed(format!("rating `{rating}` is not a number")))?;
    if !value.is_finite() {
        return Err(LineError::NonFiniteRating(rating.to_string()));
    }
    let timestamp = int("timestamp", timestamp)?;
    Ok(RatingRow {
        user,
        item,
        rating: value,
        timestamp,
    })
}

/// An ml-100k rating line: `user item rating timestamp`, tab-separated.
pub(super) fn tab_rating(line: &str) -> Result<RatingRow, LineError> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let [user, item, rating, timestamp] = fields[..] else {
        return Err(LineError::Malformed(format!(
            "expected 4 tab-separated fields (user id, movie id, rating, timestamp), found {}",
            fields.len()
        )));
    };
    rating_fields(user, item, rating, timestamp)
}

/// An ml-1m / ml-10m rating line: `UserID::MovieID::Rating::Timestamp`.
pub(super) fn dat_rating(line: &str) -> Result<RatingRow, LineError> {
    let fields: Vec<&str> = line.split("::").collect();
    let [user, item, rating, timestamp] = fields[..] else {
        return Err(LineError::Malformed(format!(
            "expected 4 `::`-separated fields (UserID::MovieID::Rating::Timestamp), found {}",
            fields.len()
        )));
    };
    rating_fields(user, item, rating, timestamp)
}

/// The movie id field of any format.
fn movie_id(text: &str) -> Result<i64, LineError> {
    text.trim()
        .parse()
        .map_err(|_| LineError::Malformed(format!("movie id `{text}` is not an integer")))
}

/// An ml-1m / ml-10m movie line: `MovieID::Title::Genres`. A title containing `::` is kept
/// whole (the id is before the first separator, the genres after the last).
pub(super) fn dat_movie(line: &str) -> Result<MovieRow, LineError> {
    let shape = || {
        LineError::Malformed(
            "expected `MovieID::Title::Genres` (3 `::`-separated fields)".to_string(),
        )
    };
    let (id, rest) = line.split_once("::").ok_or_else(shape)?;
    let (title, genres) = rest.rsplit_once("::").ok_or_else(shape)?;
    Ok(MovieRow {
        id: movie_id(id)?,
        title: title.to_string(),
        genres: split_genres(genres),
    })
}

/// A CSV movie record's fields: `movieId`, `title`, `genres`.
pub(super) fn csv_movie(id: &str, title: &str, genres: &str) -> Result<MovieRow, LineError> {
    Ok(MovieRow {
        id: movie_id(id)?,
        title: title.to_string(),
        genres: split_genres(genres),
    })
}

/// Fields of an ml-100k `u.item` line before the genre flags.
const ITEM_FIELDS: usize = 5;

/// An ml-100k `u.item` line: `id|title|release date|video release date|IMDb URL|` followed
/// by one 0/1 flag per genre of `u.genre`.
pub(super) fn item_100k(line: &str, genre_names: &[String]) -> Result<MovieRow, LineError> {
    let fields: Vec<&str> = line.split('|').collect();
    if fields.len() != ITEM_FIELDS + genre_names.len() {
        return Err(LineError::Malformed(format!(
            "expected {} `|`-separated fields (movie id, title, release date, video release \
             date, IMDb URL and {} genre flags), found {}",
            ITEM_FIELDS + genre_names.len(),
            genre_names.len(),
            fields.len()
        )));
    }
    let mut genres = Vec::new();
    for (flag, name) in fields[ITEM_FIELDS..].iter().zip(genre_names) {
        match flag.trim() {
            "1" => genres.push(name.clone()),
            "0" => {}
            other => {
                return Err(LineError::Malformed(format!(
                    "genre flag for `{name}` is `{other}`, expected 0 or 1"
                )));
            }
        }
    }
    Ok(MovieRow {
        id: movie_id(fields[0])?,
        title: fields[1].to_string(),
        genres,
    })
}

/// An ml-100k `u.genre` line: `name|index`.
pub(super) fn genre_100k(line: &str) -> Result<(String, usize), LineError> {
    let (name, index) = line
        .rsplit_once('|')
        .ok_or_else(|| LineError::Malformed("expected `name|index`".to_string()))?;
    let index = index.trim().parse().map_err(|_| {
        LineError::Malformed(format!(
            "genre index `{index}` is not a non-negative integer"
        ))
    })?;
    Ok((name.to_string(), index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn malformed(text: &str) -> LineError {
        LineError::Malformed(text.to_string())
    }

    #[test]
    fn latin1_bytes_decode_per_line() {
        assert_eq!(decode_text(b"Caf\xe9 (1999)"), "Café (1999)");
        assert_eq!(decode_text("Café".as_bytes()), "Café");
        assert!(matches!(decode_text(b"plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn tab_ratings_parse_and_explain_their_shape() {
        assert_eq!(
            tab_rating("196\t242\t3\t881250949").unwrap(),
            RatingRow {
                user: 196,
                item: 242,
                rating: 3.0,
                timestamp: 881250949
            }
        );
        assert_eq!(
            tab_rating("196\t242\t3").unwrap_err(),
            malformed(
                "expected 4 tab-separated fields (user id, movie id, rating, timestamp), found 3"
            )
        );
        assert_eq!(
            tab_rating("196\tx\t3\t1").unwrap_err(),
            malformed("movie id `x` is not an integer")
        );
        assert_eq!(
            tab_rating("1\t2\tNaN\t1").unwrap_err(),
            LineError::NonFiniteRating("NaN".into())
        );
        assert_eq!(
            tab_rating("1\t2\tinf\t1").unwrap_err(),
            LineError::NonFiniteRating("inf".into())
        );
    }

    #[test]
    fn double_colon_formats() {
        assert_eq!(
            dat_rating("1::1193::5::978300760").unwrap(),
            RatingRow {
                user: 1,
                item: 1193,
                rating: 5.0,
                timestamp: 978300760
            }
        );
        assert_eq!(dat_rating("1::122::4.5::838985046").unwrap().rating, 4.5);
        assert_eq!(
            dat_rating("1,1193,5,978300760").unwrap_err(),
            malformed(
                "expected 4 `::`-separated fields (UserID::MovieID::Rating::Timestamp), found 1"
            )
        );
        assert_eq!(
            dat_movie("1::Toy Story (1995)::Animation|Children's|Comedy").unwrap(),
            MovieRow {
                id: 1,
                title: "Toy Story (1995)".into(),
                genres: vec!["Animation".into(), "Children's".into(), "Comedy".into()],
            }
        );
        assert_eq!(
            dat_movie("7::A::B (2000)::Drama").unwrap().title,
            "A::B (2000)"
        );
        assert_eq!(
            dat_movie("8::Untitled::(no genres listed)").unwrap().genres,
            ["(no genres listed)"]
        );
        assert_eq!(
            dat_movie("8::Untitled").unwrap_err(),
            malformed("expected `MovieID::Title::Genres` (3 `::`-separated fields)")
        );
    }

    #[test]
    fn ml100k_items_turn_flags_into_genre_names() {
        let names: Vec<String> = ["unknown", "Action", "Comedy"].map(String::from).to_vec();
        let row = item_100k("2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1", &names).unwrap();
        assert_eq!(row.genres, ["Action", "Comedy"]);
        assert_eq!(row.title, "GoldenEye (1995)");
        assert_eq!(
            item_100k("2|GoldenEye (1995)|01-Jan-1995||http://x|0|1", &names).unwrap_err(),
            malformed(
                "expected 8 `|`-separated fields (movie id, title, release date, video release \
                 date, IMDb URL and 3 genre flags), found 7"
            )
        );
        assert_eq!(
            item_100k("2|G|d||u|0|2|1", &names).unwrap_err(),
            malformed("genre flag for `Action` is `2`, expected 0 or 1")
        );
        assert_eq!(
            genre_100k("Children's|4").unwrap(),
            ("Children's".into(), 4)
        );
        assert_eq!(
            genre_100k("Sci-Fi").unwrap_err(),
            malformed("expected `name|index`")
        );
    }

    #[test]
    fn csv_genres_stay_verbatim() {
        let row = csv_movie("11", "American President, The (1995)", "Comedy|Drama").unwrap();
        assert_eq!(row.genres, ["Comedy", "Drama"]);
        assert_eq!(
            csv_movie("1", "t", "").unwrap().genres,
            Vec::<String>::new()
        );
        assert_eq!(
            csv_movie("x1", "t", "").unwrap_err(),
            malformed("movie id `x1` is not an integer")
        );
    }
}
