//! The sources stage's reports, as the run's events.

use assemble_cache::Reporter;

use crate::Event;

/// Turns what the sources stage reports into [`Event`]s: one channel for
/// the caller to draw, also for commands that fetch without the pipeline
/// (`prefetch`, `vendor`).
pub struct EventReporter<'a> {
    pub events: &'a (dyn Fn(Event) + Sync),
}

impl Reporter for EventReporter<'_> {
    fn starting(&self, what: &str) {
        (self.events)(Event::Preparing(what))
    }

    fn output(&self, line: &str) {
        (self.events)(Event::Output(line))
    }

    fn step(&self, what: &str) {
        (self.events)(Event::Step(what))
    }

    fn waiting(&self, what: &str) {
        (self.events)(Event::Waiting(what))
    }

    fn download(&self, url: &str, total: Option<u64>) {
        (self.events)(Event::Download { url, total })
    }

    fn downloaded(&self, bytes: u64) {
        (self.events)(Event::Downloaded(bytes))
    }

    fn download_done(&self) {
        (self.events)(Event::DownloadDone)
    }
}
