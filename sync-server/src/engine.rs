//! Enrollment, de-duplication, search, verify, update and forget: the
//! server's logic, shared by the admin API and the bulk importer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use facegate_face::{FaceError, Template};
use facegate_protocol::{IdentityId, ShardId};
use futures_util::future::join_all;
use mongodb::bson::{Document, doc};

use crate::auth::Role;
use crate::crypto::{PhotoCipher, new_id};
use crate::faces::{FaceWorkers, FacesError, Purpose};
use crate::master::{MasterError, MasterIndex, template_of};
use crate::metrics::Metrics;
use crate::store::identities::{Forgotten, IdentityPatch, NewIdentity};
use crate::store::{AdminActionDoc, IdentityDoc, PhotoDoc, Store, StoreError, TemplateDoc, binary, now_millis};

/// Who is acting (from the token, or the command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub role: Role,
}

/// One uploaded photo.
#[derive(Debug, Clone, PartialEq)]
pub struct PhotoUpload {
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// A request to enroll a person.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Enrollment {
    pub name: String,
    /// Milliseconds since the epoch.
    pub valid_from: Option<i64>,
    pub valid_until: Option<i64>,
    pub groups: Vec<ShardId>,
    pub photos: Vec<PhotoUpload>,
    /// Identities the administrator declares to be different people: a
    /// de-duplication match against them does not refuse (and is audited).
    pub distinct_from: Vec<IdentityId>,
    /// Admitted by a door whose gallery is stale (security staff).
    pub offline_access: bool,
}

/// An enrolled face that matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Duplicate {
    pub existing: IdentityId,
    pub name: Option<String>,
    pub score: f32,
    /// The uploaded photo that matched.
    pub photo: String,
    pub threshold: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no photo was uploaded (field `photo`)")]
    NoPhoto,
    #[error("{count} photos uploaded; at most {max} are accepted")]
    TooManyPhotos { count: usize, max: usize },
    #[error("{photo}: {bytes} bytes; at most {max} are accepted per photo")]
    PhotoTooLarge { photo: String, bytes: usize, max: usize },
    #[error("{photo}: {message}")]
    Photo { photo: String, code: &'static str, message: String },
    #[error("{other} does not show the same person as {first} (similarity {score:.4} < {threshold:.4})")]
    DifferentPeople { first: String, other: String, score: f32, threshold: f32 },
    #[error("{} is already enrolled as identity {} (similarity {:.4} ≥ {:.4})", .0.photo, .0.existing, .0.score, .0.threshold)]
    Duplicate(Box<Duplicate>),
    #[error("{field}: {message}")]
    InvalidField { field: &'static str, message: String },
    #[error("the face pipeline is busy; try again shortly")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] MasterError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The thresholds the engine decides with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// A new face at least this similar to an enrolled one is a duplicate.
    pub dedup: f32,
    /// Photos of one enrollment must be at least this similar to the first.
    pub same_person: f32,
    /// 1:1 verify and the 1:N decision.
    pub verify: f32,
    pub margin: f32,
}

/// A search hit with the identity's name.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: IdentityId,
    pub name: Option<String>,
    pub score: f32,
}

/// The server's logic over its store, pipeline and index.
#[derive(Debug)]
pub struct Engine {
    pub store: Store,
    pub faces: FaceWorkers,
    pub index: Arc<MasterIndex>,
    pub metrics: Arc<Metrics>,
    pub thresholds: Thresholds,
    pub max_photos: usize,
    pub max_photo_bytes: usize,
    cipher: PhotoCipher,
    /// One identity-changing transaction at a time per replica (they all
    /// take the change-log counter, so they would only conflict and retry).
    tx_gate: tokio::sync::Mutex<()>,
}

/// An admin-action record.
pub fn action(actor: &Actor, what: &str, target: Option<&str>, outcome: &str, detail: Document) -> AdminActionDoc {
    AdminActionDoc {
        id: new_id("act-").unwrap_or_else(|_| format!("act-{}", now_millis())),
        at: now_millis(),
        actor: actor.name.clone(),
        role: actor.role.as_str().to_string(),
        action: what.to_string(),
        target: target.map(str::to_string),
        outcome: outcome.to_string(),
        detail,
    }
}

fn photo_label(index: usize, upload: &PhotoUpload) -> String {
    match &upload.filename {
        Some(name) if !name.is_empty() => format!("photo {} ({name})", index + 1),
        _ => format!("photo {}", index + 1),
    }
}

/// Checks a display name.
pub fn check_name(name: &str) -> Result<String, EngineError> {
    facegate_protocol::display_name(name)
        .map(str::to_owned)
        .map_err(|e| EngineError::InvalidField { field: "name", message: without_field(e) })
}

fn check_window(from: Option<i64>, until: Option<i64>) -> Result<(), EngineError> {
    facegate_protocol::validity_window(from, until)
        .map_err(|e| EngineError::InvalidField { field: "valid_until", message: without_field(e) })
}

/// The shared rule's message without the field name the API names itself.
fn without_field(e: facegate_protocol::RecordFieldError) -> String {
    let message = e.to_string();
    message.split_once(' ').map_or(message.clone(), |(_, rest)| rest.to_owned())
}

/// What an [`Engine`] is made of.
#[derive(Debug)]
pub struct EngineParts {
    pub store: Store,
    pub faces: FaceWorkers,
    pub index: Arc<MasterIndex>,
    pub metrics: Arc<Metrics>,
    pub cipher: PhotoCipher,
    pub thresholds: Thresholds,
    pub max_photos: usize,
    pub max_photo_bytes: usize,
}

impl Engine {
    pub fn new(parts: EngineParts) -> Self {
        Self {
            store: parts.store,
            faces: parts.faces,
            index: parts.index,
            metrics: parts.metrics,
            thresholds: parts.thresholds,
            max_photos: parts.max_photos,
            max_photo_bytes: parts.max_photo_bytes,
            cipher: parts.cipher,
            tx_gate: tokio::sync::Mutex::new(()),
        }
    }

    pub fn cipher(&self) -> &PhotoCipher {
        &self.cipher
    }

    fn refresh_index_metrics(&self) {
        let (templates, identities, _) = self.index.size();
        self.metrics.index_size(templates, identities, self.index.applied_seq());
    }

    /// Runs the pipeline on every photo; one template each, or the first
    /// photo's reason for refusal.
    async fn templates_from(&self, photos: &[PhotoUpload], purpose: Purpose) -> Result<Vec<Template>, EngineError> {
        if photos.is_empty() {
            return Err(EngineError::NoPhoto);
        }
        if photos.len() > self.max_photos {
            return Err(EngineError::TooManyPhotos { count: photos.len(), max: self.max_photos });
        }
        for (i, p) in photos.iter().enumerate() {
            if p.bytes.len() > self.max_photo_bytes {
                return Err(EngineError::PhotoTooLarge {
                    photo: photo_label(i, p),
                    bytes: p.bytes.len(),
                    max: self.max_photo_bytes,
                });
            }
        }
        let jobs = photos.iter().map(|p| self.faces.analyse(Arc::new(p.bytes.clone()), purpose));
        let results = join_all(jobs).await;
        let mut templates = Vec::with_capacity(photos.len());
        for (i, result) in results.into_iter().enumerate() {
            match result {
                Ok(analysis) => {
                    self.metrics.photo("ok");
                    templates.push(analysis.template);
                }
                Err(FacesError::Busy) => return Err(EngineError::Busy),
                Err(FacesError::Stopped) => return Err(EngineError::Internal("the face pipeline stopped".into())),
                Err(FacesError::Face(
                    e @ (FaceError::Inference(_) | FaceError::ModelMismatch { .. } | FaceError::Dimension { .. }),
                )) => {
                    return Err(EngineError::Internal(e.to_string()));
                }
                Err(FacesError::Face(e)) => {
                    self.metrics.photo(e.code());
                    return Err(EngineError::Photo {
                        photo: photo_label(i, &photos[i]),
                        code: e.code(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(templates)
    }

    /// The first enrolled identity (other than `except` and the declared
    /// distinct ones) that any template matches at the de-dup threshold.
    fn find_duplicate(
        &self,
        templates: &[Template],
        photos: &[PhotoUpload],
        except: Option<&IdentityId>,
        distinct: &[IdentityId],
        overridden: &mut Vec<(IdentityId, f32)>,
    ) -> Result<Option<Duplicate>, EngineError> {
        let mut best: Option<Duplicate> = None;
        for (i, t) in templates.iter().enumerate() {
            for m in self.index.search(t, 5 + distinct.len())? {
                if m.score < self.thresholds.dedup || Some(&m.label) == except {
                    continue;
                }
                if distinct.contains(&m.label) {
                    if !overridden.iter().any(|(id, _)| id == &m.label) {
                        overridden.push((m.label.clone(), m.score));
                    }
                    continue;
                }
                if best.as_ref().is_none_or(|b| m.score > b.score) {
                    best = Some(Duplicate {
                        existing: m.label.clone(),
                        name: None,
                        score: m.score,
                        photo: photo_label(i, &photos[i]),
                        threshold: self.thresholds.dedup,
                    });
                }
            }
        }
        Ok(best)
    }

    fn check_same_person(&self, templates: &[Template], photos: &[PhotoUpload]) -> Result<(), EngineError> {
        let Some(first) = templates.first() else {
            return Ok(());
        };
        for (i, t) in templates.iter().enumerate().skip(1) {
            let score = first.similarity(t).map_err(|e| EngineError::Internal(e.to_string()))?;
            if score < self.thresholds.same_person {
                return Err(EngineError::DifferentPeople {
                    first: photo_label(0, &photos[0]),
                    other: photo_label(i, &photos[i]),
                    score,
                    threshold: self.thresholds.same_person,
                });
            }
        }
        Ok(())
    }

    async fn name_duplicate(&self, mut dup: Duplicate) -> Duplicate {
        if let Ok(Some(identity)) = self.store.identity(dup.existing.as_str()).await {
            dup.name = Some(identity.name);
        }
        dup
    }

    async fn refuse_duplicate(&self, actor: &Actor, what: &str, dup: Duplicate) -> EngineError {
        let dup = self.name_duplicate(dup).await;
        self.metrics.duplicates_refused.inc();
        self.metrics.enrollment("duplicate");
        log::info!(existing = dup.existing.as_str(), score = dup.score, actor = actor.name.as_str(); "duplicate face refused");
        let detail = doc! { "existing": dup.existing.as_str(), "score": f64::from(dup.score), "photo": &dup.photo };
        let record = action(actor, what, Some(dup.existing.as_str()), "refused: duplicate face", detail);
        if let Err(e) = self.store.record_action(&record).await {
            log::warn!(error:% = e; "cannot record a refused enrollment in the admin trail");
        }
        EngineError::Duplicate(Box::new(dup))
    }

    fn seal_photos(
        &self,
        identity: &str,
        photos: &[PhotoUpload],
        templates: &[Template],
    ) -> Result<(Vec<PhotoDoc>, Vec<TemplateDoc>), EngineError> {
        let now = now_millis();
        let mut photo_docs = Vec::with_capacity(photos.len());
        let mut template_docs = Vec::with_capacity(photos.len());
        for (p, t) in photos.iter().zip(templates) {
            let photo_id = new_id("ph-").map_err(|e| EngineError::Internal(e.to_string()))?;
            let sealed = self
                .cipher
                .seal(&p.bytes, &format!("{photo_id}/{identity}"))
                .map_err(|e| EngineError::Internal(e.to_string()))?;
            template_docs.push(TemplateDoc {
                id: new_id("tp-").map_err(|e| EngineError::Internal(e.to_string()))?,
                identity: identity.to_string(),
                model_id: t.model_id.clone(),
                vector: binary(t.vector_bytes()),
                photo: photo_id.clone(),
                created_at: now,
            });
            photo_docs.push(PhotoDoc {
                id: photo_id,
                identity: identity.to_string(),
                nonce: binary(sealed.nonce.to_vec()),
                ciphertext: binary(sealed.ciphertext),
                bytes: p.bytes.len() as i64,
                filename: p.filename.clone(),
                content_type: p.content_type.clone(),
                created_at: now,
            });
        }
        Ok((photo_docs, template_docs))
    }

    /// Catches the index up to just before change `seq`, then re-runs the
    /// de-duplication (inside the writing transaction: every earlier write,
    /// from any replica, has committed by now).
    async fn recheck(
        &self,
        seq: i64,
        templates: &[Template],
        photos: &[PhotoUpload],
        except: Option<&IdentityId>,
        distinct: &[IdentityId],
        found: &Mutex<Option<Duplicate>>,
    ) -> Result<(), StoreError> {
        if self.index.applied_seq() < seq - 1 {
            self.index.catch_up(&self.store).await.map_err(|e| StoreError::Conflict(e.to_string()))?;
        }
        let mut ignored = Vec::new();
        match self.find_duplicate(templates, photos, except, distinct, &mut ignored) {
            Ok(None) => Ok(()),
            Ok(Some(dup)) => {
                if let Ok(mut slot) = found.lock() {
                    *slot = Some(dup);
                }
                Err(StoreError::Conflict("duplicate face".into()))
            }
            Err(e) => Err(StoreError::Conflict(e.to_string())),
        }
    }

    /// Enrolls a person: one usable face per photo, all the same person,
    /// nobody already enrolled (unless declared distinct), then identity,
    /// templates, sealed photos and delta-log entries in one transaction.
    pub async fn enroll(&self, actor: &Actor, request: Enrollment) -> Result<IdentityDoc, EngineError> {
        let result = self.enroll_inner(actor, request).await;
        match &result {
            Ok(_) => self.metrics.enrollment("enrolled"),
            Err(EngineError::Duplicate(_)) => {}
            Err(EngineError::Photo { .. } | EngineError::DifferentPeople { .. } | EngineError::NoPhoto) => {
                self.metrics.enrollment("rejected-photo")
            }
            Err(EngineError::Store(_) | EngineError::Index(_) | EngineError::Internal(_)) => {
                self.metrics.enrollment("error")
            }
            Err(_) => self.metrics.enrollment("rejected"),
        }
        result
    }

    async fn enroll_inner(&self, actor: &Actor, request: Enrollment) -> Result<IdentityDoc, EngineError> {
        let name = check_name(&request.name)?;
        check_window(request.valid_from, request.valid_until)?;
        let templates = self.templates_from(&request.photos, Purpose::Enroll).await?;
        self.check_same_person(&templates, &request.photos)?;
        let mut overridden = Vec::new();
        if let Some(dup) =
            self.find_duplicate(&templates, &request.photos, None, &request.distinct_from, &mut overridden)?
        {
            return Err(self.refuse_duplicate(actor, "identity.create", dup).await);
        }
        let id = new_id("id-").map_err(|e| EngineError::Internal(e.to_string()))?;
        let identity_id = IdentityId::new(id.clone()).map_err(|e| EngineError::Internal(e.to_string()))?;
        let now = now_millis();
        let mut groups: Vec<String> = request.groups.iter().map(|g| g.to_string()).collect();
        groups.sort();
        groups.dedup();
        let identity = IdentityDoc {
            id: id.clone(),
            name,
            valid_from: request.valid_from,
            valid_until: request.valid_until,
            groups,
            version: 1,
            created_at: now,
            updated_at: now,
            created_by: actor.name.clone(),
            offline_access: request.offline_access,
        };
        let (photos, template_docs) = self.seal_photos(&id, &request.photos, &templates)?;
        let overrides: Vec<Document> =
            overridden.iter().map(|(id, s)| doc! { "identity": id.as_str(), "score": f64::from(*s) }).collect();
        let mut detail = doc! { "photos": photos.len() as i64, "groups": identity.groups.clone() };
        if !overrides.is_empty() {
            detail.insert("declared_distinct_from", overrides);
        }
        if identity.offline_access {
            detail.insert("offline_access", true);
        }
        let new = NewIdentity {
            identity: identity.clone(),
            templates: template_docs,
            photos,
            action: action(actor, "identity.create", Some(&id), "ok", detail),
        };
        let found = Mutex::new(None);
        let distinct = request.distinct_from.clone();
        let _gate = self.tx_gate.lock().await;
        let precheck = |seq: i64| {
            let fut = self.recheck(seq, &templates, &request.photos, None, &distinct, &found);
            Box::pin(fut) as std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>>
        };
        match self.store.create_identity(&new, &precheck).await {
            Ok(_) => {}
            Err(e) => {
                let dup = found.lock().ok().and_then(|mut d| d.take());
                return Err(match dup {
                    Some(dup) => self.refuse_duplicate(actor, "identity.create", dup).await,
                    None => e.into(),
                });
            }
        }
        self.index.apply(&identity_id, &templates).await?;
        self.refresh_index_metrics();
        log::info!(identity = id.as_str(), photos = templates.len(), actor = actor.name.as_str(); "identity enrolled");
        Ok(identity)
    }

    /// Adds photos to an existing identity (the administrator's explicit
    /// link of a face to that person). Matches against the identity itself
    /// are expected; against anyone else they refuse as in enrollment.
    pub async fn add_photos(
        &self,
        actor: &Actor,
        identity: &IdentityId,
        photos: Vec<PhotoUpload>,
        distinct_from: &[IdentityId],
    ) -> Result<IdentityDoc, EngineError> {
        if self.store.identity(identity.as_str()).await?.is_none() {
            return Err(StoreError::NotFound { what: "identity", id: identity.to_string() }.into());
        }
        let templates = self.templates_from(&photos, Purpose::Enroll).await?;
        self.check_same_person(&templates, &photos)?;
        let mut overridden = Vec::new();
        if let Some(dup) = self.find_duplicate(&templates, &photos, Some(identity), distinct_from, &mut overridden)? {
            return Err(self.refuse_duplicate(actor, "identity.add-photos", dup).await);
        }
        let (photo_docs, template_docs) = self.seal_photos(identity.as_str(), &photos, &templates)?;
        let record = action(
            actor,
            "identity.add-photos",
            Some(identity.as_str()),
            "ok",
            doc! { "photos": photo_docs.len() as i64 },
        );
        let found = Mutex::new(None);
        let _gate = self.tx_gate.lock().await;
        let precheck = |seq: i64| {
            let fut = self.recheck(seq, &templates, &photos, Some(identity), distinct_from, &found);
            Box::pin(fut) as std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>>
        };
        let updated =
            match self.store.add_photos(identity.as_str(), &template_docs, &photo_docs, &record, &precheck).await {
                Ok(updated) => updated,
                Err(e) => {
                    let dup = found.lock().ok().and_then(|mut d| d.take());
                    return Err(match dup {
                        Some(dup) => self.refuse_duplicate(actor, "identity.add-photos", dup).await,
                        None => e.into(),
                    });
                }
            };
        self.reload_into_index(identity).await?;
        Ok(updated)
    }

    async fn reload_into_index(&self, identity: &IdentityId) -> Result<(), EngineError> {
        let docs = self.store.templates_of(identity.as_str(), self.index.model_id()).await?;
        let templates = docs.iter().map(|d| template_of(d, self.index.dim())).collect::<Result<Vec<_>, _>>()?;
        self.index.apply(identity, &templates).await?;
        self.refresh_index_metrics();
        Ok(())
    }

    /// Changes name, validity window or groups.
    pub async fn update(
        &self,
        actor: &Actor,
        identity: &IdentityId,
        patch: IdentityPatch,
    ) -> Result<IdentityDoc, EngineError> {
        let mut patch = patch;
        if let Some(name) = &patch.name {
            patch.name = Some(check_name(name)?);
        }
        if let Some(groups) = &mut patch.groups {
            groups.sort();
            groups.dedup();
        }
        let current = self
            .store
            .identity(identity.as_str())
            .await?
            .ok_or_else(|| StoreError::NotFound { what: "identity", id: identity.to_string() })?;
        check_window(patch.valid_from.unwrap_or(current.valid_from), patch.valid_until.unwrap_or(current.valid_until))?;
        let mut detail = Document::new();
        if let Some(n) = &patch.name {
            detail.insert("name_changed", n != &current.name);
        }
        if let Some(g) = &patch.groups {
            detail.insert("groups", g.clone());
        }
        if let Some(offline_access) = patch.offline_access {
            // Who may pass a door cut off from the centre: always in the trail.
            detail.insert("offline_access", offline_access);
        }
        let record = action(actor, "identity.update", Some(identity.as_str()), "ok", detail);
        let _gate = self.tx_gate.lock().await;
        Ok(self.store.update_identity(identity.as_str(), &patch, &record).await?)
    }

    /// Adds or removes one identity from a group.
    pub async fn set_membership(
        &self,
        actor: &Actor,
        group: &ShardId,
        identity: &IdentityId,
        member: bool,
    ) -> Result<IdentityDoc, EngineError> {
        if self.store.group(group.as_str()).await?.is_none() {
            return Err(StoreError::NotFound { what: "group", id: group.to_string() }.into());
        }
        let what = if member { "group.add-member" } else { "group.remove-member" };
        let record = action(actor, what, Some(identity.as_str()), "ok", doc! { "group": group.as_str() });
        let _gate = self.tx_gate.lock().await;
        Ok(self.store.set_membership(group.as_str(), identity.as_str(), member, &record).await?)
    }

    /// Forgets a person everywhere.
    pub async fn forget(&self, actor: &Actor, identity: &IdentityId) -> Result<Forgotten, EngineError> {
        let record = action(actor, "identity.delete", Some(identity.as_str()), "ok", doc! {});
        let forgotten = {
            let _gate = self.tx_gate.lock().await;
            self.store.forget_identity(identity.as_str(), &record).await?
        };
        self.index.apply(identity, &[]).await?;
        self.refresh_index_metrics();
        log::info!(identity = identity.as_str(), shards = forgotten.shards.len(), actor = actor.name.as_str(); "identity forgotten");
        Ok(forgotten)
    }

    /// Deletes one photo (and its template).
    pub async fn delete_photo(&self, actor: &Actor, identity: &IdentityId, photo: &str) -> Result<(), EngineError> {
        let record = action(actor, "identity.delete-photo", Some(identity.as_str()), "ok", doc! { "photo": photo });
        {
            let _gate = self.tx_gate.lock().await;
            self.store.delete_photo(identity.as_str(), photo, &record).await?;
        }
        self.reload_into_index(identity).await
    }

    /// 1:N: the `k` most similar enrolled identities, best first.
    pub async fn search(&self, photo: PhotoUpload, k: usize) -> Result<Vec<Hit>, EngineError> {
        let templates = self.templates_from(std::slice::from_ref(&photo), Purpose::Probe).await?;
        let Some(probe) = templates.first() else {
            return Err(EngineError::NoPhoto);
        };
        let matches = self.index.search(probe, k.clamp(1, 100))?;
        let ids: Vec<&str> = matches.iter().map(|m| m.label.as_str()).collect();
        let names: HashMap<String, String> = self.store.names_of(&ids).await?;
        Ok(matches
            .into_iter()
            .map(|m| Hit { name: names.get(m.label.as_str()).cloned(), id: m.label, score: m.score })
            .collect())
    }

    /// 1:1: the best similarity of the photo to the identity's templates.
    pub async fn verify(&self, identity: &IdentityId, photo: PhotoUpload) -> Result<f32, EngineError> {
        let docs = self.store.templates_of(identity.as_str(), self.index.model_id()).await?;
        if docs.is_empty() {
            return Err(StoreError::NotFound { what: "identity", id: identity.to_string() }.into());
        }
        let templates = self.templates_from(std::slice::from_ref(&photo), Purpose::Probe).await?;
        let Some(probe) = templates.first() else {
            return Err(EngineError::NoPhoto);
        };
        let mut best = f32::NEG_INFINITY;
        for d in &docs {
            let t = template_of(d, self.index.dim())?;
            best = best.max(probe.similarity(&t).map_err(|e| EngineError::Internal(e.to_string()))?);
        }
        Ok(best)
    }

    /// Decrypts a stored photo.
    pub async fn photo_bytes(&self, identity: &IdentityId, photo: &str) -> Result<(PhotoDoc, Vec<u8>), EngineError> {
        let doc = self
            .store
            .photo(identity.as_str(), photo)
            .await?
            .ok_or_else(|| StoreError::NotFound { what: "photo", id: photo.to_string() })?;
        let nonce: [u8; 12] = doc
            .nonce
            .bytes
            .as_slice()
            .try_into()
            .map_err(|_| EngineError::Internal("stored nonce has the wrong length".into()))?;
        let sealed = crate::crypto::Sealed { nonce, ciphertext: doc.ciphertext.bytes.clone() };
        let plain = self
            .cipher
            .open(&sealed, &format!("{photo}/{identity}"))
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        Ok((doc, plain))
    }
}
