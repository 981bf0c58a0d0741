//! The OpenAPI 3.1 document, generated from the route table so it cannot
//! drift from the routes.

use serde_json::{Map, Value, json};

use super::{BodyKind, ROUTES};

fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$" } }))
        .collect()
}

fn request_body(path: &str, kind: BodyKind) -> Option<Value> {
    match kind {
        BodyKind::None => None,
        BodyKind::Json => {
            Some(json!({ "required": true, "content": { "application/json": { "schema": { "type": "object" } } } }))
        }
        BodyKind::Multipart => {
            let mut properties = Map::new();
            properties.insert(
                "photo".into(),
                json!({ "type": "array", "items": { "type": "string", "contentMediaType": "image/jpeg" } }),
            );
            let fields: &[&str] = match path {
                "/v1/identities" => &["name", "groups", "valid_from", "valid_until", "distinct_from", "offline_access"],
                "/v1/identities/{id}/photos" => &["distinct_from"],
                "/v1/search" => &["k"],
                "/v1/verify" => &["identity"],
                _ => &[],
            };
            for f in fields {
                properties.insert((*f).into(), json!({ "type": "string" }));
            }
            Some(
                json!({ "required": true, "content": { "multipart/form-data": { "schema": { "type": "object", "properties": properties } } } }),
            )
        }
    }
}

fn responses(path: &str, success: u16, public: bool, body: BodyKind) -> Value {
    let problem =
        json!({ "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } } });
    let mut r = Map::new();
    let ok_schema = match path {
        "/v1/search" => json!({ "$ref": "#/components/schemas/SearchResult" }),
        "/v1/identities" if success == 201 => json!({ "$ref": "#/components/schemas/Identity" }),
        _ => json!({ "type": "object" }),
    };
    r.insert(
        success.to_string(),
        json!({ "description": "success", "content": { "application/json": { "schema": ok_schema } } }),
    );
    if !public {
        r.insert("401".into(), json!({ "description": "missing, malformed, expired or forged token", "content": problem["content"].clone() }));
        r.insert(
            "403".into(),
            json!({ "description": "the token's role may not call this route", "content": problem["content"].clone() }),
        );
    }
    if body != BodyKind::None {
        r.insert(
            "400".into(),
            json!({ "description": "malformed body or unknown field", "content": problem["content"].clone() }),
        );
        r.insert("413".into(), json!({ "description": "body too large", "content": problem["content"].clone() }));
        r.insert("422".into(), json!({ "description": "unusable input (no face, several faces, too small, too blurred…)", "content": problem["content"].clone() }));
    }
    if path == "/v1/identities" && success == 201 {
        r.insert(
            "409".into(),
            json!({ "description": "the face is already enrolled: `id` and `score` name the existing identity",
            "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Duplicate" } } } }),
        );
    }
    if path.contains('{') {
        r.insert("404".into(), json!({ "description": "not found", "content": problem["content"].clone() }));
    }
    Value::Object(r)
}

/// The document served at `/openapi.json`.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let public = route.roles.is_empty();
        let mut op = Map::new();
        op.insert("summary".into(), json!(route.summary));
        op.insert("operationId".into(), json!(format!("{} {}", route.method, route.path)));
        if !public {
            op.insert("security".into(), json!([{ "bearer": [] }]));
            op.insert("x-roles".into(), json!(route.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>()));
        }
        let params = path_parameters(route.path);
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(body) = request_body(route.path, route.body) {
            op.insert("requestBody".into(), body);
        }
        op.insert("responses".into(), responses(route.path, route.success, public, route.body));
        let entry = paths.entry(route.path.to_string()).or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = entry {
            methods.insert(route.method.to_ascii_lowercase(), Value::Object(op));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "facegate sync server admin API", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": {
                "Problem": { "type": "object", "description": "RFC 9457 problem details",
                    "properties": { "type": { "type": "string" }, "title": { "type": "string" }, "status": { "type": "integer" }, "detail": { "type": "string" } } },
                "Duplicate": { "allOf": [ { "$ref": "#/components/schemas/Problem" }, { "type": "object", "required": ["id", "score"],
                    "properties": { "id": { "type": "string" }, "name": { "type": "string" }, "score": { "type": "number" }, "threshold": { "type": "number" }, "photo": { "type": "string" } } } ] },
                "Identity": { "type": "object", "required": ["id", "name"], "properties": { "id": { "type": "string" }, "name": { "type": "string" },
                    "groups": { "type": "array", "items": { "type": "string" } }, "valid_from": { "type": ["integer", "null"] }, "valid_until": { "type": ["integer", "null"] }, "version": { "type": "integer" }, "offline_access": { "type": "boolean" } } },
                "SearchResult": { "type": "object", "required": ["matches"], "properties": { "matches": { "type": "array", "items": { "type": "object",
                    "required": ["id", "score"], "properties": { "id": { "type": "string" }, "name": { "type": "string" }, "score": { "type": "number" } } } },
                    "threshold": { "type": "number" }, "decision": { "type": "string", "enum": ["identified", "ambiguous", "no-match"] } } }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_security() {
        let doc = document();
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
            assert!(op.is_object(), "{} {} missing", route.method, route.path);
            assert_eq!(op["security"].is_array(), !route.roles.is_empty(), "{route:?}");
        }
    }
}
