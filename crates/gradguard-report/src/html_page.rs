//! The parts of gradguard's HTML pages: escaping, the page frame with its inline style,
//! tables, the diagnosis checklist and the prescriptions.
//!
//! Pages are self-contained: the style is inline, the charts are inline SVG, and nothing
//! is fetched from the network (no scripts, no fonts, no images by URL).

use gradguard_core::{Diagnosis, Prescription, Verdict};

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1000px;color:#222;padding:0 12px}\
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.25em;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}\
table{border-collapse:collapse;margin:8px 0;font-size:.92em}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}\
.healthy{background:#2a8a2a}.suspect{background:#c88a00}.exploding{background:#c62828}.not_learning{background:#6a5acd}\
.seen{color:#c62828;font-weight:600}.unseen{color:#777}.note{color:#555;font-size:.9em;margin:2px 0 14px}\
figure{margin:10px 0}svg{max-width:100%;height:auto}footer{margin-top:32px;color:#777;font-size:.85em}";

/// A whole page: `title` in `<title>`, `body` as given (already HTML).
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n\
         <footer>Written by gradguard {}. This page is self-contained: it loads nothing from the network.</footer>\n\
         </body>\n</html>\n",
        escape(title),
        env!("CARGO_PKG_VERSION"),
    )
}

/// A table; `rows` hold HTML (escape text with [`escape`]). Cells of columns listed in
/// `numeric` are right-aligned. No header row when every header is empty.
pub fn table(headers: &[&str], rows: &[Vec<String>], numeric: &[usize]) -> String {
    let mut out = String::from("<table>\n");
    if headers.iter().any(|h| !h.is_empty()) {
        out.push_str("<tr>");
        for h in headers {
            out.push_str(&format!("<th>{}</th>", escape(h)));
        }
        out.push_str("</tr>\n");
    }
    for row in rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            if numeric.contains(&i) {
                out.push_str(&format!("<td class=\"num\">{cell}</td>"));
            } else {
                out.push_str(&format!("<td>{cell}</td>"));
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

/// The verdict as a coloured badge.
pub fn verdict_badge(verdict: Verdict) -> String {
    format!("<span class=\"badge {0}\">{0}</span>", verdict.as_str())
}

/// An optional step for a cell: the number or an en dash.
pub fn opt_step(step: Option<u64>) -> String {
    step.map_or_else(|| "&ndash;".into(), |s| s.to_string())
}

/// An optional number for a cell.
pub fn opt_number(x: Option<f64>) -> String {
    x.map_or_else(|| "&ndash;".into(), |v| escape(&crate::format_number(v)))
}

/// The diagnosis: verdict, rule, origin, and the checklist of every sign.
pub fn diagnosis_section(d: &Diagnosis) -> String {
    let mut out = String::from("<h2>Diagnosis</h2>\n");
    out.push_str(&format!(
        "<p>Verdict: {} &mdash; {}</p>\n",
        verdict_badge(d.verdict),
        escape(&d.rule)
    ));
    if let Some(origin) = &d.origin {
        out.push_str(&format!("<p>Where it started: {}</p>\n", escape(origin)));
    }
    out.push_str("<h2>Signs of exploding gradients</h2>\n");
    let rows: Vec<Vec<String>> = d
        .checklist
        .iter()
        .map(|s| {
            let mark = if s.seen {
                "<span class=\"seen\">&#10007; seen</span>"
            } else {
                "<span class=\"unseen\">not seen</span>"
            };
            vec![
                mark.to_string(),
                format!("<code>{}</code>", s.sign.as_str()),
                escape(s.sign.describe()),
                opt_step(s.first_step),
                if s.seen {
                    s.count.to_string()
                } else {
                    "0".into()
                },
                s.layer.as_deref().map_or_else(
                    || "&ndash;".into(),
                    |l| format!("<code>{}</code>", escape(l)),
                ),
                s.first_message.as_deref().map_or_else(String::new, escape),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "",
            "sign",
            "meaning",
            "first step",
            "count",
            "layer",
            "first finding",
        ],
        &rows,
        &[3, 4],
    ));
    out
}

/// The prescriptions, most fitting first.
pub fn prescriptions_section(prescriptions: &[Prescription]) -> String {
    let mut out = String::from("<h2>What to try</h2>\n");
    if prescriptions.is_empty() {
        out.push_str("<p class=\"note\">No prescriptions: nothing called for a cure.</p>\n");
        return out;
    }
    let rows: Vec<Vec<String>> = prescriptions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            vec![
                (i + 1).to_string(),
                format!("<code>{}</code>", escape(&p.remedy.label())),
                escape(&p.evidence.describe()),
                escape(&p.reason),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "#",
            "cure",
            "measured (seeds healthy, held-out loss)",
            "why",
        ],
        &rows,
        &[0],
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("a<b & \"c\" 'd'>"),
            "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;"
        );
    }

    #[test]
    fn page_is_self_contained() {
        let p = page("t <x>", "<p>hi</p>");
        assert!(p.starts_with("<!DOCTYPE html>"));
        assert!(p.contains("<title>t &lt;x&gt;</title>"));
        assert!(!p.contains("http://") && !p.contains("https://") && !p.contains("<script"));
    }

    #[test]
    fn checklist_and_prescriptions() {
        let d = crate::test_util::diagnosis();
        let html = diagnosis_section(&d);
        assert!(html.contains("<span class=\"badge exploding\">exploding</span>"));
        assert_eq!(html.matches("<tr>").count(), 1 + d.checklist.len());
        assert!(
            html.contains("the loss is NaN &lt;b&gt;"),
            "messages are escaped"
        );
        let p = prescriptions_section(&d.prescriptions);
        assert!(
            p.contains("<code>clip_global_norm</code>")
                && p.contains("bounds the update &amp; keeps")
        );
        assert!(prescriptions_section(&[]).contains("No prescriptions"));
        let t = table(&["a", "b"], &[vec!["1".into(), "x".into()]], &[0]);
        assert!(t.contains("<td class=\"num\">1</td><td>x</td>"));
    }
}
