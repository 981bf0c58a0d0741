//! The face pipeline on its own threads.
//!
//! Detection and embedding are blocking CPU work: they never run on the
//! async executor. A fixed set of worker threads takes jobs from a bounded
//! queue; when the queue is full a request is refused at once (503) rather
//! than piling up.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use facegate_face::{FaceAnalysis, FaceError, FacePipeline};
use tokio::sync::oneshot;

/// What to do with a photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Exactly one face, which must pass the quality gate.
    Enroll,
    /// The main face (a probe for search or verify).
    Probe,
}

/// Why a photo could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum FacesError {
    #[error("the face pipeline is busy; try again shortly")]
    Busy,
    #[error("the face pipeline has stopped")]
    Stopped,
    #[error(transparent)]
    Face(#[from] FaceError),
}

struct Job {
    bytes: Arc<Vec<u8>>,
    purpose: Purpose,
    reply: oneshot::Sender<Result<FaceAnalysis, FaceError>>,
}

/// A pool of pipeline threads behind a bounded queue.
#[derive(Clone)]
pub struct FaceWorkers {
    queue: SyncSender<Job>,
    pipeline: Arc<FacePipeline>,
}

impl std::fmt::Debug for FaceWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceWorkers").field("model", &self.pipeline.model_id()).finish()
    }
}

impl FaceWorkers {
    /// Starts `workers` threads sharing `pipeline`, with room for `queue`
    /// waiting photos. The threads end when every handle is dropped.
    pub fn start(pipeline: Arc<FacePipeline>, workers: usize, queue: usize) -> std::io::Result<Self> {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Job>(queue);
        let receiver = Arc::new(std::sync::Mutex::new(receiver));
        for n in 0..workers.max(1) {
            let receiver = Arc::clone(&receiver);
            let pipeline = Arc::clone(&pipeline);
            std::thread::Builder::new().name(format!("face-{n}")).spawn(move || work(&pipeline, &receiver))?;
        }
        Ok(Self { queue: sender, pipeline })
    }

    pub fn pipeline(&self) -> &FacePipeline {
        &self.pipeline
    }

    /// Runs the pipeline on `bytes` (an encoded image) on a worker thread.
    pub async fn analyse(&self, bytes: Arc<Vec<u8>>, purpose: Purpose) -> Result<FaceAnalysis, FacesError> {
        let (reply, answer) = oneshot::channel();
        match self.queue.try_send(Job { bytes, purpose, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(FacesError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(FacesError::Stopped),
        }
        Ok(answer.await.map_err(|_| FacesError::Stopped)??)
    }
}

fn work(pipeline: &FacePipeline, receiver: &std::sync::Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let Ok(guard) = receiver.lock() else {
                return;
            };
            match guard.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let result =
            facegate_face::decode_image(&job.bytes).map_err(FaceError::from).and_then(|image| match job.purpose {
                Purpose::Enroll => pipeline.enroll(&image),
                Purpose::Probe => pipeline.probe(&image),
            });
        let _ = job.reply.send(result);
    }
}
