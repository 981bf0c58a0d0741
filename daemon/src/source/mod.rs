//! Frame sources: one trait, a replay source (a directory of frames or a
//! video file), OpenCV (`VideoCapture`: files, RTSP, GStreamer pipelines;
//! feature `opencv`) and V4L2 cameras through nokhwa (feature `camera`), and
//! a wrapper that reconnects a lost source with backoff.

use std::path::PathBuf;
use std::time::Duration;

use facegate_face::RgbImage;
use serde::{Deserialize, Serialize};

#[cfg(feature = "camera")]
mod camera;
mod directory;
#[cfg(feature = "opencv")]
mod opencv_capture;
mod pixels;
mod reconnect;

pub use directory::DirectorySource;
pub use pixels::{PixelError, yuyv_to_rgb};
pub use reconnect::{Reconnecting, SourceHealth, SourceState, resilient};

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub image: RgbImage,
    /// Position in the stream, from 0 (a sampled replay's recorded frame).
    pub index: u64,
    /// Media time (replays) or time since the source opened (live sources).
    pub timestamp: Duration,
}

/// Why a source could not deliver a frame.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open {source_name}: {message}")]
    Open { source_name: String, message: String },
    #[error("{source_name}: frame {index} is unreadable: {message}")]
    BadFrame { source_name: String, index: u64, message: String },
    #[error("{source_name} was lost: {message}")]
    Disconnected { source_name: String, message: String },
    #[error("{source_name} ended after {read} of {expected} frames: the file is truncated or corrupt")]
    Truncated { source_name: String, read: u64, expected: u64 },
    #[error("{what} needs this binary to be built with the `{feature}` feature")]
    Unsupported { what: String, feature: &'static str },
}

impl SourceError {
    /// Whether reopening the source may help (a lost camera or stream).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Disconnected { .. } | Self::Open { .. })
    }
}

/// Something that produces frames. Not `Send`: V4L2 handles (nokhwa) are
/// bound to the thread that opened them, so a source is opened on the
/// capture thread that reads it.
pub trait FrameSource {
    /// The next frame; `Ok(None)` at the end of a finite stream. A bad frame
    /// is an error the caller may skip; a lost device is `Disconnected`.
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError>;
    /// A human description for logs and health ("replay of clip.mp4").
    fn describe(&self) -> String;
}

/// How fast a replay delivers frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pace {
    /// At their recorded rate, like a camera would.
    #[default]
    Recorded,
    /// As fast as the consumer takes them (tests, incident analysis).
    AsFastAsPossible,
}

/// Frame format requested from a V4L2 camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CameraFormat {
    #[default]
    Mjpeg,
    Yuyv,
}

/// Where frames come from (the daemon configuration's `[source]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SourceSpec {
    /// A directory of frames (JPEG/PNG/PGM, in name order) or a video file.
    Replay {
        path: PathBuf,
        #[serde(default)]
        pace: Pace,
        /// Frame rate of a directory of frames (videos carry their own).
        #[serde(default = "default_fps")]
        fps: f64,
        /// Start again at the end (demos).
        #[serde(default)]
        repeat: bool,
        /// Take only this many frames per second of a directory's recording,
        /// as a slower camera filming the same scene would: frames in
        /// between are skipped and timestamps stay the recording's (unset:
        /// every frame).
        #[serde(default, rename = "sample-fps", skip_serializing_if = "Option::is_none")]
        sample_fps: Option<f64>,
    },
    /// A V4L2 camera (USB/CSI), through nokhwa.
    Camera {
        /// Device index (0 for /dev/video0).
        #[serde(default)]
        index: u32,
        #[serde(default = "default_width")]
        width: u32,
        #[serde(default = "default_height")]
        height: u32,
        #[serde(default = "default_camera_fps")]
        fps: u32,
        #[serde(default)]
        format: CameraFormat,
    },
    /// Anything OpenCV's VideoCapture opens: `rtsp://…`, a GStreamer
    /// pipeline ending in `appsink`, a video file.
    Stream { url: String },
}

fn default_fps() -> f64 {
    25.0
}
fn default_width() -> u32 {
    640
}
fn default_height() -> u32 {
    480
}
fn default_camera_fps() -> u32 {
    15
}

impl SourceSpec {
    /// Whether the stream has an end (replays that do not repeat).
    pub fn is_finite(&self) -> bool {
        matches!(self, Self::Replay { repeat: false, .. })
    }

    /// Checks serde cannot express (`config validate` and start-up).
    pub fn check(&self) -> Result<(), String> {
        if let Self::Replay { fps, sample_fps, .. } = self {
            if !(fps.is_finite() && *fps > 0.0) {
                return Err(format!("source.fps must be a positive number, got {fps}"));
            }
            if let Some(rate) = sample_fps
                && !(rate.is_finite() && *rate > 0.0 && rate <= fps)
            {
                return Err(format!("source.sample-fps must be positive and at most source.fps ({fps}), got {rate}"));
            }
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Replay { path, .. } => format!("replay of {}", path.display()),
            Self::Camera { index, width, height, fps, format } => {
                format!("camera /dev/video{index} {width}x{height}@{fps} {format:?}")
            }
            Self::Stream { url } => format!("stream {}", redact_url(url)),
        }
    }
}

/// Removes credentials from `rtsp://user:password@host/…` for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Opens the source described by `spec`.
pub fn open(spec: &SourceSpec) -> Result<Box<dyn FrameSource>, SourceError> {
    match spec {
        SourceSpec::Replay { path, pace, fps, repeat, sample_fps } => {
            if path.is_dir() {
                let source = DirectorySource::open(path, *fps, *pace, *repeat)?;
                return Ok(Box::new(match sample_fps {
                    Some(rate) => source.sampled_at(*rate)?,
                    None => source,
                }));
            }
            if sample_fps.is_some() {
                return Err(SourceError::Open {
                    source_name: path.display().to_string(),
                    message: "sample-fps applies to a directory of frames, not to a video".into(),
                });
            }
            open_video(path, *pace, *repeat)
        }
        SourceSpec::Camera { index, width, height, fps, format } => open_camera(*index, *width, *height, *fps, *format),
        SourceSpec::Stream { url } => open_stream(url),
    }
}

#[cfg(feature = "opencv")]
fn open_video(path: &std::path::Path, pace: Pace, repeat: bool) -> Result<Box<dyn FrameSource>, SourceError> {
    Ok(Box::new(opencv_capture::OpenCvSource::open_file(path, pace, repeat)?))
}

#[cfg(not(feature = "opencv"))]
fn open_video(path: &std::path::Path, _: Pace, _: bool) -> Result<Box<dyn FrameSource>, SourceError> {
    if !path.exists() {
        return Err(SourceError::Open {
            source_name: path.display().to_string(),
            message: "no such file or directory".into(),
        });
    }
    Err(SourceError::Unsupported { what: format!("replaying the video {}", path.display()), feature: "opencv" })
}

#[cfg(feature = "opencv")]
fn open_stream(url: &str) -> Result<Box<dyn FrameSource>, SourceError> {
    Ok(Box::new(opencv_capture::OpenCvSource::open_url(url)?))
}

#[cfg(not(feature = "opencv"))]
fn open_stream(url: &str) -> Result<Box<dyn FrameSource>, SourceError> {
    Err(SourceError::Unsupported { what: format!("the stream {}", redact_url(url)), feature: "opencv" })
}

#[cfg(feature = "camera")]
fn open_camera(
    index: u32,
    width: u32,
    height: u32,
    fps: u32,
    format: CameraFormat,
) -> Result<Box<dyn FrameSource>, SourceError> {
    Ok(Box::new(camera::CameraSource::open(index, width, height, fps, format)?))
}

#[cfg(not(feature = "camera"))]
fn open_camera(index: u32, _: u32, _: u32, _: u32, _: CameraFormat) -> Result<Box<dyn FrameSource>, SourceError> {
    Err(SourceError::Unsupported { what: format!("the camera /dev/video{index}"), feature: "camera" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_credentials_are_redacted_in_descriptions() {
        assert_eq!(redact_url("rtsp://admin:secret@10.0.0.5/stream1"), "rtsp://***@10.0.0.5/stream1");
        assert_eq!(redact_url("rtsp://10.0.0.5/stream1"), "rtsp://10.0.0.5/stream1");
        let spec = SourceSpec::Stream { url: "rtsp://u:p@cam/x".into() };
        assert!(!spec.describe().contains('p'.to_string().as_str()) || !spec.describe().contains("u:p"));
    }

    #[test]
    fn source_spec_parses_from_toml_with_defaults() {
        let spec: SourceSpec = toml::from_str("kind = \"camera\"\nindex = 1\n").unwrap();
        assert_eq!(
            spec,
            SourceSpec::Camera { index: 1, width: 640, height: 480, fps: 15, format: CameraFormat::Mjpeg }
        );
        let err = toml::from_str::<SourceSpec>("kind = \"replay\"\npath = \"x\"\nspeed = 2\n").unwrap_err();
        assert!(err.to_string().contains("speed"), "{err}");
    }
}
