//! The vocabulary synthetic items are described with: MovieLens' genre names, how common
//! each is, how it shifts ratings, and the title words that go with it.
//!
//! Titles are built from the words of an item's genres (and a few generic words), so a text
//! encoder that reads "Haunting of the Grave (2016) | Horror Mystery" learns something
//! about the item: its genres and title words set most of its latent factors and part of its
//! bias (see [`super::catalog`]).

/// One genre: its name as MovieLens writes it, how often items have it (relative), how it
/// shifts an item's mean rating, and its title words.
pub(crate) struct Genre {
    /// The name written in `genres`.
    pub(crate) name: &'static str,
    /// Relative frequency among items (roughly MovieLens').
    pub(crate) frequency: f64,
    /// Added to the item bias of items of this genre (averaged over an item's genres).
    pub(crate) rating_shift: f64,
    /// Words titles of this genre are made of.
    pub(crate) words: &'static [&'static str],
}

/// The genres, in alphabetical order (the order `genres` lists them in, as MovieLens does).
pub(crate) const GENRES: [Genre; 18] = [
    Genre {
        name: "Action",
        frequency: 8.0,
        rating_shift: -0.10,
        words: &[
            "Strike",
            "Fury",
            "Bullet",
            "Force",
            "Chase",
            "Target",
            "Vengeance",
            "Impact",
            "Blade",
            "Rogue",
            "Siege",
            "Commando",
        ],
    },
    Genre {
        name: "Adventure",
        frequency: 6.0,
        rating_shift: -0.02,
        words: &[
            "Quest",
            "Treasure",
            "Island",
            "Journey",
            "Expedition",
            "Lost",
            "Voyage",
            "Jungle",
            "Horizon",
            "Map",
            "Frontier",
            "Legend",
        ],
    },
    Genre {
        name: "Animation",
        frequency: 2.5,
        rating_shift: 0.10,
        words: &[
            "Tiny", "Magic", "Bunny", "Dragon", "Paper", "Toy", "Rainbow", "Robot", "Puppet",
            "Bubble", "Kingdom", "Penguin",
        ],
    },
    Genre {
        name: "Children",
        frequency: 3.0,
        rating_shift: -0.20,
        words: &[
            "Puppy",
            "Friends",
            "Little",
            "Camp",
            "School",
            "Pony",
            "Birthday",
            "Wonder",
            "Teddy",
            "Treehouse",
            "Kid",
            "Giggle",
        ],
    },
    Genre {
        name: "Comedy",
        frequency: 20.0,
        rating_shift: -0.12,
        words: &[
            "Crazy",
            "Wedding",
            "Party",
            "Weekend",
            "Trouble",
            "Dumb",
            "Roommate",
            "Vacation",
            "Nerd",
            "Prank",
            "Boss",
            "Neighbors",
        ],
    },
    Genre {
        name: "Crime",
        frequency: 5.0,
        rating_shift: 0.10,
        words: &[
            "Heist",
            "Gangster",
            "Mob",
            "Cop",
            "Robbery",
            "Alibi",
            "Con",
            "Cartel",
            "Detective",
            "Hustle",
            "Syndicate",
            "Witness",
        ],
    },
    Genre {
        name: "Documentary",
        frequency: 3.0,
        rating_shift: 0.30,
        words: &[
            "Inside",
            "Truth",
            "Portrait",
            "Voices",
            "Chronicle",
            "Nature",
            "Planet",
            "Behind",
            "Real",
            "History",
            "Archive",
            "Witnesses",
        ],
    },
    Genre {
        name: "Drama",
        frequency: 25.0,
        rating_shift: 0.12,
        words: &[
            "Silence", "Letters", "Father", "Daughter", "Promise", "Winter", "Grace", "Memory",
            "Brother", "Hope", "Home", "Years",
        ],
    },
    Genre {
        name: "Fantasy",
        frequency: 3.0,
        rating_shift: -0.03,
        words: &[
            "Sorcerer",
            "Realm",
            "Elf",
            "Wizard",
            "Crown",
            "Spell",
            "Enchanted",
            "Sword",
            "Oracle",
            "Unicorn",
            "Prophecy",
            "Giant",
        ],
    },
    Genre {
        name: "Film-Noir",
        frequency: 0.5,
        rating_shift: 0.35,
        words: &[
            "Shadows",
            "Dame",
            "Double",
            "Dark",
            "Smoke",
            "Rain",
            "Stranger",
            "Deadline",
            "Street",
            "Sunset",
            "Cigarette",
            "Nightclub",
        ],
    },
    Genre {
        name: "Horror",
        frequency: 5.0,
        rating_shift: -0.35,
        words: &[
            "Blood",
            "Haunting",
            "Curse",
            "Nightmare",
            "Scream",
            "Demon",
            "Grave",
            "Possession",
            "Evil",
            "Ghost",
            "Cellar",
            "Ritual",
        ],
    },
    Genre {
        name: "Musical",
        frequency: 1.0,
        rating_shift: 0.05,
        words: &[
            "Song", "Dance", "Melody", "Broadway", "Rhythm", "Stage", "Serenade", "Harmony",
            "Jazz", "Chorus", "Ballet", "Tune",
        ],
    },
    Genre {
        name: "Mystery",
        frequency: 3.0,
        rating_shift: 0.08,
        words: &[
            "Clue",
            "Riddle",
            "Vanishing",
            "Puzzle",
            "Secret",
            "Enigma",
            "Missing",
            "Manor",
            "Key",
            "Cipher",
            "Hidden",
            "Inquiry",
        ],
    },
    Genre {
        name: "Romance",
        frequency: 8.0,
        rating_shift: 0.0,
        words: &[
            "Love",
            "Heart",
            "Kiss",
            "Paris",
            "Summer",
            "Valentine",
            "Bride",
            "Sweetheart",
            "Affair",
            "Romance",
            "Passion",
            "Darling",
        ],
    },
    Genre {
        name: "Sci-Fi",
        frequency: 4.0,
        rating_shift: -0.05,
        words: &[
            "Galaxy", "Android", "Star", "Orbit", "Clone", "Mars", "Quantum", "Cyborg", "Alien",
            "Nebula", "Signal", "Colony",
        ],
    },
    Genre {
        name: "Thriller",
        frequency: 9.0,
        rating_shift: -0.05,
        words: &[
            "Fear",
            "Panic",
            "Trap",
            "Hostage",
            "Conspiracy",
            "Stalker",
            "Edge",
            "Deception",
            "Ransom",
            "Obsession",
            "Sniper",
            "Pursuit",
        ],
    },
    Genre {
        name: "War",
        frequency: 2.0,
        rating_shift: 0.25,
        words: &[
            "Battle", "Soldier", "Front", "Platoon", "Trench", "Victory", "Bomber", "Sergeant",
            "Beach", "Empire", "Regiment", "Flag",
        ],
    },
    Genre {
        name: "Western",
        frequency: 1.0,
        rating_shift: 0.05,
        words: &[
            "Outlaw",
            "Sheriff",
            "Canyon",
            "Saddle",
            "Rider",
            "Gunslinger",
            "Ranch",
            "Bandit",
            "Desert",
            "Mustang",
            "Marshal",
            "Stagecoach",
        ],
    },
];

/// Words any title may use, whatever its genres.
pub(crate) const GENERIC_WORDS: &[&str] = &[
    "Night", "Day", "Last", "First", "City", "Road", "House", "Man", "Woman", "Girl", "Boy",
    "King", "Game", "Life", "World", "Time", "River", "Blue", "Red", "Golden", "Return", "Rise",
    "Fall", "Dream",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genres_are_alphabetical_with_positive_frequencies_and_words() {
        let names: Vec<&str> = GENRES.iter().map(|g| g.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        for genre in &GENRES {
            assert!(genre.frequency > 0.0, "{}", genre.name);
            assert!(genre.words.len() >= 10, "{}", genre.name);
            assert!(
                genre
                    .words
                    .iter()
                    .all(|w| !w.is_empty() && !w.contains(' '))
            );
        }
    }
}
