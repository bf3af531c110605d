//! The controller's log: how lines are written (`--log-format text|json`, filtered by
//! `RUST_LOG`), and the lines that tell what happened to a Release.
//!
//! Every line about a Release carries the same four fields, `namespace`, `release`, `revision`
//! and `roadmap_item`, as structured fields (JSON keys with `--log-format json`), so that one
//! canary's story can be filtered out of a busy controller's log. A state change is told by the
//! rollout core's [`EventNote`], the same note the Kubernetes Event is made of: the log and the
//! Events cannot tell different stories.

use kube::ResourceExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::api::{Release, template_revision};
use crate::rollout::{EventNote, NoteKind};

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, the event's fields as top-level keys.
    Json,
}

/// What is logged when `RUST_LOG` is not set. kube's own warnings on every failed watch attempt
/// (a 404 body it cannot parse, a 403) would repeat every few seconds: the watch wrapper says
/// once what is wrong and what to do.
pub const DEFAULT_FILTER: &str = "info,kube_client::client=error,kube_runtime::watcher=error";

/// Log lines to stderr in `format`; `RUST_LOG` filters them ([`DEFAULT_FILTER`] without it).
pub fn init(format: LogFormat) {
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // try_init: a second initialisation (tests) must not panic.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = subscriber(format, filter, terminal, std::io::stderr).try_init();
}

/// The subscriber [`init`] installs, writing to `writer` (a buffer in tests). Colours only on a
/// terminal: a pod's log read with `kubectl logs` must not hold escape codes.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    terminal: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        // Flattened: `namespace`, `release`, ... are keys of the line itself, not of a nested
        // `fields` object, so `jq 'select(.release == "checkout")'` finds a Release's lines.
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
    }
}

/// The four fields every line about a Release carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// The Release's namespace.
    pub namespace: String,
    /// The Release's name.
    pub release: String,
    /// The revision the line is about: the canary's while one runs (or is being finished),
    /// else the spec's.
    pub revision: String,
    /// `spec.roadmap.item`.
    pub roadmap_item: String,
}

impl Subject {
    /// The fields of `release`, as the controller read it before its decision: a note about a
    /// canary ending (promoted, rolled back, superseded) names that canary's revision.
    pub fn of(release: &Release) -> Self {
        let revision = release
            .status
            .as_ref()
            .and_then(|status| status.canary_revision.clone())
            .unwrap_or_else(|| template_revision(&release.spec.template));
        Self {
            namespace: release.namespace().unwrap_or_default(),
            release: release.name_any(),
            revision,
            roadmap_item: release.spec.roadmap.item.clone(),
        }
    }
}

/// Log one note of the rollout core, with the Event's reason and words: `info` for a state
/// change (a rollback too: `info` holds the whole story), `warn` for a refused write.
pub fn tell(release: &Release, note: &EventNote) {
    let subject = Subject::of(release);
    match note.kind {
        NoteKind::StateChange => tracing::info!(
            namespace = %subject.namespace,
            release = %subject.release,
            revision = %subject.revision,
            roadmap_item = %subject.roadmap_item,
            reason = %note.reason,
            "{}",
            note.note
        ),
        NoteKind::RefusedWrite => tracing::warn!(
            namespace = %subject.namespace,
            release = %subject.release,
            revision = %subject.revision,
            roadmap_item = %subject.roadmap_item,
            reason = %note.reason,
            "{}",
            note.note
        ),
    }
}

/// A buffer the test subscribers write log lines into.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Captured {
    /// Capture this thread's log, as `format` writes it at `info`, while the guard lives.
    ///
    /// Tests run in parallel, each thread with its own subscriber or none. tracing caches per
    /// call site whether anyone listens; while only one subscriber is alive it asks the
    /// *calling thread's* default, so a thread without a subscriber that reaches a call site
    /// first would mark it unheard for every thread. A second subscriber kept alive for the
    /// whole test run makes tracing ask every live subscriber instead.
    pub(crate) fn start(format: LogFormat) -> (Self, tracing::subscriber::DefaultGuard) {
        static KEEP_ASKING_ALL: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        KEEP_ASKING_ALL
            .get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let captured = Self::default();
        let guard = tracing::subscriber::set_default(subscriber(
            format,
            EnvFilter::new("info"),
            false,
            captured.clone(),
        ));
        (captured, guard)
    }

    /// The lines written so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The lines written so far, each parsed as JSON.
    pub(crate) fn json(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    }
}

#[cfg(test)]
impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl<'writer> MakeWriter<'writer> for Captured {
    type Writer = Captured;

    fn make_writer(&'writer self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ReleaseBuilder, V2, template};
    use crate::rollout::{Audience, Severity};

    fn note(kind: NoteKind) -> EventNote {
        EventNote {
            severity: Severity::Normal,
            reason: "CanaryStarted".into(),
            note: "PAY-142: canary 6f9c7d started against stable 5d8b9c, 2 steps".into(),
            audience: Audience::EventAndLog,
            kind,
        }
    }

    #[test]
    fn json_lines_carry_the_four_fields_as_keys() {
        let (captured, guard) = Captured::start(LogFormat::Json);
        let release = ReleaseBuilder::gateway().build();
        tell(&release, &note(NoteKind::StateChange));
        tell(&release, &note(NoteKind::RefusedWrite));
        drop(guard);
        let lines = captured.json();
        assert_eq!(lines.len(), 2, "{lines:?}");
        for (line, level) in lines.iter().zip(["INFO", "WARN"]) {
            assert_eq!(line["level"], level);
            assert_eq!(line["namespace"], "shop");
            assert_eq!(line["release"], "checkout");
            assert_eq!(line["revision"], template_revision(&release.spec.template));
            assert_eq!(line["roadmap_item"], "PAY-142");
            assert_eq!(line["reason"], "CanaryStarted");
            assert_eq!(
                line["message"],
                "PAY-142: canary 6f9c7d started against stable 5d8b9c, 2 steps"
            );
        }
    }

    #[test]
    fn text_lines_name_the_fields_too() {
        let (captured, guard) = Captured::start(LogFormat::Text);
        let release = ReleaseBuilder::gateway().build();
        tell(&release, &note(NoteKind::StateChange));
        drop(guard);
        let lines = captured.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        for field in [
            "namespace=shop",
            "release=checkout",
            "roadmap_item=PAY-142",
            "reason=CanaryStarted",
        ] {
            assert!(lines[0].contains(field), "{field} in {}", lines[0]);
        }
        assert!(lines[0].contains(" INFO "), "{}", lines[0]);
    }

    #[test]
    fn a_line_about_a_running_canary_names_the_canarys_revision() {
        let mut release = ReleaseBuilder::gateway().build();
        let canary = template_revision(&template(V2));
        release.status = Some(crate::api::ReleaseStatus {
            canary_revision: Some(canary.clone()),
            ..Default::default()
        });
        assert_eq!(Subject::of(&release).revision, canary);
        release.status = None;
        assert_eq!(
            Subject::of(&release).revision,
            template_revision(&release.spec.template)
        );
    }
}
