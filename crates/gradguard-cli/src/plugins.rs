//! `gradguard plugins [--json]`: every registered plugin kind with its parameters.

use std::fmt::Write;

use gradguard_core::registry::{plugin_info, registered_kinds};
use gradguard_core::{Family, ParamDoc};
use serde::Serialize;

/// Arguments of `gradguard plugins`.
#[derive(Debug, clap::Args)]
pub struct PluginsArgs {
    /// Print JSON (one object per kind) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One registered kind as listed.
#[derive(Debug, Serialize)]
pub struct ListedPlugin {
    /// Detector, remedy or reporter.
    pub family: Family,
    /// The `kind` name.
    pub kind: String,
    /// One-line description (empty when the plugin did not describe itself).
    pub summary: String,
    /// Parameters with defaults (`default: null` marks a parameter without a default: required
    /// when the example names it, optional otherwise).
    pub params: Vec<ParamDoc>,
    /// A complete set of parameters (TOML inline-table body).
    pub example: String,
    /// Other frameworks' names a spec may use for this kind, with where each comes from.
    pub aliases: Vec<ListedAlias>,
}

/// Another name for a kind ([`gradguard_core::KindAlias`]).
#[derive(Debug, Serialize)]
pub struct ListedAlias {
    /// The name.
    pub alias: String,
    /// Where it comes from.
    pub origin: String,
}

/// Every kind described with `describe_plugin!` (the registry's own entries; the
/// registration tests check typetag deserialises exactly these), with its description.
pub fn list() -> Vec<ListedPlugin> {
    let mut out = Vec::new();
    for family in Family::ALL {
        for kind in registered_kinds(family) {
            let info = plugin_info(family, &kind);
            out.push(ListedPlugin {
                family,
                summary: info.map(|i| i.summary.to_string()).unwrap_or_default(),
                params: info.map(|i| i.params.to_vec()).unwrap_or_default(),
                example: info.map(|i| i.example.to_string()).unwrap_or_default(),
                aliases: gradguard_core::alias::aliases()
                    .into_iter()
                    .filter(|a| a.family == family && a.kind == kind)
                    .map(|a| ListedAlias {
                        alias: a.alias.to_string(),
                        origin: a.origin.to_string(),
                    })
                    .collect(),
                kind,
            });
        }
    }
    out
}

/// The listing as text.
pub fn render_text(plugins: &[ListedPlugin]) -> String {
    let mut s = String::new();
    for family in Family::ALL {
        let _ = writeln!(
            s,
            "{} (in the spec's `{}` list):",
            family.spec_key(),
            family.spec_key()
        );
        let mut any = false;
        for p in plugins.iter().filter(|p| p.family == family) {
            any = true;
            let summary = if p.summary.is_empty() {
                "(no description)"
            } else {
                &p.summary
            };
            let _ = writeln!(s, "  {:<28} {}", p.kind, summary);
            for a in &p.aliases {
                let _ = writeln!(s, "      also read as `{}`: {}", a.alias, a.origin);
            }
            for param in &p.params {
                let default = match param.default {
                    Some(d) => format!("= {d}"),
                    // The example is a complete valid set, so a required parameter appears in
                    // it; a parameter without default that it leaves out is optional.
                    None if mentions(&p.example, param.name) => "(required)".to_string(),
                    None => "(optional)".to_string(),
                };
                let _ = writeln!(s, "      {:<22} {:<14} {}", param.name, default, param.doc);
            }
            let example = if p.example.is_empty() {
                format!("{{ kind = \"{}\" }}", p.kind)
            } else {
                format!("{{ kind = \"{}\", {} }}", p.kind, p.example)
            };
            let _ = writeln!(s, "      example: {example}");
        }
        if !any {
            let _ = writeln!(s, "  (none registered)");
        }
        s.push('\n');
    }
    let declared = gradguard_core::Sign::declared();
    if !declared.is_empty() {
        let _ = writeln!(
            s,
            "signs declared by plugins (in checklists and summaries):"
        );
        for sign in declared {
            let _ = writeln!(s, "  {:<28} {}", sign.as_str(), sign.describe());
        }
    }
    s
}

fn mentions(example: &str, name: &str) -> bool {
    example
        .split(',')
        .any(|kv| kv.split('=').next().map(str::trim) == Some(name))
}

/// Prints the listing.
pub fn run(args: &PluginsArgs) -> anyhow::Result<()> {
    let plugins = list();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plugins)?);
    } else {
        say_text!("{}", render_text(&plugins));
    }
    Ok(())
}
