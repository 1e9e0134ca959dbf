//! Which run a checkpoint belongs to.
//!
//! A directory of checkpoints can hold files of several runs: the same job
//! started again with other settings, or someone else's files. Resuming
//! from another run's checkpoint would continue it with this run's settings
//! (silently wrong), and pruning by step number alone would delete this
//! run's files in favour of theirs. So every checkpoint carries its run's
//! identity: the settings that determine the run's trajectory (model, data,
//! optimizer, seed, ...) and a 64-bit hash of them. The hash goes into the
//! file name, so telling runs apart costs a directory listing; the settings
//! go into the file's metadata, so a refusal can say which ones differ.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use super::{Checkpoint, CheckpointError};

/// The `extra` key of a checkpoint's run hash (16 hex digits).
pub const RUN_ID_KEY: &str = "run.id";
/// The `extra` key of a checkpoint's run settings (a JSON object of strings).
pub const RUN_SETTINGS_KEY: &str = "run.settings";

/// The settings that determine a run, and their hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunIdentity {
    settings: BTreeMap<String, String>,
    id: u64,
}

impl RunIdentity {
    /// The identity of a run made from `settings` (name → value as text).
    pub fn new(settings: BTreeMap<String, String>) -> RunIdentity {
        let mut hash = Fnv1a::new();
        for (name, value) in &settings {
            // Length-prefixed, so no two different maps hash the same bytes.
            for text in [name, value] {
                hash.write(&(text.len() as u64).to_le_bytes());
                hash.write(text.as_bytes());
            }
        }
        RunIdentity { id: hash.finish(), settings }
    }

    /// The identity of a run described by a JSON object, nested objects
    /// flattened to dotted names (`optimizer.lr`).
    pub fn from_json(value: &serde_json::Value) -> RunIdentity {
        let mut settings = BTreeMap::new();
        flatten("", value, &mut settings);
        RunIdentity::new(settings)
    }

    /// The hash, as the 16 hex digits file names carry.
    pub fn id(&self) -> RunId {
        RunId(self.id)
    }

    /// The settings, by name.
    pub fn settings(&self) -> &BTreeMap<String, String> {
        &self.settings
    }

    /// Writes this identity into a checkpoint's `extra` map.
    pub fn stamp(&self, extra: &mut BTreeMap<String, String>) {
        extra.insert(RUN_ID_KEY.to_owned(), self.id().to_string());
        let settings = serde_json::to_string(&self.settings).unwrap_or_default();
        extra.insert(RUN_SETTINGS_KEY.to_owned(), settings);
    }

    /// The identity a checkpoint was stamped with, if it was (and its
    /// settings read back and hash to its id).
    pub fn of_checkpoint(checkpoint: &Checkpoint) -> Option<RunIdentity> {
        let settings = checkpoint.extra.get(RUN_SETTINGS_KEY)?;
        let run = RunIdentity::new(serde_json::from_str(settings).ok()?);
        let id = checkpoint.extra.get(RUN_ID_KEY).and_then(|id| RunId::parse(id))?;
        (run.id() == id).then_some(run)
    }

    /// `Ok` if `checkpoint` is stamped with this identity; `path` names the
    /// file in the error.
    pub(super) fn check_stamp(
        &self,
        checkpoint: &Checkpoint,
        path: &Path,
    ) -> Result<(), CheckpointError> {
        let found = checkpoint.extra.get(RUN_ID_KEY);
        if found.map(String::as_str) == Some(self.id().to_string().as_str()) {
            return Ok(());
        }
        Err(CheckpointError::BadMetadata {
            path: path.to_path_buf(),
            field: RUN_ID_KEY.to_owned(),
            reason: match found {
                Some(found) => format!("run {found}, where this store holds run {}", self.id()),
                None => format!("missing, where this store holds run {}", self.id()),
            },
        })
    }

    /// Each setting whose value differs, as `name: A there, B here`
    /// (`self` is "here"); empty when the settings are the same.
    pub fn differences(&self, there: &RunIdentity) -> Vec<String> {
        let missing = "(not set)".to_string();
        let mut names: Vec<&String> = self.settings.keys().chain(there.settings.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|name| {
                let here = self.settings.get(name).unwrap_or(&missing);
                let theirs = there.settings.get(name).unwrap_or(&missing);
                (here != theirs).then(|| format!("{name}: {theirs} there, {here} here"))
            })
            .collect()
    }
}

/// A run's hash, as file names carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(pub u64);

impl RunId {
    /// Parses the 16 lowercase hex digits of [`Display`](fmt::Display).
    pub fn parse(text: &str) -> Option<RunId> {
        let hex = text.len() == 16 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        hex.then(|| u64::from_str_radix(text, 16).ok().map(RunId)).flatten()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Objects become dotted names; every other value its JSON text (strings
/// without their quotes).
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (name, field) in fields {
                let name =
                    if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
                flatten(&name, field, out);
            }
        }
        serde_json::Value::String(text) => {
            out.insert(prefix.to_owned(), text.clone());
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

/// 64-bit FNV-1a (Fowler, Noll, Vo): stable across builds and platforms,
/// which `std`'s hashers do not promise. Not a defence against forgery; it
/// tells runs apart.
pub(crate) struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;

    pub(crate) fn new() -> Fnv1a {
        Fnv1a(Self::OFFSET_BASIS)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(Self::PRIME);
        }
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(pairs: &[(&str, &str)]) -> RunIdentity {
        RunIdentity::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        let hash = |text: &str| {
            let mut hash = Fnv1a::new();
            hash.write(text.as_bytes());
            hash.finish()
        };
        assert_eq!(hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_same_settings_give_the_same_id_and_any_change_another() {
        let a = identity(&[("lr", "0.1"), ("model", "[64, 128, 10]")]);
        assert_eq!(a.id(), identity(&[("model", "[64, 128, 10]"), ("lr", "0.1")]).id());
        assert_ne!(a.id(), identity(&[("lr", "0.01"), ("model", "[64, 128, 10]")]).id());
        // Moving a byte from a value to the next name changes the id too.
        assert_ne!(
            identity(&[("a", "bc"), ("d", "")]).id(),
            identity(&[("a", "b"), ("cd", "")]).id()
        );
    }

    #[test]
    fn differences_name_each_setting_both_ways() {
        let here = identity(&[("lr", "0.01"), ("seed", "1")]);
        let there = identity(&[("lr", "0.1"), ("seed", "1"), ("old", "x")]);
        assert_eq!(
            here.differences(&there),
            vec!["lr: 0.1 there, 0.01 here".to_string(), "old: x there, (not set) here".into()]
        );
        assert!(here.differences(&here).is_empty());
    }

    #[test]
    fn json_is_flattened_to_dotted_names() {
        let value = serde_json::json!({"optimizer": {"kind": "sgd", "lr": 0.1}, "seed": 7});
        let run = RunIdentity::from_json(&value);
        assert_eq!(run.settings()["optimizer.kind"], "sgd");
        assert_eq!(run.settings()["optimizer.lr"], "0.1");
        assert_eq!(run.settings()["seed"], "7");
    }

    #[test]
    fn run_ids_print_and_parse_as_16_hex_digits() {
        let id = RunId(0x00ab_cdef_0123_4567);
        assert_eq!(id.to_string(), "00abcdef01234567");
        assert_eq!(RunId::parse("00abcdef01234567"), Some(id));
        for bad in
            ["", "00ABCDEF01234567", "0abcdef01234567", "00abcdef0123456g", "+0abcdef01234567"]
        {
            assert_eq!(RunId::parse(bad), None, "{bad:?}");
        }
    }
}
