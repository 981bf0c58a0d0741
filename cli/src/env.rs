//! Configuration overrides from the environment:
//! `FACEGATE__SECTION__KEY=value` sets `[section] key = value` in the parsed
//! TOML table before it is deserialized and checked, so an override is held
//! to the same rules as the file (unknown keys refused, types checked).
//!
//! The environment is read through [`Environment`]: the binaries pass
//! [`ProcessEnvironment`], tests a map, and never touch the process's own.

use std::collections::BTreeMap;

/// Prefix of the per-key overrides.
pub const PREFIX: &str = "FACEGATE__";

/// Where environment variables come from.
pub trait Environment {
    /// Every variable whose name starts with `prefix`.
    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)>;
    /// One variable.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        std::env::vars().filter(|(k, _)| k.starts_with(prefix)).collect()
    }

    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Environment for BTreeMap<String, String> {
    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

impl Environment for Vec<(String, String)> {
    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.iter().filter(|(k, _)| k.starts_with(prefix)).cloned().collect()
    }

    fn get(&self, name: &str) -> Option<String> {
        self.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
}

/// An override that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {name}: {message}")]
pub struct OverrideError {
    /// The variable.
    pub name: String,
    /// What is wrong with it.
    pub message: String,
}

/// Applies every `FACEGATE__SECTION__KEY` variable of `env` to `table`, in
/// name order. Name parts are lower-cased and `_` becomes `-`
/// (`FACEGATE__DECISION__WINDOW_MS` sets `[decision] window-ms`); deeper
/// sections take more parts. Values are read by [`value`].
pub fn apply_overrides(table: &mut toml::Table, env: &dyn Environment) -> Result<(), OverrideError> {
    let mut vars = env.with_prefix(PREFIX);
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> =
            name[PREFIX.len()..].split("__").map(|p| p.to_ascii_lowercase().replace('_', "-")).collect();
        if path.len() < 2 || path.iter().any(String::is_empty) {
            return Err(OverrideError { name, message: "expected FACEGATE__SECTION__KEY".into() });
        }
        set_path(table, &path, value(&raw)).map_err(|message| OverrideError { name: name.clone(), message })?;
    }
    Ok(())
}

/// Sets `table[path] = value`, creating sections on the way; the error says
/// which part of the path is a value rather than a section.
pub fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".into());
    };
    let mut current = table;
    for part in parents {
        let entry = current.entry(part.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| format!("{part} is not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// A value from the environment: a TOML number, boolean, quoted string or
/// array when it parses as one (`8`, `0.5`, `true`, `"x"`, `["a", "b"]`),
/// else the raw text as a string (`mongodb://db:27017`, `door-7`, and a
/// date, which no key takes).
pub fn value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>().ok().and_then(|mut t| t.remove("v")) {
        Some(
            v @ (toml::Value::Integer(_)
            | toml::Value::Float(_)
            | toml::Value::Boolean(_)
            | toml::Value::String(_)
            | toml::Value::Array(_)),
        ) => v,
        _ => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn overrides_reach_nested_keys_with_their_types() {
        let mut table: toml::Table = "[decision]\nframes = 3\n".parse().unwrap();
        let vars = env(&[
            ("FACEGATE__DECISION__WINDOW_MS", "4500"),
            ("FACEGATE__DEVICE__ID", "door-7"),
            ("FACEGATE__SYNC__SHARDS", "[\"lobby\", \"lab\"]"),
            ("FACEGATE__MONGODB__URI", "mongodb://db:27017/?replicaSet=rs0"),
            ("FACEGATE__A__B__C", "true"),
            ("OTHER", "ignored"),
        ]);
        apply_overrides(&mut table, &vars).unwrap();
        let expected: toml::Table = r#"
            a = { b = { c = true } }
            decision = { frames = 3, window-ms = 4500 }
            device = { id = "door-7" }
            mongodb = { uri = "mongodb://db:27017/?replicaSet=rs0" }
            sync = { shards = ["lobby", "lab"] }
        "#
        .parse()
        .unwrap();
        assert_eq!(table, expected);
    }

    #[test]
    fn a_name_without_section_and_key_or_through_a_value_is_refused_by_name() {
        for (name, message) in [
            ("FACEGATE__MONGODB", "expected FACEGATE__SECTION__KEY"),
            ("FACEGATE__MONGODB____URI", "expected FACEGATE__SECTION__KEY"),
            ("FACEGATE__DECISION__FRAMES__X", "frames is not a section"),
        ] {
            let mut table: toml::Table = "[decision]\nframes = 3\n".parse().unwrap();
            let before = table.clone();
            let err = apply_overrides(&mut table, &env(&[(name, "1")])).unwrap_err();
            assert_eq!(err, OverrideError { name: name.into(), message: message.into() });
            assert_eq!(table, before, "{name}: nothing applied");
        }
    }

    #[test]
    fn values_that_are_not_toml_scalars_or_arrays_stay_text() {
        assert_eq!(value("8"), toml::Value::Integer(8));
        assert_eq!(value("\"quoted\""), toml::Value::String("quoted".into()));
        assert_eq!(value("0.0.0.0:9000"), toml::Value::String("0.0.0.0:9000".into()));
        assert_eq!(value("1979-05-27"), toml::Value::String("1979-05-27".into()));
        assert_eq!(value("{ a = 1 }"), toml::Value::String("{ a = 1 }".into()));
        assert_eq!(value(""), toml::Value::String(String::new()));
    }
}
