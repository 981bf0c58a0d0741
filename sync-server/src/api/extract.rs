//! Extractors whose failures are problem details, and the multipart reader.

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Multipart, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};
use crate::engine::PhotoUpload;

/// `Json<T>` with problem-details rejections.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.limits.json_bytes;
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::MalformedJson(e.body_text())),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::InvalidJson(e.body_text())),
            Err(JsonRejection::MissingJsonContentType(_)) => {
                Err(ApiError::UnsupportedMediaType { expected: "application/json" })
            }
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::BodyTooLarge { limit }),
            Err(e) => Err(ApiError::MalformedJson(e.body_text())),
        }
    }
}

/// `Query<T>` with problem-details rejections.
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::InvalidParameter { field: "query", message: e.body_text() })
            }
            Err(e) => Err(ApiError::InvalidParameter { field: "query", message: e.body_text() }),
        }
    }
}

/// A multipart form: files under `photo`, text fields by name.
#[derive(Debug, Default)]
pub(crate) struct Form {
    pub(crate) photos: Vec<PhotoUpload>,
    pub(crate) fields: Vec<(String, String)>,
}

impl Form {
    /// Every value of `name` (repeated fields and comma-separated lists).
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_string()).collect::<Vec<_>>())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The single value of `name`.
    pub(crate) fn one(&self, name: &'static str) -> Result<Option<String>, ApiError> {
        let mut values = self.fields.iter().filter(|(k, _)| k == name);
        let first = values.next().map(|(_, v)| v.clone());
        if values.next().is_some() {
            return Err(ApiError::InvalidParameter { field: name, message: "given more than once".into() });
        }
        Ok(first)
    }
}

fn multipart_error(e: MultipartError, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::BodyTooLarge { limit }
    } else {
        ApiError::BadMultipart(e.body_text())
    }
}

async fn read_field(mut field: Field<'_>, max: usize, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
        if bytes.len() + chunk.len() > max {
            return Err(ApiError::BodyTooLarge { limit: max });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Reads a multipart body, accepting only `allowed` text fields and, when
/// `photos` is non-zero, up to that many files in `photo`.
pub(crate) async fn read_form(
    multipart: Result<Multipart, MultipartRejection>,
    state: &AppState,
    allowed: &[&str],
    max_photos: usize,
) -> Result<Form, ApiError> {
    let mut multipart =
        multipart.map_err(|_| ApiError::UnsupportedMediaType { expected: "multipart/form-data with a boundary" })?;
    let limit = state.limits.upload_bytes;
    let per_photo = state.engine.max_photo_bytes;
    let mut form = Form::default();
    while let Some(field) = multipart.next_field().await.map_err(|e| multipart_error(e, limit))? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "photo" && max_photos > 0 {
            if form.photos.len() >= max_photos {
                return Err(ApiError::Engine(crate::engine::EngineError::TooManyPhotos {
                    count: form.photos.len() + 1,
                    max: max_photos,
                }));
            }
            let filename = field.file_name().map(str::to_string);
            let content_type = field.content_type().map(str::to_string);
            let bytes = read_field(field, per_photo, limit).await?;
            form.photos.push(PhotoUpload { filename, content_type, bytes });
        } else if allowed.contains(&name.as_str()) {
            let bytes = read_field(field, 64 * 1024, limit).await?;
            let text = String::from_utf8(bytes)
                .map_err(|_| ApiError::BadMultipart(format!("field {name:?} is not UTF-8 text")))?;
            form.fields.push((name, text));
        } else {
            return Err(ApiError::UnknownField(name));
        }
    }
    Ok(form)
}

/// The client's address when the server knows it (not in in-process tests).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) Option<std::net::SocketAddr>);

impl FromRequestParts<AppState> for Peer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<crate::server::ClientAddr>>()
                .map(|axum::extract::ConnectInfo(crate::server::ClientAddr(a))| *a),
        ))
    }
}
