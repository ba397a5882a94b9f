//! Finding a model's folder from its Hugging Face id.
//!
//! In order, the first that holds `config.json`, `tokenizer.json` and `model.safetensors`:
//! 1. the folder given explicitly (`model_dir:` in the pipeline), which must then be
//!    complete: an explicit folder is never silently skipped;
//! 2. under `$RECSIFT_MODEL_DIR`: `<dir>/<ORG>/<NAME>`, `<dir>/<NAME>`, the hub layout
//!    `<dir>/models--ORG--NAME/snapshots/*`, or `<dir>` itself when its folder name is
//!    `<NAME>`;
//! 3. the Hugging Face cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//!    `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`; inside it
//!    `models--ORG--NAME/snapshots/<revision>`, the revision in `refs/main` first, then the
//!    others, newest first;
//! 4. a download from the hub with the `hf-download` cargo feature (on by default), unless
//!    `HF_HUB_OFFLINE` is set.
//!
//! When all fail, the error lists each place looked at and why it did not do, and how to
//! provide the folder. The search reads the environment once into a [`SearchEnv`] so that
//! tests can give it any values without touching the process environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::error::EncoderError;
use super::folder::missing_files;
use crate::model::ModelError;

/// Environment variable naming a folder of model folders.
pub const MODEL_DIR_VAR: &str = "RECSIFT_MODEL_DIR";

/// The environment values the search reads.
#[derive(Clone, Debug, Default)]
pub struct SearchEnv {
    /// `RECSIFT_MODEL_DIR`.
    pub recsift_model_dir: Option<PathBuf>,
    /// `HF_HUB_CACHE`.
    pub hf_hub_cache: Option<PathBuf>,
    /// `HF_HOME`.
    pub hf_home: Option<PathBuf>,
    /// `XDG_CACHE_HOME`.
    pub xdg_cache_home: Option<PathBuf>,
    /// The user's home folder.
    pub home: Option<PathBuf>,
    /// `HF_HUB_OFFLINE` is set to something other than `0`/`false`/empty.
    pub offline: bool,
}

impl SearchEnv {
    /// Read the values from this process's environment.
    pub fn from_process() -> Self {
        let path = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let offline = std::env::var_os("HF_HUB_OFFLINE").is_some_and(|v| {
            let v = v.to_string_lossy().to_ascii_lowercase();
            !(v.is_empty() || v == "0" || v == "false" || v == "no")
        });
        Self {
            recsift_model_dir: path(MODEL_DIR_VAR),
            hf_hub_cache: path("HF_HUB_CACHE"),
            hf_home: path("HF_HOME"),
            xdg_cache_home: path("XDG_CACHE_HOME"),
            home: path("HOME").or_else(|| path("USERPROFILE")),
            offline,
        }
    }

    /// The Hugging Face hub cache folder and the rule that chose it.
    fn hub_cache(&self) -> Option<(PathBuf, &'static str)> {
        if let Some(dir) = &self.hf_hub_cache {
            return Some((dir.clone(), "$HF_HUB_CACHE"));
        }
        if let Some(dir) = &self.hf_home {
            return Some((dir.join("hub"), "$HF_HOME/hub"));
        }
        if let Some(dir) = &self.xdg_cache_home {
            return Some((
                dir.join("huggingface").join("hub"),
                "$XDG_CACHE_HOME/huggingface/hub",
            ));
        }
        self.home.as_ref().map(|home| {
            (
                home.join(".cache").join("huggingface").join("hub"),
                "~/.cache/huggingface/hub",
            )
        })
    }
}

/// How the last step fetches a model: `Ok(folder)` or a reason it could not.
pub type Downloader<'a> = &'a dyn Fn(&str) -> Result<PathBuf, String>;

/// The folder of model `model` (a Hugging Face id such as
/// `sentence-transformers/all-MiniLM-L6-v2`), found in the order the module documents;
/// `explicit` is the pipeline's `model_dir:`.
pub fn resolve_model_dir(model: &str, explicit: Option<&Path>) -> Result<PathBuf, ModelError> {
    resolve_in(model, explicit, &SearchEnv::from_process())
}

/// [`resolve_model_dir`] with the environment values given.
pub fn resolve_in(
    model: &str,
    explicit: Option<&Path>,
    env: &SearchEnv,
) -> Result<PathBuf, ModelError> {
    #[cfg(feature = "hf-download")]
    let download: Option<Downloader> = Some(&super::hub::download);
    #[cfg(not(feature = "hf-download"))]
    let download: Option<Downloader> = None;
    Ok(resolve_with(model, explicit, env, download)?)
}

/// A model id split into its organisation (if any) and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ModelId<'a> {
    org: Option<&'a str>,
    name: &'a str,
}

impl<'a> ModelId<'a> {
    fn parse(model: &'a str) -> Result<Self, EncoderError> {
        let bad = |reason: &str| EncoderError::BadModelName {
            name: model.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = model.split('/').collect();
        if parts.len() > 2 {
            return Err(bad("it has more than one `/`"));
        }
        for part in &parts {
            if part.is_empty() {
                return Err(bad("it has an empty part"));
            }
            if *part == "." || *part == ".." {
                return Err(bad("`.` and `..` are not names"));
            }
            if let Some(c) = part
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            {
                return Err(bad(&format!(
                    "{c:?} is not allowed (letters, digits, `-`, `_`, `.`)"
                )));
            }
        }
        Ok(match parts.as_slice() {
            [org, name] => Self {
                org: Some(org),
                name,
            },
            _ => Self {
                org: None,
                name: parts[0],
            },
        })
    }

    /// `models--ORG--NAME`, the hub cache's folder name.
    fn hub_folder(&self) -> String {
        match self.org {
            Some(org) => format!("models--{org}--{}", self.name),
            None => format!("models--{}", self.name),
        }
    }
}

/// One place looked at, and why it did not do.
struct Looked {
    place: String,
    outcome: String,
}

/// [`resolve_model_dir`] with the environment and the downloader given (`None`: no
/// download step in this build).
pub fn resolve_with(
    model: &str,
    explicit: Option<&Path>,
    env: &SearchEnv,
    download: Option<Downloader>,
) -> Result<PathBuf, EncoderError> {
    let id = ModelId::parse(model)?;
    if let Some(dir) = explicit {
        return if !dir.is_dir() {
            Err(EncoderError::NotFound {
                message: format!(
                    "model_dir {} (given for model `{model}`) is not a folder; point it at a \
                     folder with config.json, tokenizer.json and model.safetensors, or remove \
                     it to search {MODEL_DIR_VAR} and the Hugging Face cache",
                    dir.display()
                ),
            })
        } else if missing_files(dir).is_empty() {
            Ok(dir.to_path_buf())
        } else {
            Err(EncoderError::MissingFiles {
                dir: dir.to_path_buf(),
                missing: missing_files(dir),
            })
        };
    }

    let mut looked = Vec::new();
    match &env.recsift_model_dir {
        None => looked.push(Looked {
            place: format!("${MODEL_DIR_VAR}"),
            outcome: "not set".into(),
        }),
        Some(root) => {
            let mut candidates = Vec::new();
            if let Some(org) = id.org {
                candidates.push(root.join(org).join(id.name));
            }
            candidates.push(root.join(id.name));
            if root.file_name() == Some(OsString::from(id.name).as_os_str()) {
                candidates.push(root.clone());
            }
            for dir in candidates {
                if let Some(found) = check_candidate(&dir, &mut looked) {
                    return Ok(found);
                }
            }
            if let Some(found) = search_hub_layout(root, &id, &mut looked) {
                return Ok(found);
            }
        }
    }
    match env.hub_cache() {
        None => looked.push(Looked {
            place: "the Hugging Face cache".into(),
            outcome: "no HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME or home folder set".into(),
        }),
        Some((cache, _rule)) => {
            if let Some(found) = search_hub_layout(&cache, &id, &mut looked) {
                return Ok(found);
            }
        }
    }
    let download_outcome = match download {
        None => "not built in (recsift was built without the `hf-download` feature)".into(),
        Some(_) if env.offline => "skipped: HF_HUB_OFFLINE is set".into(),
        Some(download) => match download(model) {
            Ok(dir) if missing_files(&dir).is_empty() => return Ok(dir),
            Ok(dir) => format!(
                "the download in {} lacks {}",
                dir.display(),
                missing_files(&dir).join(", ")
            ),
            Err(reason) => format!("failed: {reason}"),
        },
    };
    looked.push(Looked {
        place: "download from the Hugging Face hub".into(),
        outcome: download_outcome,
    });
    Err(EncoderError::NotFound {
        message: not_found_message(model, &id, &looked),
    })
}

/// `Some(dir)` when `dir` is a complete model folder; otherwise note why not.
fn check_candidate(dir: &Path, looked: &mut Vec<Looked>) -> Option<PathBuf> {
    if !dir.is_dir() {
        looked.push(Looked {
            place: dir.display().to_string(),
            outcome: "no such folder".into(),
        });
        return None;
    }
    let missing = missing_files(dir);
    if missing.is_empty() {
        return Some(dir.to_path_buf());
    }
    looked.push(Looked {
        place: dir.display().to_string(),
        outcome: format!("lacks {}", missing.join(", ")),
    });
    None
}

/// Search `root/models--ORG--NAME/snapshots/*`: the revision named in `refs/main` first,
/// then the others, most recently modified first.
fn search_hub_layout(root: &Path, id: &ModelId, looked: &mut Vec<Looked>) -> Option<PathBuf> {
    let repo = root.join(id.hub_folder());
    let snapshots = repo.join("snapshots");
    let place = format!("{}/*", snapshots.display());
    let Ok(entries) = std::fs::read_dir(&snapshots) else {
        looked.push(Looked {
            place,
            outcome: "no such folder".into(),
        });
        return None;
    };
    let main = std::fs::read_to_string(repo.join("refs").join("main"))
        .ok()
        .map(|s| s.trim().to_string());
    let mut revisions: Vec<(bool, std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let is_main = main.as_deref() == e.file_name().to_str();
            let modified = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (is_main, modified, e.path())
        })
        .collect();
    revisions.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    for (_, _, dir) in &revisions {
        if missing_files(dir).is_empty() {
            return Some(dir.clone());
        }
    }
    let outcome = match revisions.first() {
        None => "no snapshot in it".into(),
        Some((_, _, dir)) => format!(
            "no snapshot has all files ({} lacks {})",
            dir.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            missing_files(dir).join(", ")
        ),
    };
    looked.push(Looked { place, outcome });
    None
}

fn not_found_message(model: &str, id: &ModelId, looked: &[Looked]) -> String {
    let mut message = format!("model `{model}` not found. Looked in:\n");
    for l in looked {
        message.push_str(&format!("  - {}: {}\n", l.place, l.outcome));
    }
    let org_form = id
        .org
        .map(|org| format!("<dir>/{org}/{} or ", id.name))
        .unwrap_or_default();
    message.push_str(&format!(
        "To provide it: set `model_dir:` on the embed node to a folder with config.json, \
         tokenizer.json and model.safetensors; or set {MODEL_DIR_VAR}=<dir> where the folder \
         is {org_form}<dir>/{name}; or, on a machine with network, run \
         `huggingface-cli download {model}` (it fills the Hugging Face cache) and copy the \
         snapshot folder here.",
        name = id.name
    ));
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

    fn make_model(dir: &Path) {
        std::fs::create_dir_all(dir).expect("mkdir");
        for file in super::super::folder::REQUIRED_FILES {
            std::fs::write(dir.join(file), "x").expect("write");
        }
    }

    fn no_download() -> Option<Downloader<'static>> {
        None
    }

    #[test]
    fn explicit_folder_wins_over_everything() {
        let tmp = tempfile::tempdir().expect("tmp");
        let explicit = tmp.path().join("mine");
        make_model(&explicit);
        let env_root = tmp.path().join("env");
        make_model(&env_root.join("sentence-transformers/all-MiniLM-L6-v2"));
        let env = SearchEnv {
            recsift_model_dir: Some(env_root),
            ..SearchEnv::default()
        };
        let found = resolve_with(MODEL, Some(&explicit), &env, no_download()).expect("found");
        assert_eq!(found, explicit);
    }

    #[test]
    fn incomplete_explicit_folder_is_an_error_not_skipped() {
        let tmp = tempfile::tempdir().expect("tmp");
        let explicit = tmp.path().join("mine");
        std::fs::create_dir_all(&explicit).expect("mkdir");
        std::fs::write(explicit.join("config.json"), "{}").expect("write");
        let env_root = tmp.path().join("env");
        make_model(&env_root.join("all-MiniLM-L6-v2"));
        let env = SearchEnv {
            recsift_model_dir: Some(env_root),
            ..SearchEnv::default()
        };
        let err = resolve_with(MODEL, Some(&explicit), &env, no_download()).expect_err("fail");
        assert!(
            matches!(&err, EncoderError::MissingFiles { missing, .. }
                if missing == &["tokenizer.json", "model.safetensors"]),
            "{err}"
        );
        let absent = tmp.path().join("absent");
        let err = resolve_with(MODEL, Some(&absent), &env, no_download()).expect_err("fail");
        assert_eq!(
            err.to_string(),
            format!(
                "model_dir {} (given for model `{MODEL}`) is not a folder; point it at a folder \
                 with config.json, tokenizer.json and model.safetensors, or remove it to search \
                 RECSIFT_MODEL_DIR and the Hugging Face cache",
                absent.display()
            )
        );
    }

    #[test]
    fn model_dir_variable_forms_in_order() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("models");
        let env = SearchEnv {
            recsift_model_dir: Some(root.clone()),
            ..SearchEnv::default()
        };
        // Hub layout only.
        let snap = root.join("models--sentence-transformers--all-MiniLM-L6-v2/snapshots/abc");
        make_model(&snap);
        assert_eq!(
            resolve_with(MODEL, None, &env, no_download()).expect("hub"),
            snap
        );
        // <dir>/NAME beats the hub layout.
        make_model(&root.join("all-MiniLM-L6-v2"));
        assert_eq!(
            resolve_with(MODEL, None, &env, no_download()).expect("name"),
            root.join("all-MiniLM-L6-v2")
        );
        // <dir>/ORG/NAME beats <dir>/NAME.
        make_model(&root.join("sentence-transformers/all-MiniLM-L6-v2"));
        assert_eq!(
            resolve_with(MODEL, None, &env, no_download()).expect("org/name"),
            root.join("sentence-transformers/all-MiniLM-L6-v2")
        );
        // The variable may name the model folder itself.
        let direct = SearchEnv {
            recsift_model_dir: Some(root.join("all-MiniLM-L6-v2")),
            ..SearchEnv::default()
        };
        assert_eq!(
            resolve_with(MODEL, None, &direct, no_download()).expect("direct"),
            root.join("all-MiniLM-L6-v2")
        );
    }

    #[test]
    fn model_dir_variable_beats_hf_cache_which_beats_download() {
        let tmp = tempfile::tempdir().expect("tmp");
        let hf_home = tmp.path().join("hf");
        let snap = hf_home.join("hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/r1");
        make_model(&snap);
        let downloaded = tmp.path().join("downloaded");
        make_model(&downloaded);
        let calls = std::cell::Cell::new(0);
        let download = |_: &str| {
            calls.set(calls.get() + 1);
            Ok(downloaded.clone())
        };
        let mut env = SearchEnv {
            hf_home: Some(hf_home.clone()),
            home: Some(tmp.path().join("home")),
            ..SearchEnv::default()
        };
        assert_eq!(
            resolve_with(MODEL, None, &env, Some(&download)).expect("cache"),
            snap
        );
        assert_eq!(calls.get(), 0, "no download when the cache has it");

        let root = tmp.path().join("env");
        make_model(&root.join("all-MiniLM-L6-v2"));
        env.recsift_model_dir = Some(root.clone());
        assert_eq!(
            resolve_with(MODEL, None, &env, Some(&download)).expect("env"),
            root.join("all-MiniLM-L6-v2")
        );

        let empty = SearchEnv {
            home: Some(tmp.path().join("home")),
            ..SearchEnv::default()
        };
        assert_eq!(
            resolve_with(MODEL, None, &empty, Some(&download)).expect("download"),
            downloaded
        );
        assert_eq!(calls.get(), 1);
        let offline = SearchEnv {
            offline: true,
            ..empty
        };
        assert!(resolve_with(MODEL, None, &offline, Some(&download)).is_err());
        assert_eq!(calls.get(), 1, "offline: no download attempt");
    }

    #[test]
    fn hub_cache_prefers_refs_main_and_follows_variable_precedence() {
        let tmp = tempfile::tempdir().expect("tmp");
        let home = tmp.path().join("home");
        let repo =
            home.join(".cache/huggingface/hub/models--sentence-transformers--all-MiniLM-L6-v2");
        make_model(&repo.join("snapshots/old"));
        make_model(&repo.join("snapshots/main-rev"));
        std::fs::create_dir_all(repo.join("refs")).expect("mkdir");
        std::fs::write(repo.join("refs/main"), "main-rev\n").expect("write");
        let env = SearchEnv {
            home: Some(home.clone()),
            ..SearchEnv::default()
        };
        assert_eq!(
            resolve_with(MODEL, None, &env, no_download()).expect("home cache"),
            repo.join("snapshots/main-rev")
        );
        // XDG_CACHE_HOME, HF_HOME and HF_HUB_CACHE each take precedence in turn.
        let xdg = tmp.path().join("xdg");
        let in_xdg =
            xdg.join("huggingface/hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/x");
        make_model(&in_xdg);
        let mut env = SearchEnv {
            xdg_cache_home: Some(xdg),
            ..env
        };
        assert_eq!(
            resolve_with(MODEL, None, &env, no_download()).expect("xdg"),
            in_xdg
        );
        let hf_home = tmp.path().join("hf-home");
        let in_home =
            hf_home.join("hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/h");
        make_model(&in_home);
        env.hf_home = Some(hf_home);
        assert_eq!(
            resolve_with(MODEL, None, &env, no_download()).expect("hf_home"),
            in_home
        );
        let hub = tmp.path().join("hub-cache");
        let in_hub = hub.join("models--sentence-transformers--all-MiniLM-L6-v2/snapshots/c");
        make_model(&in_hub);
        env.hf_hub_cache = Some(hub);
        assert_eq!(
            resolve_with(MODEL, None, &env, no_download()).expect("hub cache"),
            in_hub
        );
    }

    #[test]
    fn not_found_lists_every_place_and_how_to_provide_the_folder() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("models");
        std::fs::create_dir_all(root.join("all-MiniLM-L6-v2")).expect("mkdir");
        std::fs::write(root.join("all-MiniLM-L6-v2/config.json"), "{}").expect("write");
        let home = tmp.path().join("home");
        let env = SearchEnv {
            recsift_model_dir: Some(root.clone()),
            home: Some(home.clone()),
            offline: true,
            ..SearchEnv::default()
        };
        let download = |_: &str| -> Result<PathBuf, String> { Err("unreachable".into()) };
        let err = resolve_with(MODEL, None, &env, Some(&download)).expect_err("not found");
        let r = root.display();
        let h = home.display();
        assert_eq!(
            err.to_string(),
            format!(
                "model `{MODEL}` not found. Looked in:\n\
                 \x20 - {r}/sentence-transformers/all-MiniLM-L6-v2: no such folder\n\
                 \x20 - {r}/all-MiniLM-L6-v2: lacks tokenizer.json, model.safetensors\n\
                 \x20 - {r}/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/*: no such folder\n\
                 \x20 - {h}/.cache/huggingface/hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/*: no such folder\n\
                 \x20 - download from the Hugging Face hub: skipped: HF_HUB_OFFLINE is set\n\
                 To provide it: set `model_dir:` on the embed node to a folder with config.json, \
                 tokenizer.json and model.safetensors; or set RECSIFT_MODEL_DIR=<dir> where the \
                 folder is <dir>/sentence-transformers/all-MiniLM-L6-v2 or <dir>/all-MiniLM-L6-v2; \
                 or, on a machine with network, run `huggingface-cli download {MODEL}` (it fills \
                 the Hugging Face cache) and copy the snapshot folder here."
            )
        );
        let online = SearchEnv {
            offline: false,
            recsift_model_dir: None,
            ..env
        };
        let err = resolve_with(MODEL, None, &online, Some(&download)).expect_err("fails");
        let text = err.to_string();
        assert!(text.contains("  - $RECSIFT_MODEL_DIR: not set\n"), "{text}");
        assert!(
            text.contains("  - download from the Hugging Face hub: failed: unreachable\n"),
            "{text}"
        );
        let err = resolve_with(MODEL, None, &online, no_download()).expect_err("fails");
        assert!(err.to_string().contains(
            "  - download from the Hugging Face hub: not built in (recsift was built without \
             the `hf-download` feature)\n"
        ));
    }

    #[test]
    fn model_names_are_checked() {
        let env = SearchEnv::default();
        for (name, reason) in [
            ("a/b/c", "it has more than one `/`"),
            ("/abs", "it has an empty part"),
            ("org/..", "`.` and `..` are not names"),
            (
                "org/na me",
                "' ' is not allowed (letters, digits, `-`, `_`, `.`)",
            ),
        ] {
            let err = resolve_with(name, None, &env, no_download()).expect_err(name);
            assert_eq!(
                err.to_string(),
                format!(
                    "model name {name:?} is not a Hugging Face model id like \
                     `sentence-transformers/all-MiniLM-L6-v2`: {reason}"
                )
            );
        }
        // A name without organisation uses `models--NAME` in the cache.
        let tmp = tempfile::tempdir().expect("tmp");
        let snap = tmp.path().join("models--bert-mini/snapshots/r");
        make_model(&snap);
        let env = SearchEnv {
            hf_hub_cache: Some(tmp.path().to_path_buf()),
            ..SearchEnv::default()
        };
        assert_eq!(
            resolve_with("bert-mini", None, &env, no_download()).expect("found"),
            snap
        );
    }
}
