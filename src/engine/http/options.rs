//! `--engine-arg KEY=VALUE` for the native engines that take a fixed set of keys: typed
//! parsing, unknown keys refused with the closest known ones, each as a usage error.

use crate::engine::EngineError;

/// One key an engine accepts, with what it means (listed in errors).
#[derive(Copy, Clone, Debug)]
pub struct Key {
    pub name: &'static str,
    pub help: &'static str,
}

/// The options given, checked against `keys`.
#[derive(Debug)]
pub struct Options<'a> {
    engine: &'static str,
    given: &'a [(String, String)],
}

impl<'a> Options<'a> {
    /// Refuses unknown keys (with the closest known ones) and keys given twice.
    pub fn new(
        engine: &'static str,
        given: &'a [(String, String)],
        keys: &[Key],
    ) -> Result<Options<'a>, EngineError> {
        for (i, (k, _)) in given.iter().enumerate() {
            let norm = k.replace('-', "_");
            if !keys.iter().any(|key| key.name == norm) {
                let close = closest(&norm, keys.iter().map(|k| k.name));
                let hint = if close.is_empty() {
                    String::new()
                } else {
                    format!(" (did you mean {}?)", close.join(" or "))
                };
                let all: Vec<String> = keys
                    .iter()
                    .map(|k| format!("{} ({})", k.name, k.help))
                    .collect();
                return Err(EngineError::Usage(format!(
                    "unknown --engine-arg '{k}' for {engine}{hint}; valid keys: {}",
                    all.join(", ")
                )));
            }
            if given[..i].iter().any(|(p, _)| p.replace('-', "_") == norm) {
                return Err(EngineError::Usage(format!(
                    "--engine-arg {k} given twice for {engine}; give it once"
                )));
            }
        }
        Ok(Options { engine, given })
    }

    pub fn str(&self, key: &str) -> Option<&'a str> {
        self.given
            .iter()
            .find(|(k, _)| k.replace('-', "_") == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn parse<T: std::str::FromStr>(
        &self,
        key: &str,
        what: &str,
    ) -> Result<Option<T>, EngineError> {
        self.str(key)
            .map(|v| {
                v.parse::<T>().map_err(|_| {
                    EngineError::Usage(format!(
                        "--engine-arg {key}={v}: expected {what} for {}",
                        self.engine
                    ))
                })
            })
            .transpose()
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, EngineError> {
        self.str(key)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(EngineError::Usage(format!(
                    "--engine-arg {key}={v}: expected true or false for {}",
                    self.engine
                ))),
            })
            .transpose()
    }

    /// One of `choices`.
    pub fn choice(
        &self,
        key: &str,
        choices: &[&'static str],
    ) -> Result<Option<&'static str>, EngineError> {
        self.str(key)
            .map(|v| {
                choices
                    .iter()
                    .copied()
                    .find(|c| c.eq_ignore_ascii_case(v))
                    .ok_or_else(|| {
                        EngineError::Usage(format!(
                            "--engine-arg {key}={v}: expected one of {} for {}",
                            choices.join(", "),
                            self.engine
                        ))
                    })
            })
            .transpose()
    }
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Known names within a third of the key's length in edits (at least 2), closest first.
fn closest<'k>(key: &str, names: impl Iterator<Item = &'k str>) -> Vec<&'k str> {
    let limit = (key.len() / 3).max(2);
    let mut c: Vec<(usize, &str)> = names
        .map(|n| (distance(key, n), n))
        .filter(|(d, _)| *d <= limit)
        .collect();
    c.sort();
    c.into_iter().take(2).map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[Key] = &[
        Key {
            name: "base_url",
            help: "the server",
        },
        Key {
            name: "model",
            help: "the model name",
        },
    ];

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn unknown_keys_name_the_closest() {
        let given = [kv("base-ur", "x")];
        let e = Options::new("openai", &given, KEYS)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown --engine-arg 'base-ur'") && e.contains("did you mean base_url?"),
            "{e}"
        );
        let given = [kv("zzz", "x")];
        let e = Options::new("openai", &given, KEYS)
            .unwrap_err()
            .to_string();
        assert!(
            !e.contains("did you mean") && e.contains("base_url (the server)"),
            "{e}"
        );
        let given = [kv("model", "a"), kv("model", "b")];
        assert!(Options::new("openai", &given, KEYS)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn typed_values() {
        let given = [kv("base-url", "http://x"), kv("model", "7")];
        let o = Options::new("openai", &given, KEYS).unwrap();
        assert_eq!(o.str("base_url"), Some("http://x"));
        assert_eq!(o.parse::<u32>("model", "an integer").unwrap(), Some(7));
        assert!(o.bool("model").is_err());
        assert_eq!(o.parse::<u32>("absent", "an integer").unwrap(), None);
        assert!(o
            .choice("model", &["a", "b"])
            .unwrap_err()
            .to_string()
            .contains("one of a, b"));
    }
}
