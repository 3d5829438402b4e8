//! Colour on the console: the verdict line and the names of the signs seen in the diagnosis
//! the [`console`](crate::console) reporter prints.
//!
//! When: [`ColorChoice::Auto`] (the default) colours only when stdout is a terminal and the
//! `NO_COLOR` environment variable is unset or empty (<https://no-color.org>: any non-empty
//! value turns colour off); [`ColorChoice::Always`] and [`ColorChoice::Never`] (the CLI's
//! `--color always|never`) decide regardless, as an explicit choice of the user.
//!
//! How: `std::io::IsTerminal` and four plain ANSI SGR codes (bold, red, green, yellow),
//! written by hand. A crate such as `anstream` or `owo-colors` would bring Windows console
//! shims and styling APIs this one coloured block does not need, as a new dependency of a
//! crate every training loop links (the engine's default reporters); these codes are the
//! same on every terminal that shows colour at all.

use std::sync::atomic::{AtomicU8, Ordering};

use gradguard_core::Verdict;

/// Whether to colour console output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorChoice {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset or empty.
    #[default]
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

static CHOICE: AtomicU8 = AtomicU8::new(0);

/// Sets the process's choice (the CLI's `--color`); [`ColorChoice::Auto`] until set.
pub fn set_color_choice(choice: ColorChoice) {
    let v = match choice {
        ColorChoice::Auto => 0,
        ColorChoice::Always => 1,
        ColorChoice::Never => 2,
    };
    CHOICE.store(v, Ordering::Relaxed);
}

/// The process's choice (see [`set_color_choice`]).
pub fn color_choice() -> ColorChoice {
    match CHOICE.load(Ordering::Relaxed) {
        1 => ColorChoice::Always,
        2 => ColorChoice::Never,
        _ => ColorChoice::Auto,
    }
}

/// Whether `NO_COLOR` asks for no colour: set to a non-empty value.
pub fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// The rule of the [module docs](self), from its inputs: whether output to a stream that
/// `is_terminal` (or not) is coloured under `choice` with `NO_COLOR` set (`no_color`) or not.
pub fn decide(choice: ColorChoice, is_terminal: bool, no_color: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => is_terminal && !no_color,
    }
}

/// Whether to colour what goes to stdout, by the process's choice, stdout and `NO_COLOR`.
pub fn stdout_colored() -> bool {
    use std::io::IsTerminal;
    decide(
        color_choice(),
        std::io::stdout().is_terminal(),
        no_color_env(),
    )
}

const RESET: &str = "\x1b[0m";
const BOLD_RED: &str = "\x1b[1;31m";
const BOLD_GREEN: &str = "\x1b[1;32m";
const BOLD_YELLOW: &str = "\x1b[1;33m";
const RED: &str = "\x1b[31m";

/// The colour of a verdict: green healthy, yellow suspect or not learning, red exploding.
fn verdict_style(v: Verdict) -> &'static str {
    match v {
        Verdict::Healthy => BOLD_GREEN,
        Verdict::Suspect | Verdict::NotLearning => BOLD_YELLOW,
        Verdict::Exploding => BOLD_RED,
    }
}

/// `text` as [`Diagnosis::to_plain_words`](gradguard_core::Diagnosis::to_plain_words) writes
/// it, with the `Verdict:` line in the verdict's colour and the name of each sign seen
/// (`[x]` lines of the checklist) in red. Padding is kept: codes wrap the words only, so
/// columns line up as in the plain text. Any other line is returned as it is.
pub fn paint_diagnosis(text: &str, verdict: Verdict) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        if body.starts_with("Verdict: ") {
            out.push_str(verdict_style(verdict));
            out.push_str(body);
            out.push_str(RESET);
        } else if let Some(rest) = body.strip_prefix("  [x] ") {
            let name_len = rest.find(' ').unwrap_or(rest.len());
            let (name, tail) = rest.split_at(name_len);
            out.push_str("  [x] ");
            out.push_str(RED);
            out.push_str(name);
            out.push_str(RESET);
            out.push_str(tail);
        } else {
            out.push_str(body);
        }
        out.push_str(nl);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        use ColorChoice::*;
        assert!(decide(Auto, true, false));
        assert!(!decide(Auto, false, false), "not a terminal");
        assert!(!decide(Auto, true, true), "NO_COLOR");
        assert!(
            decide(Always, false, true),
            "an explicit --color always wins"
        );
        assert!(!decide(Never, true, false));
    }

    #[test]
    fn verdict_line_and_seen_signs_are_coloured_and_columns_kept() {
        let text = "Verdict: exploding (the loss became NaN)\nSigns of exploding gradients:\n  \
                    [x] loss_nonfinite              the loss is NaN - first at step 9, 1 time(s)\n  \
                    [ ] grad_spike                  a spike\nWhat to try:\n";
        let painted = paint_diagnosis(text, Verdict::Exploding);
        assert!(painted.starts_with("\x1b[1;31mVerdict: exploding (the loss became NaN)\x1b[0m\n"));
        assert!(painted.contains("  [x] \x1b[31mloss_nonfinite\x1b[0m              the loss"));
        assert!(painted.contains("\n  [ ] grad_spike                  a spike\n"));
        // Without the codes it is the plain text, byte for byte.
        let stripped = painted
            .replace("\x1b[1;31m", "")
            .replace("\x1b[31m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, text);
        assert!(paint_diagnosis("Verdict: healthy (ok)", Verdict::Healthy)
            .starts_with("\x1b[1;32mVerdict: healthy"));
        assert!(
            paint_diagnosis("Verdict: suspect (x)\n", Verdict::Suspect).starts_with("\x1b[1;33m")
        );
    }
}
