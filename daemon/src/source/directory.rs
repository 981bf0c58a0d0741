//! Replay of a directory of frames (JPEG, PNG, PGM/PPM), in file-name order.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Frame, FrameSource, Pace, SourceError};

/// Frames read from image files, timestamped at a fixed rate; optionally
/// sampled at a lower rate, as a slower camera would film the same scene.
#[derive(Debug)]
pub struct DirectorySource {
    dir: PathBuf,
    files: Vec<PathBuf>,
    /// Frames delivered so far.
    taken: u64,
    /// Recorded frames per delivered frame (1 without sampling).
    stride: f64,
    fps: f64,
    pace: Pace,
    repeat: bool,
    started: Option<Instant>,
}

const EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "pgm", "ppm", "pnm"];

impl DirectorySource {
    pub fn open(dir: &Path, fps: f64, pace: Pace, repeat: bool) -> Result<Self, SourceError> {
        let open_error = |message: String| SourceError::Open { source_name: dir.display().to_string(), message };
        if !(fps.is_finite() && fps > 0.0) {
            return Err(open_error(format!("frame rate {fps} is not a positive number")));
        }
        let entries = std::fs::read_dir(dir).map_err(|e| open_error(e.to_string()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        if files.is_empty() {
            return Err(open_error("no JPEG, PNG or PGM frames in the directory".into()));
        }
        files.sort();
        Ok(Self { dir: dir.to_path_buf(), files, taken: 0, stride: 1.0, fps, pace, repeat, started: None })
    }

    /// Delivers `rate` frames per second of the recording (at most its
    /// `fps`): the recorded frame due at each sampling instant, the ones in
    /// between skipped. Timestamps stay the recording's, so motion between
    /// two delivered frames is what a camera at `rate` would see.
    pub fn sampled_at(mut self, rate: f64) -> Result<Self, SourceError> {
        if !(rate.is_finite() && rate > 0.0 && rate <= self.fps) {
            return Err(SourceError::Open {
                source_name: self.dir.display().to_string(),
                message: format!("sample rate {rate} must be positive and at most the recording's {} fps", self.fps),
            });
        }
        self.stride = self.fps / rate;
        Ok(self)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl FrameSource for DirectorySource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        // The recorded frame due at this sampling instant (every frame
        // without sampling); across repeats the index keeps growing.
        let index = (self.taken as f64 * self.stride).floor() as u64;
        let len = self.files.len() as u64;
        if index >= len && !self.repeat {
            return Ok(None);
        }
        self.taken += 1;
        let path = &self.files[usize::try_from(index % len).unwrap_or(0)];
        let timestamp = Duration::from_secs_f64(index as f64 / self.fps);
        if self.pace == Pace::Recorded {
            let started = *self.started.get_or_insert_with(Instant::now);
            if let Some(wait) = timestamp.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let bad_frame =
            |message: String| SourceError::BadFrame { source_name: path.display().to_string(), index, message };
        let bytes = std::fs::read(path).map_err(|e| bad_frame(e.to_string()))?;
        let image = facegate_face::decode_image(&bytes).map_err(|e| bad_frame(e.to_string()))?;
        Ok(Some(Frame { image, index, timestamp }))
    }

    fn describe(&self) -> String {
        let sampled =
            if self.stride > 1.0 { format!(", sampled at {:.3} fps", self.fps / self.stride) } else { String::new() };
        format!("replay of {} ({} frames at {} fps{sampled})", self.dir.display(), self.files.len(), self.fps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use facegate_face::RgbImage;

    fn frames_dir(name: &str, count: usize) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("facegate-dir-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..count {
            RgbImage::from_pixel(32, 24, image::Rgb([i as u8, 0, 0])).save(dir.join(format!("{i:04}.png"))).unwrap();
        }
        dir
    }

    #[test]
    fn frames_come_in_name_order_with_timestamps_then_end() {
        let dir = frames_dir("order", 3);
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let mut source = DirectorySource::open(&dir, 10.0, Pace::AsFastAsPossible, false).unwrap();
        for i in 0..3u8 {
            let frame = source.next_frame().unwrap().unwrap();
            assert_eq!(frame.image.get_pixel(0, 0).0[0], i);
            assert_eq!(frame.timestamp, Duration::from_millis(100 * u64::from(i)));
        }
        assert!(source.next_frame().unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_frame_is_an_error_and_the_next_one_still_comes() {
        let dir = frames_dir("corrupt", 2);
        std::fs::write(dir.join("0000.png"), b"\x89PNG\r\n\x1a\n broken").unwrap();
        let mut source = DirectorySource::open(&dir, 25.0, Pace::AsFastAsPossible, false).unwrap();
        match source.next_frame() {
            Err(SourceError::BadFrame { index: 0, message, .. }) => assert!(message.contains("PNG"), "{message}"),
            other => panic!("expected a bad frame, got {:?}", other.map(|f| f.map(|f| f.index))),
        }
        assert_eq!(source.next_frame().unwrap().unwrap().index, 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_empty_directory_does_not_open() {
        let dir = frames_dir("empty", 0);
        let err = DirectorySource::open(&dir, 25.0, Pace::Recorded, false).unwrap_err();
        assert!(err.to_string().contains("no JPEG, PNG or PGM frames"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn recorded_pace_waits_for_the_frame_time() {
        let dir = frames_dir("pace", 3);
        let mut source = DirectorySource::open(&dir, 20.0, Pace::Recorded, false).unwrap();
        let started = Instant::now();
        while source.next_frame().unwrap().is_some() {}
        assert!(started.elapsed() >= Duration::from_millis(95), "{:?}", started.elapsed());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn repeat_starts_over_with_increasing_indices() {
        let dir = frames_dir("repeat", 2);
        let mut source = DirectorySource::open(&dir, 25.0, Pace::AsFastAsPossible, true).unwrap();
        let indices: Vec<u64> = (0..5).map(|_| source.next_frame().unwrap().unwrap().index).collect();
        assert_eq!(indices, [0, 1, 2, 3, 4]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_sampled_replay_skips_frames_and_keeps_the_recorded_time() {
        let dir = frames_dir("sampled", 5);
        let source = DirectorySource::open(&dir, 12.5, Pace::AsFastAsPossible, true).unwrap();
        let mut source = source.sampled_at(5.0).unwrap();
        let frames: Vec<(u64, u8, Duration)> = (0..4)
            .map(|_| {
                let frame = source.next_frame().unwrap().unwrap();
                (frame.index, frame.image.get_pixel(0, 0).0[0], frame.timestamp)
            })
            .collect();
        let ms = Duration::from_millis;
        // Every 2.5 recorded frames; the sixth recorded frame is the first again.
        assert_eq!(frames, [(0, 0, ms(0)), (2, 2, ms(160)), (5, 0, ms(400)), (7, 2, ms(560))]);
        assert!(source.describe().contains("sampled at 5.000 fps"), "{}", source.describe());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_sampled_replay_ends_with_its_recording_and_refuses_a_faster_rate() {
        let dir = frames_dir("sampled-end", 4);
        let open = || DirectorySource::open(&dir, 10.0, Pace::AsFastAsPossible, false).unwrap();
        let mut source = open().sampled_at(4.0).unwrap();
        let indices: Vec<u64> = std::iter::from_fn(|| source.next_frame().unwrap()).map(|f| f.index).collect();
        assert_eq!(indices, [0, 2]);
        for rate in [0.0, -1.0, 10.5, f64::NAN] {
            let err = open().sampled_at(rate).unwrap_err();
            assert!(err.to_string().contains("at most the recording's 10 fps"), "{err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
