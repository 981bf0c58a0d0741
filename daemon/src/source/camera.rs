//! V4L2 cameras (USB, CSI) through nokhwa. Frames are taken raw and decoded
//! here — MJPEG with the pipeline's own JPEG decoder, YUYV with
//! [`super::yuyv_to_rgb`] — so nothing but nokhwa's V4L2 binding is needed.
//! This machine has no V4L2 device: the code is tested up to the device
//! boundary (pixel conversion, open errors), not with a camera.

use std::time::Instant;

use nokhwa::Camera;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    CameraFormat as NokhwaFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
};

use super::{CameraFormat, Frame, FrameSource, SourceError};

/// An open camera stream.
pub(super) struct CameraSource {
    name: String,
    camera: Camera,
    index: u64,
    started: Instant,
}

impl std::fmt::Debug for CameraSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraSource").field("name", &self.name).finish_non_exhaustive()
    }
}

impl CameraSource {
    pub(super) fn open(
        index: u32,
        width: u32,
        height: u32,
        fps: u32,
        format: CameraFormat,
    ) -> Result<Self, SourceError> {
        let name = format!("/dev/video{index}");
        let open_error =
            |e: nokhwa::NokhwaError| SourceError::Open { source_name: name.clone(), message: e.to_string() };
        let frame_format = match format {
            CameraFormat::Mjpeg => FrameFormat::MJPEG,
            CameraFormat::Yuyv => FrameFormat::YUYV,
        };
        let requested = RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(NokhwaFormat::new(
            Resolution::new(width, height),
            frame_format,
            fps,
        )));
        let mut camera = Camera::new(CameraIndex::Index(index), requested).map_err(open_error)?;
        camera.open_stream().map_err(open_error)?;
        Ok(Self { name, camera, index: 0, started: Instant::now() })
    }
}

impl FrameSource for CameraSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let buffer = self
            .camera
            .frame()
            .map_err(|e| SourceError::Disconnected { source_name: self.name.clone(), message: e.to_string() })?;
        let index = self.index;
        self.index += 1;
        let bad = |message: String| SourceError::BadFrame { source_name: self.name.clone(), index, message };
        let resolution = buffer.resolution();
        let image = match buffer.source_frame_format() {
            FrameFormat::MJPEG => facegate_face::decode_image(buffer.buffer()).map_err(|e| bad(e.to_string()))?,
            FrameFormat::YUYV => super::yuyv_to_rgb(resolution.width(), resolution.height(), buffer.buffer())
                .map_err(|e| bad(e.to_string()))?,
            FrameFormat::RAWRGB => {
                facegate_face::rgb_frame(resolution.width(), resolution.height(), buffer.buffer().to_vec())
                    .map_err(|e| bad(e.to_string()))?
            }
            other => return Err(bad(format!("pixel format {other} is not supported (use MJPEG or YUYV)"))),
        };
        Ok(Some(Frame { image, index, timestamp: self.started.elapsed() }))
    }

    fn describe(&self) -> String {
        format!("camera {}", self.name)
    }
}
