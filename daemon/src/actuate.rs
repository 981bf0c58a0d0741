//! Actuation sinks: a GPIO relay pulse (door strike) through the Linux GPIO
//! character device, and a command hook. Each sink runs on its own thread
//! behind a small queue: a slow or failing sink is logged and counted and
//! never blocks the pipeline (a full queue drops the request, counted).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{DecisionKind, SinkConfig};

/// Requests waiting per sink before new ones are dropped.
const QUEUE: usize = 8;

/// What a sink is told about a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Actuation {
    pub decision: DecisionKind,
    pub device: String,
    pub identity: Option<String>,
    pub name: Option<String>,
    pub score: Option<f32>,
    /// The audit event's sequence number (the outbox entry already written).
    pub audit_seq: u64,
}

/// Why a sink failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("GPIO {chip} line {line}: {message}")]
    Gpio { chip: PathBuf, line: u32, message: String },
    #[error("command {program}: {message}")]
    Command { program: String, message: String },
}

/// Per-sink outcome counters, for metrics.
#[derive(Debug, Default)]
pub struct SinkCounters {
    pub done: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

struct SinkHandle {
    name: String,
    on: Vec<DecisionKind>,
    queue: SyncSender<Actuation>,
    counters: Arc<SinkCounters>,
    thread: JoinHandle<()>,
}

/// The configured sinks.
pub struct Actuators {
    sinks: Vec<SinkHandle>,
}

impl std::fmt::Debug for Actuators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.sinks.iter().map(|s| &s.name)).finish()
    }
}

/// A running sink: receives actuations and performs them.
trait Sink: Send {
    fn perform(&mut self, actuation: &Actuation) -> Result<(), SinkError>;
}

impl Actuators {
    /// Starts a thread per sink.
    pub fn start(configs: &[SinkConfig]) -> Self {
        let sinks = configs
            .iter()
            .enumerate()
            .map(|(i, config)| {
                let (name, on, sink): (String, Vec<DecisionKind>, Box<dyn Sink>) = match config {
                    SinkConfig::Gpio { chip, line, pulse_ms, active_low, on } => (
                        format!("gpio{i}"),
                        on.clone(),
                        Box::new(GpioSink::new(chip, *line, Duration::from_millis(*pulse_ms), *active_low)),
                    ),
                    SinkConfig::Command { argv, timeout_ms, on } => (
                        format!("command{i}"),
                        on.clone(),
                        Box::new(CommandSink { argv: argv.clone(), timeout: Duration::from_millis(*timeout_ms) }),
                    ),
                };
                spawn(name, on, sink)
            })
            .collect();
        Self { sinks }
    }

    /// Hands `actuation` to every sink that acts on its decision; never blocks.
    pub fn dispatch(&self, actuation: &Actuation) {
        for sink in self.sinks.iter().filter(|s| s.on.contains(&actuation.decision)) {
            match sink.queue.try_send(actuation.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    sink.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    log::error!(sink = sink.name.as_str(), audit_seq = actuation.audit_seq; "actuation dropped: sink queue full or stopped");
                }
            }
        }
    }

    /// Counters per sink name.
    pub fn counters(&self) -> HashMap<String, Arc<SinkCounters>> {
        self.sinks.iter().map(|s| (s.name.clone(), s.counters.clone())).collect()
    }

    /// Lets queued actuations finish, then stops the threads.
    pub fn shutdown(self) {
        for sink in self.sinks {
            drop(sink.queue);
            let _ = sink.thread.join();
        }
    }
}

fn spawn(name: String, on: Vec<DecisionKind>, mut sink: Box<dyn Sink>) -> SinkHandle {
    let (queue, requests): (SyncSender<Actuation>, Receiver<Actuation>) = mpsc::sync_channel(QUEUE);
    let counters = Arc::new(SinkCounters::default());
    let thread_counters = counters.clone();
    let thread_name = name.clone();
    let thread = std::thread::Builder::new()
        .name(format!("sink-{name}"))
        .spawn(move || {
            for actuation in requests {
                match sink.perform(&actuation) {
                    Ok(()) => {
                        thread_counters.done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        thread_counters.failed.fetch_add(1, Ordering::Relaxed);
                        log::error!(error:% = error, sink = thread_name.as_str(), audit_seq = actuation.audit_seq; "actuation failed");
                    }
                }
            }
        });
    let thread = match thread {
        Ok(thread) => thread,
        Err(error) => {
            log::error!(error:% = error, sink = name.as_str(); "cannot start sink thread; its actuations will be dropped");
            std::thread::spawn(|| {})
        }
    };
    SinkHandle { name, on, queue, counters, thread }
}

/// Pulses one GPIO line: active for `pulse`, then inactive.
struct GpioSink {
    chip: PathBuf,
    line: u32,
    pulse: Duration,
    active_low: bool,
}

impl GpioSink {
    fn new(chip: &Path, line: u32, pulse: Duration, active_low: bool) -> Self {
        Self { chip: chip.to_path_buf(), line, pulse, active_low }
    }

    fn error(&self, message: impl std::fmt::Display) -> SinkError {
        SinkError::Gpio { chip: self.chip.clone(), line: self.line, message: message.to_string() }
    }
}

impl Sink for GpioSink {
    fn perform(&mut self, _: &Actuation) -> Result<(), SinkError> {
        use gpiocdev::line::Value;
        let mut builder = gpiocdev::Request::builder();
        builder.on_chip(&self.chip).with_consumer("facegate").with_line(self.line).as_output(Value::Inactive);
        if self.active_low {
            builder.as_active_low();
        }
        // The line is requested per pulse and released after: another process
        // (a maintenance tool) can use it between decisions.
        let request = builder.request().map_err(|e| self.error(e))?;
        request.set_value(self.line, Value::Active).map_err(|e| self.error(e))?;
        std::thread::sleep(self.pulse);
        request.set_value(self.line, Value::Inactive).map_err(|e| self.error(e))?;
        Ok(())
    }
}

/// Runs `argv` with the decision in its environment; killed after `timeout`.
struct CommandSink {
    argv: Vec<String>,
    timeout: Duration,
}

impl Sink for CommandSink {
    fn perform(&mut self, a: &Actuation) -> Result<(), SinkError> {
        let program = self.argv.first().cloned().unwrap_or_default();
        let error = |message: String| SinkError::Command { program: program.clone(), message };
        let mut command = Command::new(&program);
        command
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env("FACEGATE_DECISION", decision_name(a.decision))
            .env("FACEGATE_DEVICE", &a.device)
            .env("FACEGATE_AUDIT_SEQ", a.audit_seq.to_string());
        if let Some(identity) = &a.identity {
            command.env("FACEGATE_IDENTITY", identity);
        }
        if let Some(name) = &a.name {
            command.env("FACEGATE_NAME", name);
        }
        if let Some(score) = a.score {
            command.env("FACEGATE_SCORE", format!("{score:.4}"));
        }
        let mut child = command.spawn().map_err(|e| error(e.to_string()))?;
        let started = Instant::now();
        loop {
            match child.try_wait().map_err(|e| error(e.to_string()))? {
                Some(status) if status.success() => return Ok(()),
                Some(status) => return Err(error(format!("exited with {status}"))),
                None if started.elapsed() >= self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(error(format!("killed after the {} ms timeout", self.timeout.as_millis())));
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

pub fn decision_name(kind: DecisionKind) -> &'static str {
    match kind {
        DecisionKind::Grant => "grant",
        DecisionKind::Deny => "deny",
        DecisionKind::Unknown => "unknown",
        DecisionKind::Spoof => "spoof",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(seq: u64) -> Actuation {
        Actuation {
            decision: DecisionKind::Grant,
            device: "door-1".into(),
            identity: Some("alice".into()),
            name: Some("Alice".into()),
            score: Some(0.97),
            audit_seq: seq,
        }
    }

    fn wait_for(counter: &AtomicU64, value: u64) {
        let started = Instant::now();
        while counter.load(Ordering::Relaxed) < value && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_command_hook_sees_the_decision_in_its_environment() {
        let out = std::env::temp_dir().join(format!("facegate-hook-{}", std::process::id()));
        let script = format!(
            "echo \"$FACEGATE_DECISION $FACEGATE_IDENTITY $FACEGATE_NAME $FACEGATE_AUDIT_SEQ\" > {}",
            out.display()
        );
        let actuators = Actuators::start(&[SinkConfig::Command {
            argv: vec!["/bin/sh".into(), "-c".into(), script],
            timeout_ms: 5000,
            on: vec![DecisionKind::Grant],
        }]);
        actuators.dispatch(&grant(42));
        let counters = actuators.counters()["command0"].clone();
        wait_for(&counters.done, 1);
        assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), "grant alice Alice 42");
        std::fs::remove_file(out).unwrap();
        actuators.shutdown();
    }

    #[test]
    fn a_hanging_hook_is_killed_at_its_timeout_and_counted() {
        let actuators = Actuators::start(&[SinkConfig::Command {
            argv: vec!["/bin/sleep".into(), "30".into()],
            timeout_ms: 100,
            on: vec![DecisionKind::Grant],
        }]);
        let started = Instant::now();
        actuators.dispatch(&grant(1));
        assert!(started.elapsed() < Duration::from_millis(50), "dispatch must not wait for the sink");
        let counters = actuators.counters()["command0"].clone();
        wait_for(&counters.failed, 1);
        assert_eq!(counters.failed.load(Ordering::Relaxed), 1);
        actuators.shutdown();
    }

    #[test]
    fn a_missing_gpio_chip_fails_the_pulse_without_blocking_the_pipeline() {
        let actuators = Actuators::start(&[SinkConfig::Gpio {
            chip: PathBuf::from("/dev/gpiochip-does-not-exist"),
            line: 17,
            pulse_ms: 100,
            active_low: false,
            on: vec![DecisionKind::Grant],
        }]);
        actuators.dispatch(&grant(7));
        let counters = actuators.counters()["gpio0"].clone();
        wait_for(&counters.failed, 1);
        assert_eq!(counters.failed.load(Ordering::Relaxed), 1);
        actuators.shutdown();
    }

    #[test]
    fn decisions_a_sink_does_not_act_on_are_not_sent_and_a_full_queue_drops() {
        let actuators = Actuators::start(&[SinkConfig::Command {
            argv: vec!["/bin/sleep".into(), "1".into()],
            timeout_ms: 5000,
            on: vec![DecisionKind::Grant],
        }]);
        let counters = actuators.counters()["command0"].clone();
        actuators.dispatch(&Actuation { decision: DecisionKind::Unknown, ..grant(1) });
        for seq in 0..(QUEUE as u64 + 5) {
            actuators.dispatch(&grant(seq));
        }
        assert!(counters.dropped.load(Ordering::Relaxed) >= 4);
        drop(actuators);
    }
}
