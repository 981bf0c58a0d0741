//! Problem details (RFC 9457) for every error the API returns, with the
//! HTTP status decided in one exhaustive match.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::AuthError;
use crate::engine::EngineError;
use crate::master::MasterError;
use crate::store::StoreError;
use crate::store::audit::AuditError;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the request body does not fit the schema: {0}")]
    InvalidJson(String),
    #[error("the request body must be {expected}")]
    UnsupportedMediaType { expected: &'static str },
    #[error("the request body is larger than the {limit}-byte limit")]
    BodyTooLarge { limit: usize },
    #[error("the multipart body is malformed: {0}")]
    BadMultipart(String),
    #[error("unknown form field {0:?}")]
    UnknownField(String),
    #[error("{field}: {message}")]
    InvalidParameter { field: &'static str, message: String },
    #[error("no route {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Engine(EngineError::Store(e))
    }
}

impl From<MasterError> for ApiError {
    fn from(e: MasterError) -> Self {
        Self::Engine(EngineError::Index(e))
    }
}

fn store_status(e: &StoreError) -> StatusCode {
    match e {
        StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
        StoreError::AlreadyExists { .. } | StoreError::Conflict(_) => StatusCode::CONFLICT,
        StoreError::Contention | StoreError::SequenceTaken { .. } | StoreError::ChangedConcurrently { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        StoreError::EmptyWindow { .. } | StoreError::SeqOutOfRange(_) => StatusCode::UNPROCESSABLE_ENTITY,
        StoreError::Database(_) | StoreError::Corrupt(_) | StoreError::SchemaTooNew { .. } | StoreError::Crypto(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl ApiError {
    /// The HTTP status of every error, in one place.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Auth(AuthError::Missing | AuthError::Malformed | AuthError::Expired | AuthError::Invalid) => {
                StatusCode::UNAUTHORIZED
            }
            Self::Auth(AuthError::BadCredentials) => StatusCode::UNAUTHORIZED,
            Self::Auth(AuthError::Forbidden { .. }) => StatusCode::FORBIDDEN,
            Self::Auth(AuthError::RateLimited { .. }) => StatusCode::TOO_MANY_REQUESTS,
            Self::Auth(AuthError::UnknownRole(_) | AuthError::WeakPassword) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Auth(AuthError::Hashing(_) | AuthError::Signing(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Engine(EngineError::NoPhoto) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Engine(EngineError::TooManyPhotos { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Engine(EngineError::PhotoTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Engine(EngineError::Photo { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Engine(EngineError::DifferentPeople { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Engine(EngineError::Duplicate(_)) => StatusCode::CONFLICT,
            Self::Engine(EngineError::InvalidField { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Engine(EngineError::Busy) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Engine(EngineError::Store(e)) => store_status(e),
            Self::Engine(EngineError::Index(MasterError::Store(e))) => store_status(e),
            Self::Engine(EngineError::Index(
                MasterError::Index(_) | MasterError::BadTemplate { .. } | MasterError::Poisoned,
            )) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Engine(EngineError::Internal(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Audit(AuditError::WrongDevice { .. } | AuditError::SeqRange(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Audit(AuditError::Store(e)) => store_status(e),
            Self::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Self::InvalidJson(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadMultipart(_) => StatusCode::BAD_REQUEST,
            Self::UnknownField(_) => StatusCode::BAD_REQUEST,
            Self::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
            Self::NoRoute { .. } => StatusCode::NOT_FOUND,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable, short problem type (the last part of the `type` URI).
    fn kind(&self) -> &'static str {
        match self {
            Self::Auth(AuthError::Forbidden { .. }) => "forbidden",
            Self::Auth(AuthError::RateLimited { .. }) => "rate-limited",
            Self::Auth(AuthError::BadCredentials) => "bad-credentials",
            Self::Auth(AuthError::Expired) => "token-expired",
            Self::Auth(_) => "unauthorized",
            Self::Engine(EngineError::Duplicate(_)) => "duplicate-face",
            Self::Engine(EngineError::Photo { .. }) => "unusable-photo",
            Self::Engine(EngineError::DifferentPeople { .. }) => "different-people",
            Self::Engine(EngineError::Busy) => "busy",
            Self::Engine(EngineError::Store(StoreError::NotFound { .. })) => "not-found",
            Self::BodyTooLarge { .. } | Self::Engine(EngineError::PhotoTooLarge { .. }) => "too-large",
            Self::MalformedJson(_) | Self::InvalidJson(_) | Self::UnknownField(_) | Self::BadMultipart(_) => {
                "bad-request"
            }
            _ => "error",
        }
    }

    fn extensions(&self) -> Value {
        match self {
            Self::Engine(EngineError::Duplicate(d)) => json!({
                "id": d.existing.as_str(),
                "name": d.name,
                "score": d.score,
                "threshold": d.threshold,
                "photo": d.photo,
                "hint": format!(
                    "to add this photo to {} use POST /v1/identities/{}/photos; if these are different people, \
                     resend with distinct_from={}",
                    d.existing, d.existing, d.existing
                ),
            }),
            Self::Engine(EngineError::Photo { photo, code, .. }) => json!({ "photo": photo, "reason": code }),
            Self::Engine(EngineError::DifferentPeople { first, other, score, threshold }) => {
                json!({ "photo": other, "first": first, "score": score, "threshold": threshold })
            }
            Self::Auth(AuthError::RateLimited { retry_after_secs }) => json!({ "retry_after": retry_after_secs }),
            Self::Engine(EngineError::InvalidField { field, .. }) | Self::InvalidParameter { field, .. } => {
                json!({ "field": field })
            }
            _ => json!({}),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Internal details stay in the log.
        let detail = if status.is_server_error() {
            log::error!(error:% = self, status = status.as_u16(); "request failed");
            match &self {
                Self::Engine(EngineError::Busy) => self.to_string(),
                Self::Engine(EngineError::Store(StoreError::Contention)) => "the database is busy; retry".to_string(),
                _ => "internal error; the server log has the details".to_string(),
            }
        } else {
            self.to_string()
        };
        let mut body = json!({
            "type": format!("https://facegate.invalid/problems/{}", self.kind()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
        });
        if let (Some(body), Value::Object(ext)) = (body.as_object_mut(), self.extensions()) {
            body.extend(ext);
        }
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Self::Auth(AuthError::RateLimited { retry_after_secs }) = &self
            && let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
