//! What long-running commands report while they run: one [`Event`] per host, phase and step
//! (started, ok, changed, failed, skipped, with its duration), and a [`Summary`] at the end.
//!
//! Events go to every [`Sink`] the command line attached: `--output jsonl` (one JSON object per
//! line on stdout, schema below), the run log, and the progress lines on a terminal. Deploy and
//! verify only ever talk to [`Events`]; they do not know where events go.
//!
//! The JSON schema (version [`SCHEMA`]): every line has `schema`, `ts` (RFC 3339, UTC,
//! milliseconds), `command` and `kind` (`event` or `summary`). Events add `host` (absent for
//! cluster-wide steps), `phase` (absent outside deploy phases), `step`, `status` and, when they
//! have them, `duration_ms` and `message`. The summary is the last line: `ok`, `hosts`,
//! `failed` (host names), `duration_ms`, and the command's own counts in `counts`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;

/// The version of the event schema; bumped on any incompatible change.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Started,
    Ok,
    Changed,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub schema: u32,
    pub ts: String,
    pub command: &'static str,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    pub step: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub schema: u32,
    pub ts: String,
    pub command: &'static str,
    pub kind: &'static str,
    pub ok: bool,
    pub hosts: usize,
    pub failed: Vec<String>,
    pub duration_ms: u64,
    pub counts: BTreeMap<String, usize>,
}

/// Where events go.
pub trait Sink: Send + Sync {
    fn event(&self, e: &Event);
    fn summary(&self, _s: &Summary) {}
}

/// The events of one command run, fanned out to its sinks. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    command: &'static str,
    sinks: Arc<Vec<Arc<dyn Sink>>>,
    started: Instant,
}

impl Events {
    pub fn new(command: &'static str, sinks: Vec<Arc<dyn Sink>>) -> Events {
        Events {
            command,
            sinks: Arc::new(sinks),
            started: Instant::now(),
        }
    }

    /// Events that go nowhere (library callers that want none).
    pub fn none(command: &'static str) -> Events {
        Events::new(command, vec![])
    }

    pub fn emit(
        &self,
        host: Option<&str>,
        phase: Option<&str>,
        step: &str,
        status: Status,
        duration_ms: Option<u64>,
        message: Option<String>,
    ) {
        if self.sinks.is_empty() {
            return;
        }
        let e = Event {
            schema: SCHEMA,
            ts: now_rfc3339(),
            command: self.command,
            kind: "event",
            host: host.map(str::to_string),
            phase: phase.map(str::to_string),
            step: step.to_string(),
            status,
            duration_ms,
            message,
        };
        for s in self.sinks.iter() {
            s.event(&e);
        }
    }

    /// A step on a host: `started` now, its outcome when [`StepTimer::done`] is called.
    pub fn start(&self, host: Option<&str>, phase: Option<&str>, step: &str) -> StepTimer {
        self.emit(host, phase, step, Status::Started, None, None);
        StepTimer {
            events: self.clone(),
            host: host.map(str::to_string),
            phase: phase.map(str::to_string),
            step: step.to_string(),
            at: Instant::now(),
        }
    }

    pub fn summary(
        &self,
        ok: bool,
        hosts: usize,
        failed: Vec<String>,
        counts: BTreeMap<String, usize>,
    ) {
        let s = Summary {
            schema: SCHEMA,
            ts: now_rfc3339(),
            command: self.command,
            kind: "summary",
            ok,
            hosts,
            failed,
            duration_ms: self.started.elapsed().as_millis() as u64,
            counts,
        };
        for sink in self.sinks.iter() {
            sink.summary(&s);
        }
    }
}

/// A started step, to be finished with its outcome.
pub struct StepTimer {
    events: Events,
    host: Option<String>,
    phase: Option<String>,
    step: String,
    at: Instant,
}

impl StepTimer {
    pub fn done(self, status: Status, message: Option<String>) {
        let ms = self.at.elapsed().as_millis() as u64;
        self.events.emit(
            self.host.as_deref(),
            self.phase.as_deref(),
            &self.step,
            status,
            Some(ms),
            message,
        );
    }

    /// Ends the step as `result` went: a success with the status and message `ok` gives it,
    /// an error as failed with the error's text; `result` is handed back.
    pub fn finish<T, E: std::fmt::Display>(
        self,
        result: Result<T, E>,
        ok: impl FnOnce(&T) -> (Status, Option<String>),
    ) -> Result<T, E> {
        match &result {
            Ok(v) => {
                let (status, message) = ok(v);
                self.done(status, message);
            }
            Err(e) => self.done(Status::Failed, Some(e.to_string())),
        }
        result
    }

    /// A part of the step that may fail: its error ends the step as failed; its value comes
    /// back with the step, which goes on.
    pub fn or_fail<T, E: std::fmt::Display>(self, result: Result<T, E>) -> Result<(T, Self), E> {
        match result {
            Ok(v) => Ok((v, self)),
            Err(e) => {
                self.done(Status::Failed, Some(e.to_string()));
                Err(e)
            }
        }
    }
}

/// `--output jsonl`: each event and the summary as one line of JSON on stdout.
pub struct JsonLines;

impl Sink for JsonLines {
    fn event(&self, e: &Event) {
        print_line(e);
    }
    fn summary(&self, s: &Summary) {
        print_line(s);
    }
}

fn print_line(v: &impl Serialize) {
    use std::io::Write;
    if let Ok(line) = serde_json::to_string(v) {
        // A closed pipe ends the stream quietly.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The current time as RFC 3339 in UTC with milliseconds (`2026-11-27T15:03:40.123Z`).
pub fn now_rfc3339() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let t = time::OffsetDateTime::from_unix_timestamp(now.as_secs() as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        now.subsec_millis()
    )
}

/// The one time stamp of hardway's names — snapshots (`<cluster>-<stamp>.db`), what day-2
/// commands and deploy move aside (`before-restore-<stamp>`, `aside/renew-<stamp>/`), a class's
/// saved machines: UTC to the millisecond, so two in one second differ, sorting as time does,
/// and nothing but digits, `T` and `Z` (`2026-11-27T15:03:40.123Z` → `20261127T150340123Z`).
pub fn stamp() -> String {
    stamp_of(&now_rfc3339())
}

/// The stamp of a time as [`now_rfc3339`] writes it, for a name that goes with a record of that
/// time.
pub fn stamp_of(rfc3339: &str) -> String {
    rfc3339
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .take(18)
        .collect::<String>()
        + "Z"
}

/// Collects events in memory (tests).
#[derive(Default)]
pub struct Recorder(pub std::sync::Mutex<Vec<Event>>);

impl Sink for Recorder {
    fn event(&self, e: &Event) {
        self.0.lock().expect("not poisoned").push(e.clone());
    }
}

/// One line per host on a terminal, showing the step it is on; nothing when not a terminal
/// (the command line only attaches it to a TTY, so no escape codes reach a pipe or a log).
pub struct ProgressLines {
    multi: indicatif::MultiProgress,
    bars: BTreeMap<String, indicatif::ProgressBar>,
}

impl ProgressLines {
    pub fn new<'a>(hosts: impl IntoIterator<Item = &'a str>) -> ProgressLines {
        let multi =
            indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
        let style =
            indicatif::ProgressStyle::with_template("{prefix:>16} {spinner} {msg} ({elapsed})")
                .expect("valid template");
        let bars = hosts
            .into_iter()
            .map(|h| {
                let bar = multi.add(
                    indicatif::ProgressBar::new_spinner()
                        .with_style(style.clone())
                        .with_prefix(h.to_string()),
                );
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                (h.to_string(), bar)
            })
            .collect();
        ProgressLines { multi, bars }
    }
}

impl Sink for ProgressLines {
    fn event(&self, e: &Event) {
        let Some(bar) = e.host.as_ref().and_then(|h| self.bars.get(h)) else {
            return;
        };
        let what = match &e.phase {
            Some(p) => format!("{p}: {}", e.step),
            None => e.step.clone(),
        };
        bar.set_message(match e.status {
            Status::Started => what,
            other => format!(
                "{what}: {}",
                serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ),
        });
    }

    fn summary(&self, _s: &Summary) {
        for b in self.bars.values() {
            b.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    /// One format, as snapshots had it from the start (so their names sort as before), where
    /// things moved aside had a second one without milliseconds (`20261127T150340Z`).
    #[test]
    fn a_stamp_is_utc_to_the_millisecond_and_sorts_as_time_does() {
        assert_eq!(
            super::stamp_of("2026-11-27T15:03:40.123Z"),
            "20261127T150340123Z"
        );
        let now = super::stamp();
        assert_eq!(now.len(), 19, "{now}");
        assert!(
            now.ends_with('Z')
                && now[..8]
                    .chars()
                    .chain(now[9..18].chars())
                    .all(|c| c.is_ascii_digit())
                && &now[8..9] == "T",
            "{now}"
        );
        let times = [
            "2026-11-27T15:03:40.999Z",
            "2026-11-27T15:03:41.000Z",
            "2026-12-01T00:00:00.000Z",
            "2027-01-01T00:00:00.001Z",
        ];
        let stamps: Vec<String> = times.iter().map(|t| super::stamp_of(t)).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    }
}
