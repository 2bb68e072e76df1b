//! The JSON body extractor: a deserialization failure is 400 `INVALID_REQUEST` naming the
//! field path; query and path errors likewise.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self};
use actix_web::{FromRequest, HttpRequest, web};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, problem_for_status};

/// A JSON body. Any deserialization failure is 400 `INVALID_REQUEST` naming the field path
/// (`seat_nos[2]: invalid type: string "a", expected i32`); over 64 KiB is 413.
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type_ok = match req.headers().get(header::CONTENT_TYPE) {
            None => true,
            Some(v) => v.to_str().is_ok_and(|s| {
                let mime = s.split(';').next().unwrap_or("").trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            }),
        };
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !content_type_ok {
                return Err(problem_for_status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "",
                    "",
                ));
            }
            let bytes = body.await.map_err(|e| {
                if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
                    problem_for_status(StatusCode::PAYLOAD_TOO_LARGE, "", "")
                } else {
                    ApiError::invalid(format!("could not read the request body: {e}"))
                }
            })?;
            parse_json(&bytes).map(Json)
        })
    }
}

/// Parses JSON, naming the failing field in the error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "request body is empty; a JSON object is required",
        ));
    }
    // Text must be text: a NUL (only expressible as the escape `\u0000`) is refused naming
    // its field, before it can reach a database that would refuse it with a 500. Fields the
    // target type does not have are ignored, as serde ignores them.
    if contains_nul_escape(bytes) {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            ApiError::invalid(format!(
                "malformed JSON: {}",
                strip_position(&e.to_string())
            ))
        })?;
        let known = fields_of::<T>();
        let read = |key: &str| known.is_none_or(|fields| fields.contains(&key));
        if let Some(path) = nul_path(&value, String::new(), &read) {
            let field = if path.is_empty() { "." } else { path.as_str() };
            return Err(ApiError::invalid_field(
                field,
                "must not contain a NUL character",
            ));
        }
    }
    match deserialize::<T>(bytes) {
        Ok(value) => Ok(value),
        // JSON Schema's `integer` includes `156.0`; serde's i64 does not. Such a body is read
        // again with whole floats written as integers (only then: the usual body pays nothing).
        Err(err) if err.detail().contains("invalid type: floating point") => {
            let mut value: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|_| err.clone())?;
            if !integers_from_whole_floats(&mut value) {
                return Err(err);
            }
            let text = serde_json::to_vec(&value).map_err(|_| err.clone())?;
            deserialize::<T>(&text)
        }
        Err(err) => Err(err),
    }
}

fn deserialize<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = strip_position(&inner.to_string());
        if inner.is_syntax() || inner.is_eof() {
            ApiError::invalid(format!("malformed JSON: {message}"))
        } else if path == "." {
            ApiError::invalid(message)
        } else {
            ApiError::invalid_field(&path, message)
        }
    })?;
    de.end().map_err(|e| {
        ApiError::invalid(format!(
            "malformed JSON: {}",
            strip_position(&e.to_string())
        ))
    })?;
    Ok(value)
}

/// Rewrites every float with no fraction that fits an i64 as that integer; whether any was.
fn integers_from_whole_floats(value: &mut serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                *value = serde_json::Value::from(f as i64);
                true
            }
            _ => false,
        },
        serde_json::Value::Array(items) => items
            .iter_mut()
            .fold(false, |any, v| integers_from_whole_floats(v) | any),
        serde_json::Value::Object(map) => map
            .values_mut()
            .fold(false, |any, v| integers_from_whole_floats(v) | any),
        _ => false,
    }
}

/// The field names of `T` if it is a struct (serde tells them to the deserializer it is
/// given: a probe that only listens); `None` for anything else.
fn fields_of<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    struct Probe(std::cell::Cell<Option<&'static [&'static str]>>);
    #[derive(Debug)]
    struct Listened;
    impl std::fmt::Display for Listened {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Listened {}
    impl serde::de::Error for Listened {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Listened
        }
    }
    impl<'de> serde::Deserializer<'de> for &Probe {
        type Error = Listened;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Listened> {
            Err(Listened)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Listened> {
            self.0.set(Some(fields));
            Err(Listened)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let probe = Probe(std::cell::Cell::new(None));
    let _ = T::deserialize(&probe);
    probe.0.get()
}

/// Whether the raw body holds a `\u0000` escape (in any case): cheap enough to run on every
/// body, and only then is the document walked to name the field.
fn contains_nul_escape(bytes: &[u8]) -> bool {
    bytes
        .windows(6)
        .any(|w| w[0] == b'\\' && w[1] == b'u' && w[2..].iter().all(|b| *b == b'0'))
}

/// The path (`a.b[2]`) of the first string or key holding a NUL, if any, among the top-level
/// keys `read` accepts (all of them below those).
fn nul_path(value: &serde_json::Value, at: String, read: &dyn Fn(&str) -> bool) -> Option<String> {
    match value {
        serde_json::Value::String(s) => s.contains('\0').then_some(at),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_path(v, format!("{at}[{i}]"), &|_| true)),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            if at.is_empty() && !read(k) {
                return None;
            }
            let here = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            if k.contains('\0') {
                Some(here)
            } else {
                nul_path(v, here, &|_| true)
            }
        }),
        _ => None,
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

pub(super) fn query_error(
    err: actix_web::error::QueryPayloadError,
    _: &HttpRequest,
) -> actix_web::Error {
    ApiError::invalid(format!(
        "query string: {}",
        strip_position(&err.to_string())
    ))
    .into()
}

pub(super) fn path_error(err: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::invalid(format!("path parameter: {err}")).into()
}
