//! Progress bars on stderr (indicatif), the CLI's `Reporter`.

use crate::progress::{Reporter, Task, Unit};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Bars drawn together (a push shows one per blob in flight and a total),
/// so concurrent tasks do not overwrite each other's lines.
pub struct Bars {
    multi: MultiProgress,
}

impl Default for Bars {
    fn default() -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
        }
    }
}

struct Bar(ProgressBar);

/// No progress (`--json`, or stderr is not a terminal), but warnings still
/// go to stderr.
pub struct WarningsOnly;

impl Reporter for WarningsOnly {
    fn task(&self, label: &str, total: Option<u64>, unit: Unit) -> Box<dyn Task> {
        crate::progress::Quiet.task(label, total, unit)
    }
    fn note(&self, _: &str) {}
    fn warn(&self, message: &str) {
        eprintln!("mpsi: {message}");
    }
}

impl Reporter for Bars {
    fn task(&self, label: &str, total: Option<u64>, unit: Unit) -> Box<dyn Task> {
        let bar = self.multi.add(ProgressBar::with_draw_target(
            total,
            ProgressDrawTarget::hidden(),
        ));
        let template = match unit {
            Unit::Bytes => {
                "{prefix:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
            }
            Unit::Steps => "{prefix:30!} [{bar:30}] {pos}/{len} {elapsed_precise} {wide_msg}",
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        Box::new(Bar(bar))
    }

    fn note(&self, message: &str) {
        if self.multi.println(format!("  {message}")).is_err() {
            eprintln!("  {message}");
        }
    }
}

impl Task for Bar {
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn set_position(&self, n: u64) {
        self.0.set_position(n);
    }
    fn set_total(&self, total: u64) {
        self.0.set_length(total);
    }
    fn set_message(&self, message: &str) {
        self.0.set_message(message.to_string());
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
