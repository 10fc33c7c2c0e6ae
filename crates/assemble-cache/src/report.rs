//! How the code that makes cache entries tells the user what it does, and
//! what it may do: the command line draws a [`Reporter`]; a [`Policy`]
//! says whether a missing entry is made.

/// What making cache entries tells the user while it runs. Nothing below
/// the command line draws on a terminal: it implements this.
pub trait Reporter: Sync {
    /// Slow work starts (a venv built, a source fetched, uv bootstrapped).
    fn starting(&self, what: &str);
    /// A line of an installer's own output.
    fn output(&self, line: &str);
    /// A step that says nothing of itself and is not worth a status line
    /// begins (`bytecode: compiling 345 sources`): for a spinner.
    fn step(&self, what: &str);
    /// Another run holds the lock on `what` (`the venv of python-deps`):
    /// this one waits for it, then uses what it made.
    fn waiting(&self, what: &str);
    /// A download of `url` starts: `total` bytes, when the server says.
    fn download(&self, url: &str, total: Option<u64>);
    /// `bytes` more of the current download arrived.
    fn downloaded(&self, bytes: u64);
    /// The current download ended (done or failed).
    fn download_done(&self);
}

/// A reporter that says nothing.
pub struct Silent;

impl Reporter for Silent {
    fn starting(&self, _: &str) {}
    fn output(&self, _: &str) {}
    fn step(&self, _: &str) {}
    fn waiting(&self, _: &str) {}
    fn download(&self, _: &str, _: Option<u64>) {}
    fn downloaded(&self, _: u64) {}
    fn download_done(&self) {}
}

/// What to do about an entry the cache lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Make it: fetch, build, compile.
    Make,
    /// Fail, naming it (`--offline`): entries are still unpacked from
    /// `vendor/`, and a run another process is making one waits for it.
    Offline,
    /// Write nothing at all, not even a lock file, and say what would be
    /// made (`plan`).
    Look,
}

impl Policy {
    /// Whether anything may be written to the cache.
    pub fn writes(self) -> bool {
        self != Policy::Look
    }
}
