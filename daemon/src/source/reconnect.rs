//! Keeps a live source going: a lost camera or stream is reopened with
//! exponential backoff, its state published for health and metrics. The
//! daemon never crashes because a camera was unplugged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use super::{Frame, FrameSource, SourceError, SourceSpec};

/// State of the frame source, as health and metrics report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SourceState {
    Connecting = 0,
    Streaming = 1,
    Reconnecting = 2,
    Ended = 3,
}

impl SourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Streaming => "streaming",
            Self::Reconnecting => "reconnecting",
            Self::Ended => "ended",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Streaming,
            2 => Self::Reconnecting,
            3 => Self::Ended,
            _ => Self::Connecting,
        }
    }
}

/// Shared, lock-free view of the source's state.
#[derive(Debug, Clone, Default)]
pub struct SourceHealth {
    state: Arc<AtomicU8>,
    reconnects: Arc<AtomicU64>,
    bad_frames: Arc<AtomicU64>,
}

impl SourceHealth {
    pub fn state(&self) -> SourceState {
        SourceState::from_u8(self.state.load(Ordering::Relaxed))
    }
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames.load(Ordering::Relaxed)
    }
    fn set(&self, state: SourceState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }
}

/// Opens sources with `opener`; on a transient failure waits and retries,
/// doubling the wait from `initial` up to `max`.
pub struct Reconnecting<O> {
    opener: O,
    current: Option<Box<dyn FrameSource>>,
    health: SourceHealth,
    backoff: Duration,
    initial: Duration,
    max: Duration,
    sleep: Box<dyn FnMut(Duration) + Send>,
    description: String,
    shutdown: Arc<std::sync::atomic::AtomicBool>,
}

impl<O> std::fmt::Debug for Reconnecting<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconnecting").field("description", &self.description).finish_non_exhaustive()
    }
}

impl<O> Reconnecting<O>
where
    O: FnMut() -> Result<Box<dyn FrameSource>, SourceError> + Send,
{
    pub fn new(opener: O, description: String, initial: Duration, max: Duration) -> Self {
        Self {
            opener,
            current: None,
            health: SourceHealth::default(),
            backoff: initial,
            initial,
            max,
            sleep: Box::new(std::thread::sleep),
            description,
            shutdown: Arc::default(),
        }
    }

    /// Replaces the sleep function (tests run without waiting).
    pub fn with_sleep(mut self, sleep: impl FnMut(Duration) + Send + 'static) -> Self {
        self.sleep = Box::new(sleep);
        self
    }

    /// Reports into `health` (created before the source, on another thread).
    pub fn with_health(mut self, health: SourceHealth) -> Self {
        self.health = health;
        self
    }

    /// A flag that stops the retry loop (SIGTERM).
    pub fn with_shutdown(mut self, shutdown: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.shutdown = shutdown;
        self
    }

    pub fn health(&self) -> SourceHealth {
        self.health.clone()
    }

    fn wait(&mut self, error: &SourceError) {
        log::warn!(error:% = error, retry_in_ms = self.backoff.as_millis() as u64, source = self.description.as_str(); "frame source unavailable, retrying");
        self.health.set(SourceState::Reconnecting);
        self.health.reconnects.fetch_add(1, Ordering::Relaxed);
        (self.sleep)(self.backoff);
        self.backoff = (self.backoff * 2).min(self.max);
    }
}

impl<O> FrameSource for Reconnecting<O>
where
    O: FnMut() -> Result<Box<dyn FrameSource>, SourceError> + Send,
{
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        loop {
            if self.shutdown.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let source = match self.current.as_mut() {
                Some(source) => source,
                None => match (self.opener)() {
                    Ok(source) => {
                        log::info!(source = source.describe().as_str(); "frame source open");
                        self.current.insert(source)
                    }
                    Err(error) if error.is_transient() => {
                        self.wait(&error);
                        continue;
                    }
                    Err(error) => return Err(error),
                },
            };
            match source.next_frame() {
                Ok(Some(frame)) => {
                    self.health.set(SourceState::Streaming);
                    self.backoff = self.initial;
                    return Ok(Some(frame));
                }
                Ok(None) => {
                    self.health.set(SourceState::Ended);
                    return Ok(None);
                }
                Err(error @ SourceError::BadFrame { .. }) => {
                    self.health.bad_frames.fetch_add(1, Ordering::Relaxed);
                    return Err(error);
                }
                Err(error) if error.is_transient() => {
                    self.current = None;
                    self.wait(&error);
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// A reconnecting source for `spec`.
pub fn resilient(spec: SourceSpec) -> Reconnecting<impl FnMut() -> Result<Box<dyn FrameSource>, SourceError> + Send> {
    let description = spec.describe();
    Reconnecting::new(move || super::open(&spec), description, Duration::from_millis(500), Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A fake camera: yields `frames` frames, then is "unplugged".
    struct Flaky {
        frames: u64,
        sent: u64,
    }

    impl FrameSource for Flaky {
        fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
            if self.sent == self.frames {
                return Err(SourceError::Disconnected { source_name: "flaky".into(), message: "unplugged".into() });
            }
            self.sent += 1;
            Ok(Some(Frame { image: facegate_face::RgbImage::new(16, 16), index: self.sent, timestamp: Duration::ZERO }))
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
    }

    #[test]
    fn an_unplugged_camera_is_reopened_with_growing_backoff() {
        let opens = Arc::new(Mutex::new(0));
        let sleeps = Arc::new(Mutex::new(Vec::new()));
        let (o, s) = (opens.clone(), sleeps.clone());
        let mut source = Reconnecting::new(
            move || {
                let mut n = o.lock().unwrap();
                *n += 1;
                // The second and third attempts find no device.
                if *n == 2 || *n == 3 {
                    return Err(SourceError::Open { source_name: "cam".into(), message: "no such device".into() });
                }
                Ok(Box::new(Flaky { frames: 2, sent: 0 }) as Box<dyn FrameSource>)
            },
            "cam".into(),
            Duration::from_millis(100),
            Duration::from_millis(250),
        )
        .with_sleep(move |d| s.lock().unwrap().push(d));
        let health = source.health();
        for _ in 0..4 {
            assert!(source.next_frame().unwrap().is_some());
        }
        assert_eq!(health.state(), SourceState::Streaming);
        assert_eq!(*opens.lock().unwrap(), 4);
        // unplugged → 100 ms, open fails → 200 ms, open fails → 250 ms (capped), then streaming again.
        assert_eq!(*sleeps.lock().unwrap(), [100, 200, 250].map(Duration::from_millis));
        assert_eq!(health.reconnects(), 3);
    }

    #[test]
    fn a_permanent_error_is_returned_not_retried() {
        let mut source = Reconnecting::new(
            || Err(SourceError::Unsupported { what: "x".into(), feature: "camera" }),
            "x".into(),
            Duration::from_millis(1),
            Duration::from_millis(1),
        );
        assert!(matches!(source.next_frame(), Err(SourceError::Unsupported { .. })));
    }
}
