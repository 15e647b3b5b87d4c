//! `config/dmpushd.toml` is the configuration reference (issue 13): it cannot drift from the code.
//!
//! The code's key set is what `Settings::default()` serialises to (with one tenant, one SMSC
//! account and one SIP credential so the `[[…]]` lists show their keys); the reference's key set
//! is every key line in the file, commented out or not. Both directions are checked, the
//! defaults shown must be the code's defaults, each environment variable named must really set its
//! key, and `check-config` accepts the reference and every example configuration in the repo.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::Command,
};

use dmpushd::{
    binding::{sip::SipCredential, wap::SmscConfig},
    config::{AdminConfig, Settings, TenantConfig},
};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn reference_text() -> String {
    std::fs::read_to_string(repo().join("config/dmpushd.toml")).unwrap()
}

/// `key = value` or `[section]` / `[[list]]`, with the leading `# ` of a commented-out line
/// removed; prose comments match neither.
enum Line {
    Header(String),
    Key(String),
    Other,
}

fn classify(raw: &str) -> (Line, bool) {
    let t = raw.trim();
    let (body, commented) = match t.strip_prefix('#') {
        Some(rest) => (rest.trim(), true),
        None => (t, false),
    };
    if let Some(h) = body
        .strip_prefix("[[")
        .and_then(|r| r.split_once("]]"))
        .or_else(|| body.strip_prefix('[').and_then(|r| r.split_once(']')))
    {
        let name = h.0.trim();
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
            && h.1.trim().is_empty()
        {
            return (Line::Header(name.to_owned()), commented);
        }
    }
    if let Some((k, v)) = body.split_once('=') {
        let k = k.trim();
        if !k.is_empty()
            && k.starts_with(|c: char| c.is_ascii_lowercase())
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !v.trim().is_empty()
        {
            return (Line::Key(k.to_owned()), commented);
        }
    }
    (Line::Other, commented)
}

/// The reference with every commented-out key and header made live.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match classify(l) {
            (Line::Header(_) | Line::Key(_), true) => l.trim().trim_start_matches('#').trim(),
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Dotted key paths of the reference, each with the comment lines written above it.
fn reference_keys(text: &str) -> BTreeMap<String, String> {
    let mut keys = BTreeMap::new();
    let mut section = String::new();
    let mut comments = String::new();
    for l in text.lines() {
        match classify(l).0 {
            Line::Header(h) => {
                section = h;
                comments.clear();
            }
            Line::Key(k) => {
                let path = if section.is_empty() {
                    k
                } else {
                    format!("{section}.{k}")
                };
                let prev = keys.insert(path.clone(), std::mem::take(&mut comments));
                assert!(
                    prev.is_none() || path.starts_with("tenants."),
                    "{path} appears twice in the reference"
                );
            }
            Line::Other => {
                comments.push_str(l);
                comments.push('\n');
            }
        }
    }
    keys
}

/// Leaf paths of a serialised value; a list of tables contributes its elements' keys.
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        Value::Array(a) if a.first().is_some_and(Value::is_object) => {
            for e in a {
                flatten(prefix, e, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned(), v.clone());
        }
    }
}

/// What the code knows: the defaults, with one element in each `[[…]]` list.
fn code_defaults() -> BTreeMap<String, Value> {
    let mut s = Settings::default();
    s.tenants.push(TenantConfig::default());
    s.admins.push(AdminConfig::default());
    s.bindings.wap.smsc.push(SmscConfig::default());
    s.bindings.sip.credentials.push(SipCredential::default());
    let mut out = BTreeMap::new();
    flatten("", &serde_json::to_value(&s).unwrap(), &mut out);
    out
}

/// Keys in `[[…]]` lists: set in the file only; tenants and credentials have no meaningful default.
fn in_list(path: &str) -> bool {
    [
        "tenants.",
        "admins.",
        "bindings.wap.smsc.",
        "bindings.sip.credentials.",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

fn env_name(path: &str) -> String {
    format!("DMPUSHD__{}", path.replace('.', "__").to_ascii_uppercase())
}

#[test]
fn reference_names_exactly_the_keys_of_the_code() {
    let code: BTreeSet<String> = code_defaults().into_keys().collect();
    let reference: BTreeSet<String> = reference_keys(&reference_text()).into_keys().collect();
    let missing: Vec<_> = code.difference(&reference).collect();
    let unknown: Vec<_> = reference.difference(&code).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "config/dmpushd.toml drifted from the code.\n  keys in the code, missing from the \
         reference: {missing:?}\n  keys in the reference the code lacks: {unknown:?}"
    );
    // The checker itself can fail: a key removed from the text is reported.
    let cut = reference_text().replace("max_forwards = 70", "");
    assert!(!reference_keys(&cut).contains_key("bindings.sip.max_forwards"));
}

/// Every key shown with a value shows the code's default; keys without a default (optional
/// values) show an example. The whole reference, commented lines included, is a valid file.
#[test]
fn reference_shows_the_defaults_and_every_line_is_valid() {
    let text = uncommented(&reference_text());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.toml");
    std::fs::write(&file, &text).unwrap();
    let all = Settings::load_with_env(Some(&file), true, Some(HashMap::new()))
        .unwrap_or_else(|e| panic!("the reference with every line uncommented: {e}"));
    let mut shown = BTreeMap::new();
    flatten("", &serde_json::to_value(&all).unwrap(), &mut shown);
    let mut wrong = Vec::new();
    for (path, default) in code_defaults() {
        if default.is_null()
            || path.starts_with("tenants.")
            || path.starts_with("admins.")
            || path.contains(".credentials.")
        {
            continue;
        }
        if shown.get(&path) != Some(&default) {
            wrong.push(format!(
                "{path}: shown {:?}, default {default}",
                shown.get(&path)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "defaults in the reference are not the code's: {wrong:#?}"
    );

    // The file as shipped (commented lines inactive) is exactly the defaults.
    let shipped = Settings::load_with_env(
        Some(&repo().join("config/dmpushd.toml")),
        true,
        Some(HashMap::new()),
    )
    .unwrap();
    assert_eq!(
        serde_json::to_value(&shipped).unwrap(),
        serde_json::to_value(Settings::default()).unwrap()
    );
}

/// Each key outside the `[[…]]` lists names its environment variable, and that variable sets it.
#[test]
fn reference_names_each_keys_environment_variable() {
    let keys = reference_keys(&reference_text());
    let defaults = code_defaults();
    let mut missing = Vec::new();
    for (path, comments) in &keys {
        if in_list(path) {
            continue;
        }
        let env = env_name(path);
        if !comments.contains(&env) {
            missing.push(env.clone());
        }
        // The variable really reaches the key: set it to a value that differs from the default.
        let probe = match defaults.get(path) {
            Some(Value::Bool(b)) => Some((format!("{}", !b), Value::Bool(!b))),
            Some(Value::Number(n)) if n.is_u64() => {
                let v = n.as_u64().unwrap() + 1;
                // A few keys have range limits; 1 above the default stays inside them.
                let v = if path.ends_with("max_forwards") {
                    69
                } else {
                    v
                };
                Some((v.to_string(), Value::from(v)))
            }
            _ => None,
        };
        if let Some((raw, want)) = probe {
            let env = HashMap::from([(env.clone(), raw)]);
            let s = Settings::load_with_env(None, false, Some(env)).unwrap();
            let mut got = BTreeMap::new();
            flatten("", &serde_json::to_value(&s).unwrap(), &mut got);
            assert_eq!(
                got.get(path),
                Some(&want),
                "{path} via its environment variable"
            );
        }
    }
    assert!(
        missing.is_empty(),
        "env names missing from the reference: {missing:?}"
    );
}

/// Configuration files in the repo: `*.toml` under config/ and deploy/, and the `dmpushd.toml`
/// embedded in deploy/ YAML (a Kubernetes ConfigMap).
fn example_configs() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("config"), &mut files);
    walk(&repo().join("deploy"), &mut files);
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.strip_prefix(repo()).unwrap().display().to_string();
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        if ext == "toml" {
            out.push((name, text));
        } else if ext == "yaml" || ext == "yml" {
            // `dmpushd.toml: |` followed by a more indented block.
            let lines: Vec<&str> = text.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                let indent = l.len() - l.trim_start().len();
                if !l.trim_start().starts_with("dmpushd.toml: |") {
                    continue;
                }
                let block: Vec<&str> = lines[i + 1..]
                    .iter()
                    .take_while(|b| b.trim().is_empty() || b.len() - b.trim_start().len() > indent)
                    .copied()
                    .collect();
                let strip = block
                    .iter()
                    .filter(|b| !b.trim().is_empty())
                    .map(|b| b.len() - b.trim_start().len())
                    .min()
                    .unwrap_or(0);
                let toml = block
                    .iter()
                    .map(|b| b.get(strip..).unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("\n");
                out.push((format!("{name} (line {})", i + 1), toml));
            }
        }
    }
    out
}

#[test]
fn check_config_accepts_the_reference_and_every_example() {
    let examples = example_configs();
    assert!(
        examples.iter().any(|(n, _)| n == "config/dmpushd.toml"),
        "{:?}",
        examples.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    let dir = tempfile::tempdir().unwrap();
    for (i, (name, text)) in examples.iter().enumerate() {
        let file = dir.path().join(format!("{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_dmpushd"))
            .env_clear()
            .args(["check-config", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "check-config {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
