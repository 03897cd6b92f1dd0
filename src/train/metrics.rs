//! metrics.csv and the log: one row per logged step and per epoch.

use crate::error::{Error, ErrorKind, Result};
use crate::settings::recipe::Recipe;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::Path;

/// One row of metrics.csv (and of the log).
#[derive(Serialize)]
pub(super) struct Row {
    pub(super) epoch: u32,
    pub(super) step: u64,
    pub(super) train_loss: Option<f32>,
    pub(super) val_loss: Option<f32>,
    pub(super) seconds: f64,
    pub(super) samples_per_s: f64,
    /// The learning rate of the row's last step.
    pub(super) lr: f32,
    /// The --eval-every evaluation, on epoch rows that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) eval: Option<crate::eval::Quality>,
}

/// The columns of metrics.csv.
pub(super) const METRICS_HEADER: &str = "epoch,step,train_loss,val_loss,seconds,samples_per_s,eval_n,fid,confidence_mean,confident_frac,entropy_ratio,lr";

/// Gives a metrics.csv written by an older version (fewer columns) the current header, so a
/// resumed run's rows line up with it; the old rows keep their empty trailing columns.
pub(super) fn upgrade_header(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(crate::error::io_err(
        ErrorKind::Io,
        "cannot read",
        path,
    ))?;
    let first = text.lines().next().unwrap_or("");
    if first == METRICS_HEADER {
        return Ok(());
    }
    if !METRICS_HEADER.starts_with(first) {
        return Err(Error::config(format!(
            "{} does not look like a metrics.csv of this program (header {first:?})",
            path.display()
        )));
    }
    let rest = text.split_once('\n').map_or("", |(_, r)| r);
    crate::checkpoint::write_atomic(path, format!("{METRICS_HEADER}\n{rest}").as_bytes())
}

pub(super) struct Metrics<'a> {
    file: std::fs::File,
    json: bool,
    progress: &'a Progress,
}

impl<'a> Metrics<'a> {
    /// metrics.csv of folder `out` (appended to when `append` and it exists).
    pub(super) fn open(
        out: &Path,
        append: bool,
        json: bool,
        progress: &'a Progress,
    ) -> Result<Metrics<'a>> {
        let path = out.join("metrics.csv");
        let fresh = !append || !path.exists();
        if !fresh {
            // Before opening: the upgrade replaces the file.
            upgrade_header(&path)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(!fresh)
            .write(true)
            .truncate(fresh)
            .open(&path)
            .map_err(crate::error::io_err(ErrorKind::Io, "cannot open", &path))?;
        if fresh {
            writeln!(file, "{METRICS_HEADER}")
                .map_err(|e| Error::io(format!("cannot write {}: {e}", path.display())))?;
        }
        Ok(Metrics {
            file,
            json,
            progress,
        })
    }

    pub(super) fn row(&mut self, r: &Row) -> Result<()> {
        let f = |v: Option<f32>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
        let eval = r
            .eval
            .as_ref()
            .map(|q| {
                format!(
                    "{},{:.4},{:.5},{:.5},{:.5}",
                    q.n, q.fid, q.confidence_mean, q.confident_frac, q.entropy_ratio
                )
            })
            .unwrap_or_else(|| ",,,,".into());
        writeln!(
            self.file,
            "{},{},{},{},{:.3},{:.1},{eval},{}",
            r.epoch,
            r.step,
            f(r.train_loss),
            f(r.val_loss),
            r.seconds,
            r.samples_per_s,
            r.lr
        )
        .and_then(|_| self.file.flush())
        .map_err(|e| Error::io(format!("cannot write metrics.csv: {e}")))?;
        if self.json {
            println!("{}", serde_json::to_string(r).unwrap());
        } else if self.progress.update(r) && r.val_loss.is_none() {
            // The bar shows the step rows; epoch rows are printed above it.
        } else {
            self.progress.say(&row_text(r));
        }
        Ok(())
    }

    /// Ends the stage's part of the display.
    pub(super) fn finish(&self) {}

    pub(super) fn say(&self, msg: &str) {
        if !self.json {
            self.progress.say(msg);
        }
    }
}

/// A row in words.
fn row_text(r: &Row) -> String {
    let eval = r
        .eval
        .as_ref()
        .map(|q| {
            format!(
                "; {} samples: FID {:.3} confidence {:.4} label entropy/ln10 {:.4}",
                q.n, q.fid, q.confidence_mean, q.entropy_ratio
            )
        })
        .unwrap_or_default();
    format!(
        "epoch {} step {} train_loss {} val_loss {} lr {:.3e} {:.1} samples/s{eval}",
        r.epoch,
        r.step,
        r.train_loss
            .map(|v| format!("{v:.5}"))
            .unwrap_or("-".into()),
        r.val_loss.map(|v| format!("{v:.5}")).unwrap_or("-".into()),
        r.lr,
        r.samples_per_s
    )
}

/// One progress bar across the stages of a run (on a terminal, without --json): in seconds
/// when the recipe has a budget, else in steps.
pub(super) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    json: bool,
    /// Per stage: its name, and where it starts on the bar and how long it is (steps or
    /// seconds).
    stages: Vec<(String, u64, u64)>,
    by_time: bool,
    current: std::cell::Cell<usize>,
}

impl Progress {
    pub(super) fn new(recipe: &Recipe, train_count: usize, json: bool) -> Progress {
        let by_time = recipe.stages.iter().all(|s| s.settings.minutes.is_some());
        let mut start = 0u64;
        let n = recipe.stages.len();
        let stages: Vec<(String, u64, u64)> = recipe
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let len = if by_time {
                    s.settings.budget_seconds().unwrap_or(0.0).round() as u64
                } else {
                    let images = s.settings.train_subset.unwrap_or(train_count);
                    s.settings.step_limit(images)
                };
                let name = match &s.name {
                    Some(name) => format!("stage {}/{n} {name}: ", i + 1),
                    None => String::new(),
                };
                let at = start;
                start = start.saturating_add(len);
                (name, at, len)
            })
            .collect();
        let bar = (!json && std::io::stdout().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(start);
            let unit = if by_time {
                "{percent}%"
            } else {
                "{pos}/{len} steps"
            };
            b.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{{bar:30}} {unit}  {{msg}}  [{{elapsed_precise}}, ETA {{eta}}]"
                ))
                .unwrap(),
            );
            b
        });
        Progress {
            bar,
            json,
            stages,
            by_time,
            current: std::cell::Cell::new(0),
        }
    }

    /// Stage `i` starts.
    pub(super) fn start_stage(&self, i: usize) {
        self.current.set(i);
        if let Some(b) = &self.bar {
            b.set_position(self.stages[i].1);
        }
    }

    /// Shows row `r` of the current stage on the bar; false when there is no bar.
    fn update(&self, r: &Row) -> bool {
        let Some(b) = &self.bar else {
            return false;
        };
        let (name, at, len) = &self.stages[self.current.get()];
        let within = if self.by_time {
            r.seconds as u64
        } else {
            r.step
        };
        b.set_position(at + within.min(*len));
        b.set_message(format!(
            "{name}step {}  loss {}  {:.0} samples/s",
            r.step,
            r.train_loss
                .map(|v| format!("{v:.5}"))
                .unwrap_or("-".into()),
            r.samples_per_s
        ));
        true
    }

    /// A line above the bar (or on stdout).
    pub(super) fn say(&self, msg: &str) {
        if self.json {
            return;
        }
        match &self.bar {
            Some(b) => b.println(msg),
            None => println!("{msg}"),
        }
    }

    /// Removes the bar at the end of the run.
    pub(super) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    /// A run that stops with an error leaves no bar behind its message.
    fn drop(&mut self) {
        self.finish();
    }
}
