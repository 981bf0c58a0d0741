//! Every route of the route table, walked with missing, malformed, expired,
//! forged and wrong-role tokens; login and its rate limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{TestServer, database, fresh_name};
use facegate_sync_server::api::ROUTES;
use facegate_sync_server::auth::{Role, TokenKeys};
use serde_json::json;

fn concrete(path: &str) -> String {
    path.replace("{id}", "some-id").replace("{photo}", "some-photo").replace("{identity}", "some-identity")
}

fn request(method: &str, path: &str, token: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(concrete(path));
    if let Some(t) = token {
        builder = builder.header("authorization", t);
    }
    builder.body(Body::empty()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protected_route_refuses_bad_tokens_and_wrong_roles() {
    let db = database();
    let server = TestServer::start(&db.uri, &fresh_name()).await;
    let keys = &server.state().keys;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expired = keys.issue_at("ada", Role::Admin, now - 24 * 3600).unwrap().0;
    let forger = TokenKeys::hs256(
        b"another-secret-0123456789-abcdefghijkl",
        std::time::Duration::from_secs(600),
        "facegate-sync-server",
    );
    let forged = forger.issue("ada", Role::Admin).unwrap().0;
    let mut tampered = server.token(Role::Auditor);
    // Flip the role claim without re-signing.
    let parts: Vec<&str> = tampered.split('.').collect();
    let claims = String::from_utf8(base64_decode(parts[1])).unwrap().replace("auditor", "admin");
    tampered = format!("{}.{}.{}", parts[0], base64_encode(claims.as_bytes()), parts[2]);

    let mut walked = 0;
    for route in ROUTES.iter().filter(|r| !r.roles.is_empty()) {
        let bad: [(&str, Option<String>); 6] = [
            ("missing", None),
            ("not bearer", Some("Basic YWRhOmFkYQ==".into())),
            ("garbage", Some("Bearer not-a-jwt".into())),
            ("expired", Some(format!("Bearer {expired}"))),
            ("forged", Some(format!("Bearer {forged}"))),
            ("tampered", Some(format!("Bearer {tampered}"))),
        ];
        for (what, header) in bad {
            let (status, body) = server.send(request(route.method, route.path, header.as_deref())).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what} token on {} {}: {body}", route.method, route.path);
            assert_eq!(body["status"], json!(401));
        }
        for role in Role::ALL.iter().filter(|r| !route.roles.contains(r)) {
            let header = format!("Bearer {}", server.token(*role));
            let (status, body) = server.send(request(route.method, route.path, Some(&header))).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{role} on {} {}: {body}", route.method, route.path);
        }
        for role in route.roles {
            let header = format!("Bearer {}", server.token(*role));
            let (status, body) = server.send(request(route.method, route.path, Some(&header))).await;
            assert!(
                status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                "{role} refused on {} {}: {status} {body}",
                route.method,
                route.path
            );
        }
        walked += 1;
    }
    assert!(walked >= 25, "only {walked} protected routes");
    // Public routes answer without a token.
    for path in ["/health", "/metrics", "/openapi.json"] {
        let (status, _) = server.send(request("GET", path, None)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    server.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_issues_tokens_refuses_bad_passwords_and_rate_limits() {
    let db = database();
    let server = TestServer::start(&db.uri, &fresh_name()).await;
    let (status, _) = server
        .json(
            "POST",
            "/v1/users",
            &server.token(Role::Admin),
            json!({ "name": "olga", "password": "a long enough password", "role": "operator" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = server
        .json(
            "POST",
            "/v1/users",
            &server.token(Role::Admin),
            json!({ "name": "weak", "password": "short", "role": "operator" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let login = |password: &str| {
        Request::post("/v1/auth/login")
            .header("content-type", "application/json")
            .body(Body::from(json!({ "username": "olga", "password": password }).to_string()))
            .unwrap()
    };
    let (status, ok) = server.send(login("a long enough password")).await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    assert_eq!(ok["role"], json!("operator"));
    let token = ok["token"].as_str().unwrap();
    let (status, _) = server.get("/v1/identities", token).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.get("/v1/audit/events", token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let limit = server.config.auth.login_attempts_per_minute;
    for _ in 0..limit {
        let (status, _) = server.send(login("wrong password!!")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = server.send(login("a long enough password")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["retry_after"].as_u64().unwrap() >= 1);
    let (_, trail) = server.get("/v1/audit/admin?actor=olga", &server.token(Role::Auditor)).await;
    assert!(
        trail["actions"].as_array().unwrap().iter().any(|a| a["outcome"] == json!("refused: bad credentials")),
        "{trail}"
    );
    server.app.stop().await;
}

fn base64_decode(s: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = alphabet.iter().position(|&a| a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

fn base64_encode(bytes: &[u8]) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[((v >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}
