//! Progress bars per running node, shown only on a terminal.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lmgeo_dag::{NodeOutcome, Observer, Progress, Status};

pub struct ProgressObserver {
    visible: bool,
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl ProgressObserver {
    pub fn new(visible: bool) -> Self {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            visible,
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
        }
    }

    pub fn clear(&self) {
        let _ = self.multi.clear();
    }

    fn spinner_style() -> ProgressStyle {
        ProgressStyle::with_template("{spinner} [{elapsed:>4}] {prefix} {msg}")
            .expect("valid template")
    }

    fn bar_style() -> ProgressStyle {
        ProgressStyle::with_template(
            "{spinner} [{elapsed:>4}] {prefix} {bar:30} {pos}/{len} {msg} ({per_sec}, eta {eta})",
        )
        .expect("valid template")
    }
}

impl Observer for ProgressObserver {
    fn started(&self, instance: &str, kind: &str) {
        if !self.visible {
            return;
        }
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(Self::spinner_style());
        bar.set_prefix(instance.to_string());
        bar.set_message(kind.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bars
            .lock()
            .expect("not poisoned")
            .insert(instance.to_string(), bar);
    }

    fn progress(&self, progress: &Progress) {
        if !self.visible {
            return;
        }
        let bars = self.bars.lock().expect("not poisoned");
        if let Some(bar) = bars.get(&progress.node) {
            if let Some(total) = progress.total
                && bar.length() != Some(total)
            {
                bar.set_style(Self::bar_style());
                bar.set_length(total);
            }
            bar.set_position(progress.done);
            bar.set_message(progress.unit.clone());
        }
    }

    fn finished(&self, instance: &str, outcome: &NodeOutcome) {
        if !self.visible {
            return;
        }
        let bar = self.bars.lock().expect("not poisoned").remove(instance);
        let line = match &outcome.status {
            Status::Ran => format!("✓ {instance} ({:.1?})", outcome.elapsed),
            Status::Cached => return,
            Status::Failed(m) => format!("✗ {instance}: {m}"),
            Status::Blocked { upstream } => format!("- {instance}: blocked by {upstream}"),
            Status::Skipped => return,
        };
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let _ = self.multi.println(line);
    }
}
