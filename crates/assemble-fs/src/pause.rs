//! Pause points, for the tests that must make a race happen on purpose
//! (two runs creating one folder at the same instant) rather than hope for
//! it.
//!
//! With `ASSEMBLE_TEST_PAUSE=NAME` in the environment, a run that reaches
//! the point `NAME` prints `assemble-test-pause: NAME` on stderr and waits
//! for a line on stdin (or its end): the test reads the marker, does what
//! the other run would do at that instant, and writes the line. Without the
//! variable a point costs one look-up of the environment per process.

use std::sync::OnceLock;

/// The variable that names the point to pause at.
pub const VARIABLE: &str = "ASSEMBLE_TEST_PAUSE";

/// What a paused run prints before it waits.
pub const MARKER: &str = "assemble-test-pause:";

/// Waits at the point `name` if the environment asks for it (see the module
/// doc); returns at once otherwise.
pub fn at(name: &str) {
    static WANTED: OnceLock<Option<String>> = OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var(VARIABLE).ok());
    if wanted.as_deref() != Some(name) {
        return;
    }
    eprintln!("{MARKER} {name}");
    let mut line = String::new();
    // A closed or unreadable stdin resumes too: never a hang.
    let _ = std::io::stdin().read_line(&mut line);
}
