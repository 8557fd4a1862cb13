//! Hot reload: the config file is watched (through its parent directory, since editors and
//! Kubernetes replace files by rename or symlink swap) and re-read on SIGHUP. Each change is
//! debounced, validated whole and built into a new [`Runtime`] (classifier and routing table
//! included) before it is swapped in atomically; requests in flight keep the runtime they
//! started with. A bad edit is logged with its file, line and key, counted, and the old
//! config keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::RecursiveMode;
use thinkgate_config::Config;
use tokio::sync::mpsc;

use crate::state::Runtime;

/// Quiet time after the last file event before reloading (an editor's save is several).
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Why a reload did not take effect.
#[derive(Debug)]
pub enum ReloadError {
    /// The file is unchanged since the last load: nothing to do.
    Unchanged,
    /// The new config is invalid or cannot be built; the old one keeps serving.
    Rejected(String),
}

/// Re-reads `path` and swaps in its runtime when it is valid and changed. The metrics
/// registry is shared, so counters carry across.
pub fn reload(
    path: &Path,
    runtime: &ArcSwap<Runtime>,
    last: &mut Option<String>,
) -> Result<(), ReloadError> {
    let current = runtime.load_full();
    let counter = |result: &str| {
        current
            .metrics
            .config_reloads
            .with_label_values(&[result])
            .inc()
    };
    let rejected = |why: String| {
        counter("error");
        tracing::error!(config = %path.display(), "The config was not reloaded; the previous one keeps serving: {why}");
        ReloadError::Rejected(why)
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        rejected(format!(
            "{}: cannot read the config file: {e}",
            path.display()
        ))
    })?;
    if last.as_deref() == Some(text.as_str()) {
        return Err(ReloadError::Unchanged);
    }
    // Several errors go on one log line, each with its file, line and key.
    let result = Config::parse(&text, path, &|var| std::env::var(var).ok())
        .map_err(|e| {
            let each: Vec<String> = e.each().iter().map(ToString::to_string).collect();
            each.join("; ")
        })
        .and_then(|config| current.rebuild(config));
    match result {
        Ok(next) => {
            runtime.store(Arc::new(next));
            *last = Some(text);
            counter("ok");
            tracing::info!(config = %path.display(), "Reloaded the config.");
            Ok(())
        }
        Err(why) => {
            *last = Some(text);
            Err(rejected(why))
        }
    }
}

/// Whether a file event in the config's directory may have changed the config: a change
/// (not a read: reading the file to reload it raises access events, which would reload it
/// again, forever) to the file itself or to Kubernetes' `..data` symlink.
fn touches_config(event: &notify::Event, name: &std::ffi::OsStr) -> bool {
    if matches!(event.kind, notify::EventKind::Access(_)) {
        return false;
    }
    event
        .paths
        .iter()
        .any(|p| p.file_name().is_some_and(|f| f == name || f == "..data"))
}

/// Watches `path` and SIGHUP for as long as the returned task runs, reloading on each.
pub fn spawn(
    path: PathBuf,
    runtime: Arc<ArcSwap<Runtime>>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    // `true`: SIGHUP, which re-reads even an unchanged file (its `${VAR}`s may have changed).
    let (tx, mut rx) = mpsc::channel::<bool>(16);
    let file_tx = tx.clone();
    // notify-debouncer-full waits for a quiet moment after an editor's burst of events
    // (and follows renames), so each save is one reload.
    let name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let handler = move |events: notify_debouncer_full::DebounceEventResult| {
        if events.is_ok_and(|e| e.iter().any(|e| touches_config(&e.event, &name))) {
            let _ = file_tx.try_send(false);
        }
    };
    let mut watcher = notify_debouncer_full::new_debouncer(DEBOUNCE, None, handler)
        .map_err(|e| format!("cannot watch the config: {e}"))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        let hup_tx = tx.clone();
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::info!("Received SIGHUP: reloading the config.");
                        if hup_tx.send(true).await.is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP cannot be caught; reload by editing the file.")
            }
        }
    }
    let mut last = std::fs::read_to_string(&path).ok();
    Ok(tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        while let Some(mut forced) = rx.recv().await {
            // A SIGHUP that came with the same edit forces the re-read.
            while let Ok(f) = rx.try_recv() {
                forced |= f;
            }
            let path = path.clone();
            let rt = runtime.clone();
            let mut prev = if forced { None } else { last.take() };
            // Building a runtime trains the classifier: off the async workers.
            let done = tokio::task::spawn_blocking(move || {
                let r = reload(&path, &rt, &mut prev);
                (r, prev)
            })
            .await;
            if let Ok((_, prev)) = done {
                last = prev;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, DataChange, EventKind, ModifyKind, RenameMode};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut e = notify::Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    #[test]
    fn only_changes_to_the_config_reload_it() {
        let name = std::ffi::OsStr::new("thinkgate.toml");
        let config = "/etc/tg/thinkgate.toml";
        // Reading the file to reload it must not trigger another reload.
        assert!(!touches_config(
            &event(EventKind::Access(AccessKind::Any), &[config]),
            name
        ));
        assert!(touches_config(
            &event(
                EventKind::Modify(ModifyKind::Data(DataChange::Content)),
                &[config]
            ),
            name
        ));
        // An editor's rename-over, and Kubernetes' symlink swap.
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(touches_config(
            &event(rename, &["/etc/tg/.tmp123", config]),
            name
        ));
        assert!(touches_config(
            &event(EventKind::Create(CreateKind::Any), &["/etc/tg/..data"]),
            name
        ));
        // Other files in the directory.
        assert!(!touches_config(
            &event(EventKind::Create(CreateKind::File), &["/etc/tg/notes.txt"]),
            name
        ));
    }
}
