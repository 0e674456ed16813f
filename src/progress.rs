//! How library code reports long work: a small trait the CLI implements
//! (progress bars on a terminal, nothing otherwise). Library code never
//! draws or prints itself.

/// What a count measures, so the CLI can render it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    /// Build steps, files, blobs: plain counts.
    Steps,
}

pub trait Reporter: Sync {
    /// Starts a task of `total` units (None: unknown until `set_total`).
    fn task(&self, label: &str, total: Option<u64>, unit: Unit) -> Box<dyn Task>;
    /// A one-line status message ("unpacking ...", "configuring ...").
    fn note(&self, message: &str);
    /// Something the user should know even when no progress is shown
    /// (a fallback taken, a layer sent in another form).
    fn warn(&self, message: &str) {
        self.note(message)
    }
}

/// One task's progress; dropping it without `finish` clears it too.
pub trait Task: Send + Sync {
    fn advance(&self, n: u64);
    fn set_position(&self, n: u64);
    fn set_total(&self, total: u64);
    fn set_message(&self, message: &str);
    fn finish(&self);
}

/// Reports nothing (library tests; the CLI shows warnings on its own).
pub struct Quiet;

struct QuietTask;

impl Reporter for Quiet {
    fn task(&self, _: &str, _: Option<u64>, _: Unit) -> Box<dyn Task> {
        Box::new(QuietTask)
    }
    fn note(&self, _: &str) {}
}

impl Task for QuietTask {
    fn advance(&self, _: u64) {}
    fn set_position(&self, _: u64) {}
    fn set_total(&self, _: u64) {}
    fn set_message(&self, _: &str) {}
    fn finish(&self) {}
}
