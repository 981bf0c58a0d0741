//! Replay of a directory of frames (JPEG, PNG, PGM/PPM), in file-name order.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Frame, FrameSource, Pace, SourceError};

/// Frames read from image files, timestamped at a fixed rate.
#[derive(Debug)]
pub struct DirectorySource {
    dir: PathBuf,
    files: Vec<PathBuf>,
    next: usize,
    index: u64,
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
        Ok(Self { dir: dir.to_path_buf(), files, next: 0, index: 0, fps, pace, repeat, started: None })
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
        if self.next == self.files.len() {
            if !self.repeat {
                return Ok(None);
            }
            self.next = 0;
        }
        let path = &self.files[self.next];
        self.next += 1;
        let index = self.index;
        self.index += 1;
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
        format!("replay of {} ({} frames at {} fps)", self.dir.display(), self.files.len(), self.fps)
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
}
