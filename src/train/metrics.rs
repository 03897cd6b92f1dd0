//! metrics.csv and the log: one row per logged step and per epoch.

use crate::error::{Error, ErrorKind, Result};
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

pub(super) struct Metrics {
    file: std::fs::File,
    json: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl Metrics {
    pub(super) fn open(
        out: &Path,
        append: bool,
        json: bool,
        total: u64,
        done: u64,
    ) -> Result<Metrics> {
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
        let bar = (!json && std::io::stdout().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}, ETA {eta}]",
                )
                .unwrap(),
            );
            b.set_position(done);
            b
        });
        Ok(Metrics { file, json, bar })
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
        let text = format!(
            "epoch {} step {} train_loss {} val_loss {} lr {:.3e} {:.1} samples/s{eval}",
            r.epoch,
            r.step,
            r.train_loss
                .map(|v| format!("{v:.5}"))
                .unwrap_or("-".into()),
            r.val_loss.map(|v| format!("{v:.5}")).unwrap_or("-".into()),
            r.lr,
            r.samples_per_s
        );
        if self.json {
            println!("{}", serde_json::to_string(r).unwrap());
        } else if let Some(b) = &self.bar {
            b.set_position(r.step);
            b.set_message(format!(
                "loss {}  {:.0} samples/s",
                r.train_loss
                    .map(|v| format!("{v:.5}"))
                    .unwrap_or("-".into()),
                r.samples_per_s
            ));
            if r.val_loss.is_some() {
                b.println(text);
            }
        } else {
            println!("{text}");
        }
        Ok(())
    }

    /// Removes the progress bar (at the end of a run, or when it stops).
    pub(super) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    pub(super) fn say(&self, msg: &str) {
        if self.json {
            return;
        }
        match &self.bar {
            Some(b) => b.println(msg),
            None => println!("{msg}"),
        }
    }
}
