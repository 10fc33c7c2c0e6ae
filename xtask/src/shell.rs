//! Where the command line talks to people: cargo's status lines (a
//! right-aligned word, coloured when stderr is a terminal that allows it),
//! warnings and errors, at the verbosity the flags chose.
//!
//! Colour: `--color auto` (the default) colours only a terminal, and never
//! when `NO_COLOR` is set (to anything but the empty string) or `TERM` is
//! `dumb`; `CLICOLOR_FORCE` forces it as `--color always` does. The
//! decision is anstream's, made once for the whole process.

use std::fmt::Display;

use anstyle::{AnsiColor, Style};

/// `--color`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when stderr is a terminal and the environment allows it.
    #[default]
    Auto,
    Always,
    Never,
}

/// How much to say: `-q` (errors only), the default, `-v`, `-vv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
    VeryVerbose,
}

impl Verbosity {
    pub fn from_flags(quiet: bool, verbose: u8) -> Verbosity {
        match (quiet, verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            (false, 1) => Verbosity::Verbose,
            (false, _) => Verbosity::VeryVerbose,
        }
    }
}

const STATUS: Style = AnsiColor::Green.on_default().bold();
const NOTE: Style = AnsiColor::Cyan.on_default().bold();
const WARNING: Style = AnsiColor::Yellow.on_default().bold();
const ERROR: Style = AnsiColor::Red.on_default().bold();

/// The one place status, warnings and errors go through.
#[derive(Debug, Clone, Copy)]
pub struct Shell {
    pub verbosity: Verbosity,
}

impl Shell {
    /// A shell for these flags; sets the process's colour choice.
    pub fn new(verbosity: Verbosity, color: ColorChoice) -> Shell {
        let choice = match color {
            ColorChoice::Auto => anstream::ColorChoice::Auto,
            ColorChoice::Always => anstream::ColorChoice::Always,
            ColorChoice::Never => anstream::ColorChoice::Never,
        };
        choice.write_global();
        Shell { verbosity }
    }

    pub fn quiet(&self) -> bool {
        self.verbosity == Verbosity::Quiet
    }

    /// `-v` or more.
    pub fn verbose(&self) -> bool {
        self.verbosity >= Verbosity::Verbose
    }

    /// `-vv`.
    pub fn very_verbose(&self) -> bool {
        self.verbosity >= Verbosity::VeryVerbose
    }

    /// Whether to draw progress: stderr is a terminal and not quiet.
    pub fn progress(&self) -> bool {
        use std::io::IsTerminal;
        !self.quiet() && std::io::stderr().is_terminal()
    }

    /// A spinner for a long step's own output (the installer's lines):
    /// drawn from the first line it shows, and only when `draw`; a run
    /// without such a step draws nothing.
    pub fn spinner(&self, draw: bool) -> Spinner {
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::hidden());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>12} [{elapsed}] {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_prefix("Running");
        Spinner { bar, draw }
    }

    /// `    Finished ...`: a status line, unless quiet.
    pub fn status(&self, word: &str, message: impl Display) {
        if !self.quiet() {
            line(STATUS, word, message);
        }
    }

    /// A status line of a detail (`Dirty`, `Patchelf`, timings): cyan.
    pub fn note(&self, word: &str, message: impl Display) {
        if !self.quiet() {
            line(NOTE, word, message);
        }
    }

    /// `warning: ...`, unless quiet.
    pub fn warn(&self, message: impl Display) {
        if !self.quiet() {
            anstream::eprintln!("{WARNING}warning{WARNING:#}: {message}");
        }
    }

    /// `error: ...`, then each cause not already said, as a chain; always
    /// printed.
    pub fn error(&self, error: &anyhow::Error) {
        anstream::eprintln!("{ERROR}error{ERROR:#}: {error}");
        let causes = causes(error);
        for cause in &causes {
            anstream::eprintln!("  {NOTE}caused by{NOTE:#}: {cause}");
        }
        let d = diagnostic(error);
        // The hint, unless the message already gives it.
        if let Some(hint) = d.hint
            && !error.to_string().contains(&hint)
            && !causes.iter().any(|c| c.contains(&hint))
        {
            anstream::eprintln!("  {NOTE}hint{NOTE:#}: {hint}");
        }
        if let Some(detail) = d.detail.filter(|_| self.verbose()) {
            anstream::eprintln!("  {NOTE}detail{NOTE:#}: {detail}");
        }
    }
}

fn line(style: Style, word: &str, message: impl Display) {
    anstream::eprintln!("{style}{word:>12}{style:#} {message}");
}

/// The causes of `error` worth printing: one whose text the message before
/// it already holds (an error that writes its source into its own message)
/// would only say the same thing twice.
pub fn causes(error: &anyhow::Error) -> Vec<String> {
    let mut said = error.to_string();
    let mut out = Vec::new();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !said.contains(&text) {
            out.push(text.clone());
        }
        said = text;
    }
    out
}

/// A failure as the one JSON object `--json` prints on stdout: the
/// pipeline's [`assemble_pipeline::Diagnostic`] (or, for any other error,
/// its kind `error` and message), its causes, and the exit code.
pub fn failure_json(f: &crate::Failure) -> serde_json::Value {
    let mut v = serde_json::to_value(diagnostic(&f.error)).unwrap_or_default();
    v["causes"] = serde_json::json!(causes(&f.error));
    v["exit_code"] = serde_json::json!(f.code);
    v
}

/// A failure as data: the pipeline's diagnostic, a recipe's, a fetch's
/// (with its hint), or else kind `error` and the message.
pub fn diagnostic(e: &anyhow::Error) -> assemble_pipeline::Diagnostic {
    use assemble_pipeline::{Diagnostic, FailureKind};
    if let Some(p) = e.downcast_ref::<assemble_pipeline::Error>() {
        return p.diagnostic();
    }
    if let Some(r) = e.downcast_ref::<assemble_recipe::RecipeError>() {
        return Diagnostic::of_recipe(r);
    }
    let hint = e
        .downcast_ref::<assemble_fetch::Error>()
        .and_then(assemble_fetch::Error::hint);
    let kind = if hint.is_some() {
        FailureKind::Fetch
    } else {
        FailureKind::Error
    };
    Diagnostic {
        hint,
        ..Diagnostic::new(kind, e.to_string())
    }
}

/// One line of the run-time library list: `libc.so.6 from the host
/// (/lib/x86_64-linux-gnu/libc.so.6), for 3 files`.
pub fn library_line(l: &assemble_elf::Library) -> String {
    let place = match l.found {
        assemble_elf::Found::Tree => "in the tree",
        assemble_elf::Found::Libs => "from a libs folder",
        assemble_elf::Found::Host => "from the host",
        assemble_elf::Found::Absolute => "at an absolute path",
    };
    let n = l.needed_by.len();
    format!(
        "{} {place} ({}), for {n} file{}",
        l.soname,
        l.path,
        if n == 1 { "" } else { "s" }
    )
}

/// How a run's events are drawn on a shell: `Preparing` as a status line
/// (unless quiet), the installer's lines under a spinner, the writes as a
/// bar, a download as a bar of bytes, a wait for a lock always said;
/// through [`assemble_pipeline::EventReporter`], what the fetcher reports
/// for the commands that use it directly (`vendor`, `prefetch`).
pub struct Drawing<'a> {
    sh: &'a Shell,
    spinner: Spinner,
    /// Status lines held back (`--json`, `-q`).
    quiet: bool,
    download: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl<'a> Drawing<'a> {
    /// Progress is drawn only when `draw` (a terminal, not `--json`).
    pub fn new(sh: &'a Shell, draw: bool, quiet: bool) -> Drawing<'a> {
        Drawing {
            sh,
            spinner: sh.spinner(draw),
            quiet,
            download: std::sync::Mutex::new(None),
        }
    }

    pub fn event(&self, e: assemble_pipeline::Event<'_>) {
        use assemble_pipeline::Event;
        match e {
            Event::Preparing(m) if !self.quiet => {
                self.spinner.suspend(|| self.sh.status("Preparing", m));
                self.spinner.restart();
                // Named under the spinner from its start: pip and uv may
                // say nothing for seconds (a download, a resolve).
                self.spinner.spin(m);
            }
            Event::Preparing(_) => {}
            Event::Step(what) => {
                self.spinner.restart();
                self.spinner.spin(what);
            }
            Event::Output(line) => self.spinner.spin(line),
            Event::Writing { done, total } => self.spinner.writing(done, total),
            // Said even when quiet: a run that waits must say why.
            Event::Waiting(what) => self.spinner.suspend(|| {
                anstream::eprintln!("{:>12} waiting for file lock on {what}", "Blocking")
            }),
            Event::Download { total, .. } if self.spinner.draw => {
                let bar = match total {
                    Some(n) => indicatif::ProgressBar::new(n),
                    None => indicatif::ProgressBar::no_length(),
                };
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg:>12.cyan.bold} {bytes}/{total_bytes} {binary_bytes_per_sec} {wide_bar}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar.set_message("Downloading");
                *self.bar() = Some(bar);
            }
            Event::Downloaded(n) => {
                if let Some(bar) = &*self.bar() {
                    bar.inc(n);
                }
            }
            Event::DownloadDone => {
                if let Some(bar) = self.bar().take() {
                    bar.finish_and_clear();
                }
            }
            Event::Download { .. } => {}
        }
    }

    fn bar(&self) -> std::sync::MutexGuard<'_, Option<indicatif::ProgressBar>> {
        self.download
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Everything drawn is gone from the terminal.
    pub fn clear(&self) {
        self.spinner.clear();
        if let Some(bar) = self.bar().take() {
            bar.finish_and_clear();
        }
    }
}

/// See [`Shell::spinner`].
pub struct Spinner {
    bar: indicatif::ProgressBar,
    draw: bool,
}

impl Spinner {
    /// Shows `line`; the spinner appears on stderr with the first one.
    pub fn spin(&self, line: &str) {
        if !self.draw {
            return;
        }
        if self.bar.is_hidden() {
            self.bar
                .set_draw_target(indicatif::ProgressDrawTarget::stderr());
            self.bar
                .enable_steady_tick(std::time::Duration::from_millis(120));
        }
        self.bar.set_message(line.trim().to_string());
    }

    /// The write of `total` files, `done` so far: the spinner becomes a
    /// bar (on a terminal, as for [`Spinner::spin`]).
    pub fn writing(&self, done: usize, total: usize) {
        if !self.draw {
            return;
        }
        if self.bar.length() != Some(total as u64) {
            self.bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix:>12} [{bar:40}] {pos}/{len} files {elapsed}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            self.bar.set_prefix("Writing");
            self.bar.set_message("");
            self.bar.set_length(total as u64);
            if self.bar.is_hidden() {
                self.bar
                    .set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
        }
        self.bar.set_position(done as u64);
    }

    /// Runs `f` (which prints) with the spinner out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// A new step: the elapsed time starts again.
    pub fn restart(&self) {
        self.bar.reset_elapsed();
    }

    /// Gone, leaving nothing on the terminal.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the recipe: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn a_cause_already_in_the_message_is_not_printed_again() {
        let inner = std::io::Error::other("no such file");
        let e = anyhow::Error::new(Repeats(inner)).context("assembling the demo");
        // The context, then its cause (which already holds the io error).
        assert_eq!(causes(&e), vec!["reading the recipe: no such file"]);
    }

    #[test]
    fn distinct_causes_are_all_printed() {
        let e = anyhow::anyhow!("the root cause")
            .context("the middle")
            .context("the top");
        assert_eq!(causes(&e), vec!["the middle", "the root cause"]);
    }
}
