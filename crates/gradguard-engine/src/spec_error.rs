//! Reading spec files with errors that name the file, the place and what was expected.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// The format of a spec file, chosen by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecFormat {
    /// `.toml`
    Toml,
    /// `.json`
    Json,
}

impl SpecFormat {
    /// The format for `path`'s extension (`.toml` or `.json`, any case).
    pub fn from_path(path: &Path) -> Result<Self, SpecError> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
        {
            Some(e) if e == "toml" => Ok(SpecFormat::Toml),
            Some(e) if e == "json" => Ok(SpecFormat::Json),
            _ => Err(SpecError {
                file: path.to_path_buf(),
                line: None,
                column: None,
                key_path: None,
                message: "expected a file ending in .toml or .json".into(),
            }),
        }
    }
}

/// A spec that could not be read: which file, where in it, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// The file (or a label such as `<inline>` or `demo:regression-sgd`).
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The key path, e.g. `remedies[0].max_norm`, when known.
    pub key_path: Option<String>,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if let Some(path) = &self.key_path {
            write!(f, ": at `{path}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SpecError {}

/// 1-based (line, column) of a byte offset in `text` (column counts characters).
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut line = 1;
    let mut line_start = 0;
    for (i, b) in text.bytes().enumerate().take(offset) {
        if b == b'\n' {
            line += 1;
            line_start = i + 1;
        }
    }
    let column = text
        .get(line_start..offset)
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

fn clean_path(path: &serde_path_to_error::Path) -> Option<String> {
    let p = path.to_string();
    if p.is_empty() || p == "." {
        None
    } else {
        Some(p)
    }
}

/// Turns serde's "unknown variant" message for a plugin `kind` into one that lists the known kinds.
fn explain(message: &str) -> String {
    // typetag already lists the registered kinds ("expected one of `a`, `b`"); when nothing is
    // registered it says "there are no variants", which usually means a plugin crate was not linked.
    if message.contains("there are no variants") {
        return format!(
            "{message} (no plugin of this family is registered: the binary must reference the crate that defines it)"
        );
    }
    match suggestion(message) {
        Some(s) => format!("{message} (did you mean `{s}`?)"),
        None => message.to_string(),
    }
}

/// For serde's "unknown variant `x`, expected one of `a`, `b`" and "unknown field `x`,
/// expected ..." messages: the expected name closest to `x` (edit distance), if one is close.
fn suggestion(message: &str) -> Option<String> {
    let rest = ["unknown variant `", "unknown field `"]
        .iter()
        .find_map(|m| message.split_once(m).map(|(_, r)| r))?;
    let (given, rest) = rest.split_once('`')?;
    let (_, expected) = rest.split_once("expected")?;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    crate::suggest::did_you_mean(given, candidates.iter().copied()).map(str::to_string)
}

/// When `error` is about an unknown kind that a plugin declared as an alias of its own
/// (`clip_grad_norm` for `clip_global_norm`, see [`gradguard_core::alias`]), the text with
/// that one occurrence replaced by the kind; `None` otherwise.
fn rewrite_alias(text: &str, error: &SpecError) -> Option<String> {
    let (_, rest) = error.message.split_once("unknown variant `")?;
    let (given, _) = rest.split_once('`')?;
    let alias = gradguard_core::alias::resolve_any_alias(given)?;
    let line = error.line?;
    let column = error.column.unwrap_or(1);
    // The error's position, as a byte offset (the token starts there in TOML errors, and ends
    // there in JSON ones): the nearest quoted occurrence of the alias around it is replaced.
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let at = line_start
        + text[line_start..]
            .chars()
            .take(column.saturating_sub(1))
            .map(char::len_utf8)
            .sum::<usize>();
    let mut best: Option<(usize, usize)> = None; // (distance, offset of the token)
    for quote in ['"', '\''] {
        let token = format!("{quote}{given}{quote}");
        for (offset, _) in text.match_indices(&token) {
            let d = offset.abs_diff(at).min((offset + token.len()).abs_diff(at));
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, offset));
            }
        }
    }
    let (_, offset) = best?;
    tracing::info!(
        "{}: reading kind `{given}` ({}) as `{}`",
        error.file.display(),
        alias.origin,
        alias.kind
    );
    Some(format!(
        "{}\"{}\"{}",
        &text[..offset],
        alias.kind,
        &text[offset + given.len() + 2..]
    ))
}

/// Parses `text` as `T` in `format`; errors name `file`, the line and column and the key path.
/// Unknown keys are rejected wherever the types say `deny_unknown_fields`; an unknown kind or
/// field close to a known one gets a "did you mean" suggestion. Kinds that a plugin declared
/// as aliases (other frameworks' names with the same semantics, e.g. PyTorch's
/// `clip_grad_norm`) are read as the plugin's kind.
pub fn parse_str<T: DeserializeOwned>(
    text: &str,
    format: SpecFormat,
    file: &Path,
) -> Result<T, SpecError> {
    let mut text = std::borrow::Cow::Borrowed(text);
    // Each pass resolves one alias; a spec cannot hold more plugin tables than this bounds.
    for _ in 0..256 {
        match parse_once(&text, format, file) {
            Err(e) => match rewrite_alias(&text, &e) {
                Some(rewritten) => text = std::borrow::Cow::Owned(rewritten),
                None => return Err(e),
            },
            ok => return ok,
        }
    }
    parse_once(&text, format, file)
}

fn parse_once<T: DeserializeOwned>(
    text: &str,
    format: SpecFormat,
    file: &Path,
) -> Result<T, SpecError> {
    match format {
        SpecFormat::Toml => {
            let de = toml::Deserializer::new(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let key_path = clean_path(e.path());
                let inner = e.into_inner();
                let (line, column) = match inner.span() {
                    Some(span) => {
                        let at = refine_offset(text, span.clone(), inner.message())
                            .unwrap_or(span.start);
                        let (l, c) = line_column(text, at);
                        (Some(l), Some(c))
                    }
                    None => (None, None),
                };
                SpecError {
                    file: file.to_path_buf(),
                    line,
                    column,
                    key_path,
                    message: explain(inner.message().trim()),
                }
            })
        }
        SpecFormat::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let value: Result<T, _> = serde_path_to_error::deserialize(&mut de);
            let value = value.map_err(|e| {
                let key_path = clean_path(e.path());
                let inner = e.into_inner();
                let message = strip_json_position(&inner.to_string());
                SpecError {
                    file: file.to_path_buf(),
                    line: (inner.line() > 0).then_some(inner.line()),
                    column: (inner.line() > 0).then_some(inner.column()),
                    key_path,
                    message: explain(&message),
                }
            })?;
            de.end().map_err(|e| SpecError {
                file: file.to_path_buf(),
                line: Some(e.line()),
                column: Some(e.column()),
                key_path: None,
                message: "expected the end of the file after the spec".into(),
            })?;
            Ok(value)
        }
    }
}

/// The token a serde message complains about, as it would appear in the TOML text.
fn offending_token(message: &str) -> Option<(String, bool)> {
    // (token, is_key)
    if let Some(rest) = message.split("unknown field `").nth(1) {
        return rest.split('`').next().map(|k| (k.to_string(), true));
    }
    if let Some(rest) = message.split("string \"").nth(1) {
        return rest.split('"').next().map(|v| (format!("\"{v}\""), false));
    }
    for marker in [
        "integer `",
        "floating point `",
        "boolean `",
        "unknown variant `",
    ] {
        if let Some(rest) = message.split(marker).nth(1) {
            let v = rest.split('`').next()?;
            let token = if marker == "unknown variant `" {
                format!("\"{v}\"")
            } else {
                v.to_string()
            };
            return Some((token, false));
        }
    }
    None
}

/// Where inside `span` the offending token of `message` is (errors raised inside plugin
/// tables and tagged sections carry only the span of the whole table).
fn refine_offset(text: &str, span: std::ops::Range<usize>, message: &str) -> Option<usize> {
    let (token, is_key) = offending_token(message)?;
    // An empty key (`'' = 1`) names no token: searching for "" would never advance.
    if token.is_empty() {
        return None;
    }
    let region = text.get(span.start..span.end.min(text.len()))?;
    let mut search_from = 0;
    while let Some(found) = region[search_from..].find(&token) {
        let at = search_from + found;
        let before = region[..at].chars().next_back();
        let after = region[at + token.len()..].chars().next();
        let boundary_before = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
        let boundary_after = after.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
        let key_ok = !is_key || region[at + token.len()..].trim_start().starts_with('=');
        if boundary_before && boundary_after && key_ok {
            return Some(span.start + at);
        }
        search_from = at + token.len();
    }
    None
}

fn strip_json_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Reads and parses the spec file at `path` (format from its extension).
pub fn load_file<T: DeserializeOwned>(path: &Path) -> Result<T, SpecError> {
    let format = SpecFormat::from_path(path)?;
    let bytes = std::fs::read(path).map_err(|e| SpecError {
        file: path.to_path_buf(),
        line: None,
        column: None,
        key_path: None,
        message: format!("cannot read the file: {e}"),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let (line, column) = {
            let valid = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
            line_column(&prefix, valid)
        };
        SpecError {
            file: path.to_path_buf(),
            line: Some(line),
            column: Some(column),
            key_path: None,
            message: "expected UTF-8 text".into(),
        }
    })?;
    parse_str(&text, format, path)
}

/// A label for specs that do not come from a file.
pub fn inline_label(name: &str) -> PathBuf {
    PathBuf::from(format!("<{name}>"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        max_norm: f64,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[allow(dead_code)]
        name: String,
        #[allow(dead_code)]
        items: Vec<Inner>,
    }

    #[test]
    fn toml_error_names_line_column_and_key() {
        let text = "name = \"x\"\n\n[[items]]\nmax_norm = \"big\"\n";
        let err = parse_str::<Outer>(text, SpecFormat::Toml, Path::new("a.toml")).unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert_eq!(err.column, Some(12), "{err}");
        assert_eq!(err.key_path.as_deref(), Some("items[0].max_norm"), "{err}");
        assert!(
            err.to_string()
                .starts_with("a.toml:4:12: at `items[0].max_norm`: "),
            "{err}"
        );
        assert!(err.message.contains("expected"), "{err}");
    }

    #[test]
    fn unknown_keys_rejected_in_both_formats() {
        let text = "name = \"x\"\nitems = []\nextra = 1\n";
        let err = parse_str::<Outer>(text, SpecFormat::Toml, Path::new("a.toml")).unwrap_err();
        assert!(err.message.contains("unknown field `extra`"), "{err}");
        assert_eq!(err.line, Some(3), "{err}");
        let json = "{\"name\": \"x\",\n \"items\": [{\"max_norm\": 1, \"mx\": 2}]}";
        let err = parse_str::<Outer>(json, SpecFormat::Json, Path::new("a.json")).unwrap_err();
        assert!(err.message.contains("unknown field `mx`"), "{err}");
        assert_eq!(err.key_path.as_deref(), Some("items[0].mx"), "{err}");
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn syntax_errors_and_trailing_garbage() {
        let err =
            parse_str::<Outer>("name = \n", SpecFormat::Toml, Path::new("b.toml")).unwrap_err();
        assert_eq!(err.line, Some(1), "{err}");
        let err = parse_str::<Outer>(
            "{\"name\":\"x\",\"items\":[]} x",
            SpecFormat::Json,
            Path::new("b.json"),
        )
        .unwrap_err();
        assert_eq!(err.line, Some(1), "{err}");
        assert!(SpecFormat::from_path(Path::new("spec.yaml")).is_err());
    }

    #[test]
    fn errors_inside_tagged_tables_point_at_the_token() {
        #[derive(Deserialize, Debug)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        enum Model {
            Mlp(#[allow(dead_code)] Mlp),
        }
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct Mlp {
            #[allow(dead_code)]
            hidden: Vec<usize>,
        }
        #[derive(Deserialize, Debug)]
        struct Spec {
            #[allow(dead_code)]
            model: Model,
        }
        let text = "[model]\nkind = \"mlp\"\nhidden = [25, \"wide\"]\n";
        let err = parse_str::<Spec>(text, SpecFormat::Toml, Path::new("m.toml")).unwrap_err();
        assert_eq!((err.line, err.column), (Some(3), Some(15)), "{err}");
        let text = "[model]\nkind = \"mlp\"\nhidden = [1]\nhiden = 2\n";
        let err = parse_str::<Spec>(text, SpecFormat::Toml, Path::new("m.toml")).unwrap_err();
        assert_eq!((err.line, err.column), (Some(4), Some(1)), "{err}");
    }

    #[test]
    fn line_column_counts_chars() {
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
        assert_eq!(line_column("", 10), (1, 1));
    }

    fn remedies(text: &str, format: SpecFormat) -> Result<Vec<serde_json::Value>, SpecError> {
        #[derive(Deserialize)]
        struct Spec {
            remedies: Vec<Box<dyn gradguard_core::Remedy>>,
        }
        crate::link_plugins();
        let spec: Spec = parse_str(text, format, Path::new("aliases.spec"))?;
        Ok(spec
            .remedies
            .iter()
            .map(|r| serde_json::to_value(r).expect("json"))
            .collect())
    }

    #[test]
    fn other_frameworks_names_are_read_as_the_kinds_they_alias() {
        let toml = r#"
[[remedies]]
kind = "clip_grad_value"
clip_value = 0.5
[[remedies]]
kind = 'clipnorm'
max_norm = 2.0
[[remedies]]
kind = "clip_grad_norm"
max_norm = 1.0
norm_type = "inf"
[[remedies]]
kind = "global_clipnorm"
max_norm = 3.0
"#;
        let got = remedies(toml, SpecFormat::Toml).expect("aliases resolve");
        let kinds: Vec<&str> = got
            .iter()
            .map(|v| v["kind"].as_str().expect("kind"))
            .collect();
        assert_eq!(
            kinds,
            [
                "clip_value",
                "clip_norm",
                "clip_global_norm",
                "clip_global_norm"
            ]
        );
        assert_eq!(got[0]["clip_value"], 0.5);
        assert_eq!(got[1]["max_norm"], 2.0);
        assert_eq!(got[2]["norm_type"], "inf");
        assert_eq!(got[3]["max_norm"], 3.0);
        let json = r#"{"remedies": [{"kind": "clipvalue", "clip_value": 1.5},
                                    {"kind":"clip_grad_norm","max_norm":1.0}]}"#;
        let got = remedies(json, SpecFormat::Json).expect("aliases resolve");
        assert_eq!(got[0]["kind"], "clip_value");
        assert_eq!(got[0]["clip_value"], 1.5);
        assert_eq!(got[1]["kind"], "clip_global_norm");
    }

    #[test]
    fn a_near_miss_kind_or_field_gets_a_suggestion() {
        let e = remedies(
            "[[remedies]]\nkind = \"clip_globl_norm\"\n",
            SpecFormat::Toml,
        )
        .expect_err("typo");
        assert!(
            e.message.contains("did you mean `clip_global_norm`?"),
            "{e}"
        );
        assert_eq!(e.line, Some(2), "{e}");
        let e = remedies(
            "[[remedies]]\nkind = \"clip_global_norm\"\nmax_nrom = 1.0\n",
            SpecFormat::Toml,
        )
        .expect_err("typo");
        assert!(e.message.contains("did you mean `max_norm`?"), "{e}");
        // Nothing close: no suggestion.
        let e = remedies("[[remedies]]\nkind = \"zzzzzzzzzz\"\n", SpecFormat::Toml)
            .expect_err("unknown");
        assert!(!e.message.contains("did you mean"), "{e}");
        let got = remedies(
            "[[remedies]]\nkind = \"clipnorm\"\nmax_norm = 1.0\n",
            SpecFormat::Toml,
        )
        .expect("alias");
        assert_eq!(got[0]["kind"], "clip_norm");
    }
}
