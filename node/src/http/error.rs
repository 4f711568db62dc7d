//! The API's error answers and the extractors that produce them.
//!
//! Every 4xx and 5xx carries `{"error": {"code", "message"}}`, including the
//! ones axum would otherwise answer in plain text (bad JSON, wrong content
//! type, oversized body, bad query string, unknown route or method).

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::disk::ratings::StoreError;
use crate::protocol::intake::InvalidInput;
use crate::runtime::access::TokenError;
use ride_types::api::{ErrorBody, ErrorCode, ErrorDetail};

#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Seconds after which a refused request may be tried again.
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// A 503 that tells the client when to come back.
    pub(crate) fn unavailable(
        code: ErrorCode,
        message: impl Into<String>,
        retry_after_s: u32,
    ) -> Self {
        Self {
            retry_after_s: Some(retry_after_s),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().into(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidField,
            e.to_string(),
        )
    }
}

/// `401` without a token, `403` with someone else's.
impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        let status = match e {
            TokenError::Missing => StatusCode::UNAUTHORIZED,
            TokenError::Invalid => StatusCode::FORBIDDEN,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "rating store failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StorageUnavailable,
            e.to_string(),
        )
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let (code, status) = match &rejection {
            JsonRejection::JsonSyntaxError(_) => {
                (ErrorCode::MalformedJson, StatusCode::BAD_REQUEST)
            }
            JsonRejection::JsonDataError(_) => {
                (ErrorCode::InvalidBody, StatusCode::UNPROCESSABLE_ENTITY)
            }
            JsonRejection::MissingJsonContentType(_) => (
                ErrorCode::UnsupportedMediaType,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (ErrorCode::PayloadTooLarge, StatusCode::PAYLOAD_TOO_LARGE)
            }
            _ => (ErrorCode::UnreadableBody, rejection.status()),
        };
        Self::new(status, code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidQuery,
            rejection.body_text(),
        )
    }
}

/// `Json`, answering with [`ApiError`] on rejection.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(super) struct ApiJson<T>(pub T);

/// `Query`, answering with [`ApiError`] on rejection.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(super) struct ApiQuery<T>(pub T);

pub(super) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such route; see docs/api.md",
    )
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this route does not take that method",
    )
}
