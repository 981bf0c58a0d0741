//! Bulk import: many people from a folder or a CSV file, through the same
//! enrollment (quality gate, de-duplication, one transaction each) as the
//! API, with a progress bar and a summary of what was refused and why.
//!
//! Folder layout: every sub-folder is one person (named after the folder)
//! with all the photos inside; every image directly in the folder is one
//! person named after the file (without extension).
//!
//! CSV: a header with `name` and `photo` (a path relative to the CSV file),
//! optionally `groups` (separated by `;`) and `key` (rows with the same key
//! are one person; default: the name).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use facegate_protocol::ShardId;
use serde::Serialize;

use crate::engine::{Actor, Engine, EngineError, Enrollment, PhotoUpload};

const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "pgm", "ppm", "pnm"];

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Csv { path: PathBuf, message: String },
    #[error("invalid group {0:?}")]
    Group(String),
}

/// One person to import.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub photos: Vec<PathBuf>,
    pub groups: Vec<String>,
}

/// What became of one person.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub name: String,
    pub photos: usize,
    /// The new identity id, when enrolled.
    pub id: Option<String>,
    /// Why it was refused.
    pub refused: Option<String>,
    /// A short reason code (`duplicate`, `no-face`, …).
    pub reason: Option<String>,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub people: usize,
    pub enrolled: usize,
    pub refused: usize,
    pub reasons: BTreeMap<String, usize>,
    pub seconds: f64,
    pub photos_per_second: f64,
    pub outcomes: Vec<Outcome>,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| ImportError::Read { path: dir.to_path_buf(), source })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    Ok(entries)
}

/// People from a folder (see the module documentation).
pub fn from_folder(dir: &Path, groups: &[String]) -> Result<Vec<Candidate>, ImportError> {
    let mut people = Vec::new();
    for path in read_dir_sorted(dir)? {
        let name = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        if path.is_dir() {
            let photos: Vec<PathBuf> = read_dir_sorted(&path)?.into_iter().filter(|p| is_image(p)).collect();
            if !photos.is_empty() {
                let name = path.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or(name);
                people.push(Candidate { name, photos, groups: groups.to_vec() });
            }
        } else if is_image(&path) {
            people.push(Candidate { name, photos: vec![path], groups: groups.to_vec() });
        }
    }
    Ok(people)
}

/// People from a CSV file (see the module documentation).
pub fn from_csv(csv_path: &Path, groups: &[String]) -> Result<Vec<Candidate>, ImportError> {
    let bad = |message: String| ImportError::Csv { path: csv_path.to_path_buf(), message };
    let base = csv_path.parent().unwrap_or(Path::new("."));
    let mut reader = csv::Reader::from_path(csv_path).map_err(|e| bad(e.to_string()))?;
    let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let name_col = column("name").ok_or_else(|| bad("no `name` column".into()))?;
    let photo_col = column("photo").ok_or_else(|| bad("no `photo` column".into()))?;
    let groups_col = column("groups");
    let key_col = column("key");
    let mut order: Vec<String> = Vec::new();
    let mut people: BTreeMap<String, Candidate> = BTreeMap::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| bad(format!("row {}: {e}", line + 2)))?;
        let name = record.get(name_col).unwrap_or_default().trim().to_string();
        let photo = record.get(photo_col).unwrap_or_default().trim();
        if name.is_empty() || photo.is_empty() {
            return Err(bad(format!("row {}: name and photo are required", line + 2)));
        }
        let key =
            key_col.and_then(|c| record.get(c)).map(str::trim).filter(|k| !k.is_empty()).unwrap_or(&name).to_string();
        let mut row_groups: Vec<String> = groups_col
            .and_then(|c| record.get(c))
            .map(|g| g.split(';').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        row_groups.extend(groups.iter().cloned());
        let entry = people.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            Candidate { name: name.clone(), photos: Vec::new(), groups: Vec::new() }
        });
        entry.photos.push(base.join(photo));
        for g in row_groups {
            if !entry.groups.contains(&g) {
                entry.groups.push(g);
            }
        }
    }
    Ok(order.into_iter().filter_map(|k| people.remove(&k)).collect())
}

fn reason_code(e: &EngineError) -> String {
    match e {
        EngineError::Duplicate(_) => "duplicate".into(),
        EngineError::Photo { code, .. } => (*code).into(),
        EngineError::DifferentPeople { .. } => "different-people".into(),
        EngineError::PhotoTooLarge { .. } => "too-large".into(),
        EngineError::TooManyPhotos { .. } => "too-many-photos".into(),
        EngineError::InvalidField { field, .. } => format!("invalid-{field}"),
        EngineError::Store(_) | EngineError::Index(_) | EngineError::Internal(_) => "error".into(),
        EngineError::NoPhoto => "no-photo".into(),
        EngineError::Busy => "busy".into(),
    }
}

fn progress(out: &mut dyn Write, done: usize, total: usize, enrolled: usize, refused: usize, started: Instant) {
    const WIDTH: usize = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
    let _ = write!(
        out,
        "\r[{}{}] {done}/{total}  enrolled {enrolled}  refused {refused}  {rate:.1}/s ",
        "=".repeat(filled),
        " ".repeat(WIDTH - filled)
    );
    let _ = out.flush();
}

/// Enrolls every candidate in turn; never stops at a refusal.
pub async fn run(engine: &Engine, actor: &Actor, people: Vec<Candidate>, progress_to: &mut dyn Write) -> Summary {
    let started = Instant::now();
    let total = people.len();
    let mut outcomes = Vec::with_capacity(total);
    let (mut enrolled, mut refused, mut photo_count) = (0, 0, 0);
    for (i, person) in people.into_iter().enumerate() {
        progress(progress_to, i, total, enrolled, refused, started);
        let mut outcome =
            Outcome { name: person.name.clone(), photos: person.photos.len(), id: None, refused: None, reason: None };
        let result = async {
            let mut photos = Vec::new();
            for p in &person.photos {
                let bytes = std::fs::read(p).map_err(|e| EngineError::InvalidField {
                    field: "photo",
                    message: format!("cannot read {}: {e}", p.display()),
                })?;
                photos.push(PhotoUpload {
                    filename: p.file_name().map(|n| n.to_string_lossy().to_string()),
                    content_type: None,
                    bytes,
                });
            }
            let groups = person
                .groups
                .iter()
                .map(|g| {
                    ShardId::new(g.as_str())
                        .map_err(|e| EngineError::InvalidField { field: "groups", message: e.to_string() })
                })
                .collect::<Result<Vec<_>, _>>()?;
            photo_count += photos.len();
            engine
                .enroll(actor, Enrollment { name: person.name.clone(), groups, photos, ..Enrollment::default() })
                .await
        }
        .await;
        match result {
            Ok(identity) => {
                enrolled += 1;
                outcome.id = Some(identity.id);
            }
            Err(e) => {
                refused += 1;
                outcome.reason = Some(reason_code(&e));
                outcome.refused = Some(e.to_string());
            }
        }
        outcomes.push(outcome);
    }
    progress(progress_to, total, total, enrolled, refused, started);
    let _ = writeln!(progress_to);
    let mut reasons = BTreeMap::new();
    for o in &outcomes {
        if let Some(r) = &o.reason {
            *reasons.entry(r.clone()).or_insert(0) += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Summary {
        people: total,
        enrolled,
        refused,
        reasons,
        seconds,
        photos_per_second: photo_count as f64 / seconds.max(1e-9),
        outcomes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_people_and_loose_files_are_people() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ada")).unwrap();
        std::fs::write(dir.path().join("ada/1.jpg"), b"x").unwrap();
        std::fs::write(dir.path().join("ada/2.png"), b"x").unwrap();
        std::fs::write(dir.path().join("ada/notes.txt"), b"x").unwrap();
        std::fs::write(dir.path().join("bob.jpeg"), b"x").unwrap();
        let people = from_folder(dir.path(), &["lobby".into()]).unwrap();
        assert_eq!(people.len(), 2);
        assert_eq!(people[0].name, "ada");
        assert_eq!(people[0].photos.len(), 2);
        assert_eq!(people[1].name, "bob");
        assert_eq!(people[1].groups, vec!["lobby".to_string()]);
    }

    #[test]
    fn csv_rows_with_one_key_are_one_person() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("people.csv");
        std::fs::write(&csv, "name,photo,groups,key\nAda,a1.jpg,lobby;lab,1\nAda,a2.jpg,,1\nAda,x.jpg,,2\n").unwrap();
        let people = from_csv(&csv, &[]).unwrap();
        assert_eq!(people.len(), 2);
        assert_eq!(people[0].photos, vec![dir.path().join("a1.jpg"), dir.path().join("a2.jpg")]);
        assert_eq!(people[0].groups, vec!["lobby".to_string(), "lab".to_string()]);
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "who,photo\nx,y\n").unwrap();
        assert!(from_csv(&bad, &[]).unwrap_err().to_string().contains("name"));
    }
}
