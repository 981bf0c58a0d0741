//! The labelled presentations a liveness evaluation reads: still photos and
//! clips, each bona fide or an attack of a named type.
//!
//! Layout of a data directory (the shared dev set's, and the committed
//! fixture's):
//!
//! * `faces/spoofs.csv` — `path,…,attack,…`: attack photos, paths relative to
//!   `faces/`. Rows whose path is a video are skipped: they are the clips of
//!   `videos/` again.
//! * `faces/manifest.csv` — `path,…`: bona fide photos (optional).
//! * `videos/videos.csv` — `video,identity,…,attack`: clips (a video file or
//!   a directory of frames) relative to `videos/`; an empty `attack` is a live
//!   person. Clips with an empty `identity` show no person (no face at all, or
//!   a cartoon): neither bona fide nor attack, they are left out.
//!
//! CSV here is the plain kind these files use: a header row, comma-separated
//! fields, no quoting.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Still image or clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Medium {
    Still,
    Video,
}

impl Medium {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Still => "still",
            Self::Video => "video",
        }
    }
}

/// One labelled file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub path: PathBuf,
    /// The attack type (`print`, `replay`, …); `None` for a live person.
    pub attack: Option<String>,
    /// Who is shown (empty when the file does not say).
    pub identity: String,
}

/// Every labelled still and clip of a data directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataSet {
    pub stills: Vec<Sample>,
    pub videos: Vec<Sample>,
}

/// The data directory is unusable.
#[derive(Debug, thiserror::Error)]
pub enum DataSetError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Csv { path: PathBuf, line: usize, message: String },
    #[error("{0} has neither faces/spoofs.csv nor videos/videos.csv")]
    Empty(PathBuf),
}

const VIDEO_EXTENSIONS: [&str; 5] = ["mp4", "avi", "mov", "mkv", "webm"];

fn is_video(path: &str) -> bool {
    Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

impl DataSet {
    /// Reads the CSV files of `root` (see the module docs). Missing files
    /// are skipped; a directory with none of them is an error.
    pub fn read(root: &Path) -> Result<Self, DataSetError> {
        let faces = root.join("faces");
        let videos = root.join("videos");
        let spoofs = faces.join("spoofs.csv");
        let manifest = faces.join("manifest.csv");
        let clips = videos.join("videos.csv");
        if !spoofs.exists() && !clips.exists() {
            return Err(DataSetError::Empty(root.to_path_buf()));
        }
        let mut set = DataSet::default();
        if spoofs.exists() {
            for row in read_csv(&spoofs, &["path", "attack", "identity"])? {
                if !is_video(&row[0]) {
                    let (path, attack, identity) = (faces.join(&row[0]), Some(row[1].clone()), row[2].clone());
                    set.stills.push(Sample { path, attack, identity });
                }
            }
        }
        if manifest.exists() {
            for row in read_csv(&manifest, &["path", "identity"])? {
                set.stills.push(Sample { path: faces.join(&row[0]), attack: None, identity: row[1].clone() });
            }
        }
        if clips.exists() {
            for row in read_csv(&clips, &["video", "attack", "identity"])? {
                if row[2].is_empty() {
                    continue;
                }
                let attack = (!row[1].is_empty()).then(|| row[1].clone());
                set.videos.push(Sample { path: videos.join(&row[0]), attack, identity: row[2].clone() });
            }
        }
        Ok(set)
    }
}

impl DataSet {
    /// Only the attack presentations.
    pub fn attacks_only(&self) -> Self {
        let attacks = |samples: &[Sample]| samples.iter().filter(|s| s.attack.is_some()).cloned().collect();
        Self { stills: attacks(&self.stills), videos: attacks(&self.videos) }
    }
}

/// The named `columns` of every data row of the CSV file at `path`.
fn read_csv(path: &Path, columns: &[&str]) -> Result<Vec<Vec<String>>, DataSetError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataSetError::Read { path: path.into(), source })?;
    let error = |line: usize, message: String| DataSetError::Csv { path: path.into(), line, message };
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else { return Err(error(1, "no header row".into())) };
    let header: Vec<&str> = header.split(',').map(str::trim).collect();
    let indices = columns
        .iter()
        .map(|c| header.iter().position(|h| h == c).ok_or_else(|| error(1, format!("no `{c}` column"))))
        .collect::<Result<Vec<usize>, _>>()?;
    let mut rows = Vec::new();
    for (number, line) in lines {
        if line.contains('"') {
            return Err(error(number + 1, "quoted fields are not supported".into()));
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != header.len() {
            return Err(error(number + 1, format!("{} fields, the header has {}", fields.len(), header.len())));
        }
        rows.push(indices.iter().map(|&i| fields[i].to_owned()).collect());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn the_three_files_become_stills_and_videos_and_spoof_videos_are_not_stills() {
        let dir = std::env::temp_dir().join(format!("facegate-liveness-dataset-{}", std::process::id()));
        write(
            &dir,
            "faces/spoofs.csv",
            "path,identity,attack,made_from\np/a.jpg,x,print,a.jpg\nv/a.mp4,x,print_video,\n",
        );
        write(&dir, "faces/manifest.csv", "path,identity,source\na.jpg,x,s\n");
        write(&dir, "videos/videos.csv", "video,identity,attack\nlive.mp4,x,\nframes,x,replay\ncartoon.avi,,\n");
        let set = DataSet::read(&dir).unwrap();
        assert_eq!((set.stills.len(), set.videos.len()), (2, 2));
        assert_eq!(
            set.stills[0],
            Sample { path: dir.join("faces/p/a.jpg"), attack: Some("print".into()), identity: "x".into() }
        );
        assert_eq!(set.stills[1].attack, None);
        assert_eq!(set.videos[0].attack, None);
        assert_eq!(
            set.videos[1],
            Sample { path: dir.join("videos/frames"), attack: Some("replay".into()), identity: "x".into() }
        );
        write(&dir, "videos/videos.csv", "video,identity\nlive.mp4,x\n");
        let error = DataSet::read(&dir).unwrap_err().to_string();
        assert!(error.contains("no `attack` column"), "{error}");
        write(&dir, "videos/videos.csv", "video,attack,identity\nlive.mp4\n");
        let error = DataSet::read(&dir).unwrap_err().to_string();
        assert!(error.contains(":2: 1 fields"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(DataSet::read(&dir), Err(DataSetError::Empty(_))));
    }
}
