//! `TIDINGS__<SECTION>__<KEY>` environment variables: one for every option of the config file, so a deployment
//! configured only through its environment (containers) can set any of them. `TIDINGS__LIMITS__MAX_CONNECTIONS=
//! 5000` sets `[limits] max_connections`; `TIDINGS__PUBLIC_URL=http://10.0.0.5:3000` sets `public_url`.
//!
//! A value is read as a TOML value (`5000`, `true`, `["10.0.0.0/8"]`, `"quoted"`), and as a plain string when it is
//! not one. The names come from the options themselves (the default config), so every option has one; lists of
//! tables (`[[namespaces]]`, `[[rooms]]`) stay in the file.

use super::{Config, ConfigError};

/// The variable of the option at `path` (`["limits", "max_connections"]` → `TIDINGS__LIMITS__MAX_CONNECTIONS`).
pub fn env_name(path: &[&str]) -> String {
    let mut name = String::from("TIDINGS");
    for part in path {
        name.push_str("__");
        name.push_str(&part.to_ascii_uppercase());
    }
    name
}

/// Every option that has a variable, as its path.
pub fn option_paths() -> Vec<Vec<String>> {
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    let mut paths = Vec::new();
    for (key, value) in &defaults {
        match value {
            toml::Value::Table(section) => {
                for (inner, value) in section {
                    if !is_table_list(value) && !value.is_table() {
                        paths.push(vec![key.clone(), inner.clone()]);
                    }
                }
            }
            value if !is_table_list(value) && !TABLE_LISTS.contains(&key.as_str()) => {
                paths.push(vec![key.clone()])
            }
            _ => {}
        }
    }
    paths
}

/// Options that are lists of tables, empty by default.
const TABLE_LISTS: [&str; 2] = ["namespaces", "rooms"];

fn is_table_list(value: &toml::Value) -> bool {
    value
        .as_array()
        .is_some_and(|items| items.first().is_some_and(toml::Value::is_table))
}

/// The options set by `TIDINGS__*` variables (`get` reads the environment), as a TOML table to lay over the
/// file; empty when none is set. Empty variables count as unset.
pub fn collect(get: &impl Fn(&str) -> Option<String>) -> toml::Table {
    let mut table = toml::Table::new();
    for path in option_paths() {
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        let Some(text) = get(&env_name(&parts)).filter(|v| !v.is_empty()) else {
            continue;
        };
        let value = parse_value(&text);
        match parts.as_slice() {
            [key] => {
                table.insert((*key).to_owned(), value);
            }
            [section, key] => {
                let entry = table
                    .entry((*section).to_owned())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let Some(section) = entry.as_table_mut() {
                    section.insert((*key).to_owned(), value);
                }
            }
            _ => {}
        }
    }
    table
}

/// A TOML value, or the text itself as a string.
fn parse_value(text: &str) -> toml::Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

/// Lays `overlay` over `base`, section by section.
pub fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(section)), toml::Value::Table(over)) => {
                section.extend(over);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Applies `overlay` to the file text `file` (or the defaults) and reads the result.
pub fn load(file: Option<(&str, &str)>, overlay: toml::Table) -> Result<Config, ConfigError> {
    let mut table = match file {
        Some((text, origin)) => {
            text.parse::<toml::Table>()
                .map_err(|error| ConfigError::Parse {
                    origin: origin.to_owned(),
                    error,
                })?
        }
        None => toml::Table::new(),
    };
    merge(&mut table, overlay);
    toml::Value::Table(table)
        .try_into()
        .map_err(|error| ConfigError::Parse {
            origin: "(with the TIDINGS__* environment)".to_owned(),
            error,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn every_deployment_option_has_a_variable() {
        let names: Vec<String> = option_paths()
            .iter()
            .map(|p| env_name(&p.iter().map(String::as_str).collect::<Vec<_>>()))
            .collect();
        for expected in [
            "TIDINGS__PUBLIC_URL",
            "TIDINGS__REDIS__KEY_PREFIX",
            "TIDINGS__LIMITS__MAX_CONNECTIONS",
            "TIDINGS__LIMITS__TRUSTED_PROXIES",
            "TIDINGS__HISTORY__MAX_EVENTS",
            "TIDINGS__ENGINE__PING_INTERVAL_MS",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        assert!(
            !names.iter().any(|n| n.contains("NAMESPACES")),
            "lists of tables stay in the file"
        );
    }

    #[test]
    fn variables_override_the_file_with_toml_values() {
        let overlay = collect(&env(&[
            ("TIDINGS__LIMITS__MAX_CONNECTIONS", "5000"),
            ("TIDINGS__LIMITS__TRUSTED_PROXIES", r#"["10.0.0.0/8"]"#),
            ("TIDINGS__REDIS__KEY_PREFIX", "blue"),
            ("TIDINGS__PUBLIC_URL", "http://10.0.0.5:3000"),
            ("TIDINGS__HISTORY__MAX_EVENTS", ""),
        ]));
        let file = "[limits]\nmax_connections = 10\nmax_sessions_per_ip = 7\n";
        let config = load(Some((file, "f.toml")), overlay).unwrap();
        assert_eq!(config.limits.max_connections, 5000);
        assert_eq!(
            config.limits.max_sessions_per_ip, 7,
            "the rest of the section stays"
        );
        assert_eq!(config.limits.trusted_proxies, vec!["10.0.0.0/8".to_owned()]);
        assert_eq!(config.redis.key_prefix, "blue");
        assert_eq!(config.public_url, "http://10.0.0.5:3000");
        assert_eq!(
            config.history.max_events,
            Config::default().history.max_events
        );

        let bad = collect(&env(&[("TIDINGS__LIMITS__MAX_CONNECTIONS", "lots")]));
        let e = load(None, bad).unwrap_err().to_string();
        assert!(
            e.contains("max_connections") && e.contains("TIDINGS__"),
            "{e}"
        );
    }
}
