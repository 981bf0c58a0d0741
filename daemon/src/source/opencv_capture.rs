//! OpenCV `VideoCapture`: video files (the replay source), RTSP cameras and
//! GStreamer pipelines.

use std::path::Path;
use std::time::{Duration, Instant};

use facegate_face::RgbImage;
use opencv::core::Mat;
use opencv::prelude::*;
use opencv::{imgproc, videoio};

use super::{Frame, FrameSource, Pace, SourceError};

/// Frames missing from the end of a file before it counts as truncated
/// (container frame counts are estimates).
const TRUNCATION_SLACK: u64 = 3;

/// A `VideoCapture` as a frame source.
pub(super) struct OpenCvSource {
    name: String,
    open: Box<dyn Fn() -> Result<videoio::VideoCapture, SourceError> + Send>,
    capture: videoio::VideoCapture,
    live: bool,
    pace: Pace,
    repeat: bool,
    fps: f64,
    /// Frame count the container declares (files only).
    expected: Option<u64>,
    read_in_pass: u64,
    index: u64,
    started: Instant,
    pass_offset: Duration,
    last_timestamp: Duration,
    bgr: Mat,
    rgb: Mat,
}

impl std::fmt::Debug for OpenCvSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenCvSource").field("name", &self.name).finish_non_exhaustive()
    }
}

fn cv_error(name: &str, error: &opencv::Error) -> String {
    format!("{name}: OpenCV: {}", error.message)
}

impl OpenCvSource {
    /// Opens a video file for replay.
    pub(super) fn open_file(path: &Path, pace: Pace, repeat: bool) -> Result<Self, SourceError> {
        let name = path.display().to_string();
        if !path.is_file() {
            return Err(SourceError::Open { source_name: name, message: "no such file".into() });
        }
        let target = name.clone();
        let open = move || capture(&target, videoio::CAP_ANY);
        Self::start(name, Box::new(open), false, pace, repeat)
    }

    /// Opens an RTSP URL or GStreamer pipeline (a live source).
    pub(super) fn open_url(url: &str) -> Result<Self, SourceError> {
        let name = super::redact_url(url);
        let target = url.to_owned();
        let backend = if url.contains("appsink") { videoio::CAP_GSTREAMER } else { videoio::CAP_ANY };
        let open = move || capture(&target, backend);
        Self::start(name, Box::new(open), true, Pace::AsFastAsPossible, false)
    }

    fn start(
        name: String,
        open: Box<dyn Fn() -> Result<videoio::VideoCapture, SourceError> + Send>,
        live: bool,
        pace: Pace,
        repeat: bool,
    ) -> Result<Self, SourceError> {
        let capture = open()?;
        let fps = capture.get(videoio::CAP_PROP_FPS).unwrap_or(0.0);
        let frames = capture.get(videoio::CAP_PROP_FRAME_COUNT).unwrap_or(0.0);
        Ok(Self {
            name,
            open,
            capture,
            live,
            pace,
            repeat,
            fps: if fps.is_finite() && fps > 0.0 { fps } else { 25.0 },
            expected: (!live && frames.is_finite() && frames >= 1.0).then_some(frames as u64),
            read_in_pass: 0,
            index: 0,
            started: Instant::now(),
            pass_offset: Duration::ZERO,
            last_timestamp: Duration::ZERO,
            bgr: Mat::default(),
            rgb: Mat::default(),
        })
    }

    fn media_time(&self) -> Duration {
        if self.live {
            return self.started.elapsed();
        }
        let ms = self.capture.get(videoio::CAP_PROP_POS_MSEC).unwrap_or(-1.0);
        let pos = if ms.is_finite() && ms >= 0.0 {
            Duration::from_secs_f64(ms / 1000.0)
        } else {
            Duration::from_secs_f64(self.read_in_pass as f64 / self.fps)
        };
        self.pass_offset + pos
    }

    /// Converts the last BGR frame to an `RgbImage`.
    fn converted_frame(&mut self, index: u64) -> Result<RgbImage, SourceError> {
        let bad = |message: String| SourceError::BadFrame { source_name: self.name.clone(), index, message };
        let channels = self.bgr.channels();
        let code = match channels {
            3 => imgproc::COLOR_BGR2RGB,
            4 => imgproc::COLOR_BGRA2RGB,
            1 => imgproc::COLOR_GRAY2RGB,
            other => return Err(bad(format!("{other}-channel frame"))),
        };
        imgproc::cvt_color_def(&self.bgr, &mut self.rgb, code).map_err(|e| bad(cv_error(&self.name, &e)))?;
        let size = self.rgb.size().map_err(|e| bad(cv_error(&self.name, &e)))?;
        let bytes = self.rgb.data_bytes().map_err(|e| bad(cv_error(&self.name, &e)))?.to_vec();
        facegate_face::rgb_frame(size.width.max(0) as u32, size.height.max(0) as u32, bytes)
            .map_err(|e| bad(e.to_string()))
    }
}

fn capture(target: &str, backend: i32) -> Result<videoio::VideoCapture, SourceError> {
    let capture = videoio::VideoCapture::from_file(target, backend)
        .map_err(|e| SourceError::Open { source_name: target.to_owned(), message: e.message })?;
    if !capture.is_opened().unwrap_or(false) {
        return Err(SourceError::Open {
            source_name: super::redact_url(target),
            message: "OpenCV could not open it (unknown format, codec or unreachable stream)".into(),
        });
    }
    Ok(capture)
}

impl FrameSource for OpenCvSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let read = self
            .capture
            .read(&mut self.bgr)
            .map_err(|e| SourceError::Disconnected { source_name: self.name.clone(), message: e.message.clone() })?;
        if !read || self.bgr.empty() {
            if self.live {
                return Err(SourceError::Disconnected { source_name: self.name.clone(), message: "no frame".into() });
            }
            if let Some(expected) = self.expected
                && self.read_in_pass + TRUNCATION_SLACK < expected
            {
                return Err(SourceError::Truncated {
                    source_name: self.name.clone(),
                    read: self.read_in_pass,
                    expected,
                });
            }
            if self.read_in_pass == 0 {
                return Err(SourceError::Truncated {
                    source_name: self.name.clone(),
                    read: 0,
                    expected: self.expected.unwrap_or(1),
                });
            }
            if !self.repeat {
                return Ok(None);
            }
            self.capture = (self.open)()?;
            self.pass_offset = self.last_timestamp + Duration::from_secs_f64(1.0 / self.fps);
            self.read_in_pass = 0;
            return self.next_frame();
        }
        let timestamp = self.media_time();
        self.read_in_pass += 1;
        self.last_timestamp = timestamp;
        let index = self.index;
        self.index += 1;
        if self.pace == Pace::Recorded
            && let Some(wait) = timestamp.checked_sub(self.started.elapsed())
        {
            std::thread::sleep(wait);
        }
        let image = self.converted_frame(index)?;
        Ok(Some(Frame { image, index, timestamp }))
    }

    fn describe(&self) -> String {
        match self.expected {
            Some(n) => format!("replay of {} ({n} frames at {:.2} fps)", self.name, self.fps),
            None => format!("stream {}", self.name),
        }
    }
}
