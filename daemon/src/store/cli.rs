//! `facegate-daemon gallery …`: standalone enrollment and inspection of a
//! kiosk's gallery database. Output is JSON on stdout; errors go to stderr
//! with the exit statuses of [`crate::exit`].

use std::path::PathBuf;
use std::time::Instant;

use facegate_face::{FaceError, FacePipeline, ModelError, ModelSet, PipelineOptions};
use facegate_protocol::{IdentityId, IdentityRecord, InvalidId, MAX_TEMPLATES_PER_IDENTITY, TemplateRecord};
use serde::Serialize;
use serde_json::json;

use super::{DeviceKey, GalleryModel, GalleryStore, LiveShard, StoreConfig, StoreError, local_shard};
use crate::exit;

/// `gallery` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum GalleryCommand {
    /// Enroll a person from photos (exactly one usable face each) into the
    /// standalone shard; refused if the face matches another identity.
    Add {
        #[command(flatten)]
        db: DbArgs,
        /// Identity id (A-Z a-z 0-9 . _ -, at most 64 characters).
        #[arg(long)]
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Access allowed from this Unix time (seconds).
        #[arg(long)]
        valid_from: Option<i64>,
        /// Access allowed until this Unix time (seconds, exclusive).
        #[arg(long)]
        valid_until: Option<i64>,
        /// Enrollment photos.
        #[arg(required = true)]
        photos: Vec<PathBuf>,
    },
    /// Print every identity as a JSON array: id, name, validity, templates.
    List {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Remove an identity from the standalone shard.
    Remove {
        #[command(flatten)]
        db: DbArgs,
        id: String,
    },
    /// Print counts, per-shard seq, outbox depth, size and open time as JSON.
    Stats {
        #[command(flatten)]
        db: DbArgs,
    },
}

/// Where the database, its key and the models are.
#[derive(Debug, clap::Args)]
pub struct DbArgs {
    /// The gallery database directory.
    #[arg(long)]
    db: PathBuf,
    /// The device key file (default: DB/device.key, created with mode 0400 by `add` when absent).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Directory of model manifests and ONNX files.
    #[arg(long, env = "FACEGATE_MODELS")]
    models: Option<PathBuf>,
}

/// Why a `gallery` command failed.
#[derive(Debug, thiserror::Error)]
pub enum GalleryCliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    BadId(#[from] InvalidId),
    #[error("cannot read {path}")]
    PhotoRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Photo {
        path: PathBuf,
        #[source]
        source: FaceError,
    },
    #[error("loading models from {dir}")]
    Models {
        dir: PathBuf,
        #[source]
        source: ModelError,
    },
    #[error("the embedder manifest has no dedup threshold")]
    NoDedupThreshold,
    #[error(
        "{photo}: the face matches identity {existing} ({name}) with similarity {score:.4}, at or above the \
         dedup threshold {threshold:.4}; not enrolled"
    )]
    Duplicate { photo: PathBuf, existing: IdentityId, name: String, score: f32, threshold: f32 },
    #[error(
        "{first} and {other} are not the same person (similarity {score:.4} below {threshold:.4}); enroll each \
         person under their own id"
    )]
    DifferentPeople { first: PathBuf, other: PathBuf, score: f32, threshold: f32 },
    #[error("{0}")]
    Field(#[from] facegate_protocol::RecordFieldError),
    #[error("identity {id} would have more than {max} templates")]
    TooManyTemplates { id: IdentityId, max: usize },
    #[error("identity {0} is not in the gallery")]
    UnknownIdentity(IdentityId),
    #[error("identity {id} comes from shard(s) {shards} of the server; remove it there")]
    ServerManaged { id: IdentityId, shards: String },
    #[error("the database in {db} exists but its key file {key} does not; restore that key (a new one cannot read it)")]
    KeyLost { db: PathBuf, key: PathBuf },
    #[error("cannot create {dir}")]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl GalleryCliError {
    /// The process exit status for this error.
    pub fn exit_status(&self) -> u8 {
        match self {
            Self::Store(e) => store_status(e),
            Self::BadId(_) | Self::Field(_) => exit::USAGE,
            Self::PhotoRead { .. } | Self::KeyLost { .. } => exit::NO_INPUT,
            Self::Photo { source: FaceError::Inference(_), .. } => exit::SOFTWARE,
            Self::Photo { .. }
            | Self::Duplicate { .. }
            | Self::DifferentPeople { .. }
            | Self::TooManyTemplates { .. }
            | Self::UnknownIdentity(_)
            | Self::ServerManaged { .. } => exit::DATA,
            Self::Models { .. } | Self::NoDedupThreshold => exit::UNAVAILABLE,
            Self::CreateDir { .. } => exit::IO_ERROR,
            Self::Json(_) => exit::SOFTWARE,
        }
    }
}

fn store_status(error: &StoreError) -> u8 {
    match error {
        StoreError::KeyMissing { .. } | StoreError::KeyRead { .. } | StoreError::Missing { .. } => exit::NO_INPUT,
        StoreError::KeyPermissions { .. }
        | StoreError::KeyLength { .. }
        | StoreError::WrongKey { .. }
        | StoreError::Schema { .. }
        | StoreError::ModelMismatch { .. } => exit::CONFIG,
        StoreError::KeyExists { .. } | StoreError::KeyCreate { .. } => exit::IO_ERROR,
        StoreError::Locked { .. } | StoreError::Open { .. } => exit::UNAVAILABLE,
        StoreError::Corrupt { .. }
        | StoreError::InvalidDelta { .. }
        | StoreError::ReservedShard(_)
        | StoreError::InvalidIdentity { .. }
        | StoreError::InvalidTemplate { .. } => exit::DATA,
        StoreError::Write { .. } | StoreError::Read { .. } | StoreError::Marker { .. } => exit::IO_ERROR,
        StoreError::Random => exit::SOFTWARE,
    }
}

/// Runs one `gallery` subcommand, printing its JSON result.
pub fn run(command: GalleryCommand) -> Result<(), GalleryCliError> {
    match command {
        GalleryCommand::Add { db, id, name, valid_from, valid_until, photos } => {
            let id = IdentityId::new(id)?;
            let report = add(&db, id, name, valid_from, valid_until, &photos)?;
            print(&report)
        }
        GalleryCommand::List { db } => {
            let shard = open_existing(&db)?;
            let now = unix_now();
            let list: Vec<_> = shard
                .store()
                .entries()?
                .into_iter()
                .map(|e| {
                    json!({
                        "id": e.record.id,
                        "name": e.record.name,
                        "valid_from": e.record.valid_from,
                        "valid_until": e.record.valid_until,
                        "valid_now": e.record.valid_at(now),
                        "version": e.record.version,
                        "shards": e.shards,
                        "templates": e.templates.len(),
                    })
                })
                .collect();
            print(&list)
        }
        GalleryCommand::Remove { db, id } => {
            let id = IdentityId::new(id)?;
            let shard = open_existing(&db)?;
            let entry = shard.entry(&id)?.ok_or_else(|| GalleryCliError::UnknownIdentity(id.clone()))?;
            let local = local_shard();
            if !entry.shards.contains(&local) {
                let shards = entry.shards.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                return Err(GalleryCliError::ServerManaged { id, shards });
            }
            let report = shard.remove_local(&id)?;
            let remaining: Vec<_> = entry.shards.iter().filter(|s| **s != local).collect();
            print(&json!({ "id": id, "removed": true, "seq": report.seq, "still_in_shards": remaining }))
        }
        GalleryCommand::Stats { db } => {
            let shard = open_existing(&db)?;
            let stats = shard.stats()?;
            let open = shard.open_report();
            print(&json!({
                "model": shard.store().model().id,
                "identities": stats.identities,
                "templates": stats.templates,
                "shards": stats.shards,
                "outbox_depth": stats.outbox_depth,
                "db_bytes": stats.db_bytes,
                "open_ms": open.elapsed.as_secs_f64() * 1e3,
                "store_open_ms": open.store_open.as_secs_f64() * 1e3,
                "rss_bytes": resident_bytes(),
            }))
        }
    }
}

fn print(value: &impl Serialize) -> Result<(), GalleryCliError> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

fn models_dir(args: &DbArgs) -> PathBuf {
    args.models.clone().unwrap_or_else(|| facegate_face::models::default_models_dir(None))
}

fn key_path(args: &DbArgs) -> PathBuf {
    args.key.clone().unwrap_or_else(|| args.db.join("device.key"))
}

/// The embedder named by the manifests, without loading any model.
fn gallery_model(args: &DbArgs) -> Result<GalleryModel, GalleryCliError> {
    let dir = models_dir(args);
    let set = ModelSet::discover(&dir, None, None).map_err(|source| GalleryCliError::Models { dir, source })?;
    let dim = set.embedder.output.as_ref().map_or(0, |o| o.dim);
    Ok(GalleryModel { id: set.embedder.id, dim })
}

fn open_existing(args: &DbArgs) -> Result<LiveShard, GalleryCliError> {
    let model = gallery_model(args)?;
    let config = StoreConfig { create: false, ..StoreConfig::new(&args.db, model) };
    if !args.db.join("db").is_file() {
        return Err(StoreError::Missing { dir: args.db.clone() }.into());
    }
    let key = DeviceKey::load(&key_path(args))?;
    Ok(LiveShard::open(&config, key)?)
}

#[derive(Debug, Serialize)]
struct AddReport {
    id: IdentityId,
    name: String,
    templates: usize,
    added_templates: usize,
    shard: &'static str,
    seq: u64,
    created: bool,
    key_created: bool,
    enroll_ms: f64,
}

fn add(
    args: &DbArgs,
    id: IdentityId,
    name: String,
    valid_from: Option<i64>,
    valid_until: Option<i64>,
    photos: &[PathBuf],
) -> Result<AddReport, GalleryCliError> {
    let started = Instant::now();
    // The server's rules for names and windows, before any work.
    let name = facegate_protocol::display_name(&name)?.to_owned();
    facegate_protocol::validity_window(valid_from, valid_until)?;
    let images = photos
        .iter()
        .map(|path| {
            let bytes =
                std::fs::read(path).map_err(|source| GalleryCliError::PhotoRead { path: path.clone(), source })?;
            facegate_face::decode_image(&bytes)
                .map_err(|e| GalleryCliError::Photo { path: path.clone(), source: e.into() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dir = models_dir(args);
    let pipeline = FacePipeline::load(&dir, &PipelineOptions::default())
        .map_err(|source| GalleryCliError::Models { dir, source })?;
    let threshold = pipeline.embedder_manifest().thresholds.dedup.ok_or(GalleryCliError::NoDedupThreshold)?;
    let mut templates = Vec::with_capacity(images.len());
    for (path, image) in photos.iter().zip(&images) {
        let face = pipeline.enroll(image).map_err(|source| GalleryCliError::Photo { path: path.clone(), source })?;
        templates.push((path, face.template));
    }
    // Every photo the same person as the first, as the server checks.
    let same_person = facegate_face::thresholds::same_person_threshold(&pipeline.embedder_manifest().thresholds)
        .ok_or(GalleryCliError::NoDedupThreshold)?;
    if let Some(((first, reference), rest)) = templates.split_first() {
        for (other, template) in rest {
            let score = reference
                .similarity(template)
                .map_err(|source| GalleryCliError::Photo { path: (*other).clone(), source })?;
            if score < same_person {
                return Err(GalleryCliError::DifferentPeople {
                    first: (*first).clone(),
                    other: (*other).clone(),
                    score,
                    threshold: same_person,
                });
            }
        }
    }
    let model = GalleryModel { id: pipeline.model_id().to_owned(), dim: pipeline.embedder().dim() };
    let (shard, key_created) = open_or_create(args, model)?;
    {
        let view = shard.read();
        for (photo, template) in &templates {
            let matches = view
                .gallery
                .search(template, 2)
                .map_err(|source| GalleryCliError::Photo { path: (*photo).clone(), source })?;
            if let Some(m) = matches.into_iter().find(|m| m.label != id && m.score >= threshold) {
                let name = view.identities.get(&m.label).map(|r| r.name.clone()).unwrap_or_default();
                return Err(GalleryCliError::Duplicate {
                    photo: (*photo).clone(),
                    existing: m.label,
                    name,
                    score: m.score,
                    threshold,
                });
            }
        }
    }
    let added = templates.len();
    let mut records: Vec<TemplateRecord> =
        templates.into_iter().map(|(_, t)| TemplateRecord { vector: t.vector_bytes(), model_id: t.model_id }).collect();
    let existing = shard.entry(&id)?;
    let created = existing.is_none();
    let record = match existing {
        Some(mut entry) => {
            entry.templates.append(&mut records);
            records = entry.templates;
            IdentityRecord {
                name,
                valid_from: valid_from.or(entry.record.valid_from),
                valid_until: valid_until.or(entry.record.valid_until),
                version: entry.record.version + 1,
                ..entry.record
            }
        }
        None => IdentityRecord { id: id.clone(), name, valid_from, valid_until, version: 1, offline_access: false },
    };
    // One bound given over an existing identity's other one.
    facegate_protocol::validity_window(record.valid_from, record.valid_until)?;
    if records.len() > MAX_TEMPLATES_PER_IDENTITY {
        return Err(GalleryCliError::TooManyTemplates { id, max: MAX_TEMPLATES_PER_IDENTITY });
    }
    let name = record.name.clone();
    let report = shard.upsert_local(record, records)?;
    let templates = shard.entry(&id)?.map_or(0, |e| e.templates.len());
    Ok(AddReport {
        id,
        name,
        templates,
        added_templates: added,
        shard: super::LOCAL_SHARD,
        seq: report.seq,
        created,
        key_created,
        enroll_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// Opens the database, creating it (directory mode 0700) and its key (mode
/// 0400) on first use. A database whose key file is gone is not given a new key.
fn open_or_create(args: &DbArgs, model: GalleryModel) -> Result<(LiveShard, bool), GalleryCliError> {
    let dir = &args.db;
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| GalleryCliError::CreateDir { dir: dir.clone(), source })?;
    }
    let key_path = key_path(args);
    if !key_path.exists() && dir.join("db").is_file() {
        return Err(GalleryCliError::KeyLost { db: dir.clone(), key: key_path });
    }
    let (key, key_created) = DeviceKey::load_or_generate(&key_path)?;
    let shard = LiveShard::open(&StoreConfig::new(dir, model), key)?;
    Ok((shard, key_created))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// This process's resident memory (VmRSS), where /proc tells it.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
