//! Bad input gets a clear 4xx problem document and writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Multipart, TestServer, database, fixture, fresh_name};
use facegate_sync_server::auth::Role;
use serde_json::json;

async fn nothing_written(server: &TestServer) {
    assert_eq!(server.app.store.count_identities().await.unwrap(), 0);
    let (_, trail) = server.get("/v1/audit/admin?limit=100", &server.token(Role::Auditor)).await;
    let writes: Vec<_> = trail["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["outcome"] == json!("ok") && a["action"] != json!("audit.query"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_and_bodies_get_clear_4xx_and_write_nothing() {
    let db = database();
    let server = TestServer::start(&db.uri, &fresh_name()).await;
    let admin = server.token(Role::Admin);

    // Not an image.
    let form = Multipart::new().text("name", "x").bytes("photo", "notes.jpg", b"this is not a JPEG".to_vec());
    let (status, body) = server.multipart("POST", "/v1/identities", &admin, &form).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["reason"], json!("unreadable-image"));
    assert!(body["photo"].as_str().unwrap().contains("notes.jpg"));

    // A truncated JPEG.
    let mut half = std::fs::read(fixture("biden")).unwrap();
    half.truncate(half.len() / 2);
    let form = Multipart::new().text("name", "x").bytes("photo", "half.jpg", half);
    let (status, body) = server.multipart("POST", "/v1/identities", &admin, &form).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // No photo at all, and an empty photo.
    let form = Multipart::new().text("name", "x");
    let (status, body) = server.multipart("POST", "/v1/identities", &admin, &form).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let form = Multipart::new().text("name", "x").bytes("photo", "empty.jpg", Vec::new());
    let (status, body) = server.multipart("POST", "/v1/identities", &admin, &form).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // An empty body, and a body that is not multipart.
    let empty =
        Request::post("/v1/identities").header("authorization", format!("Bearer {admin}")).body(Body::empty()).unwrap();
    let (status, body) = server.send(empty).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    let (status, _) = server.json("POST", "/v1/identities", &admin, json!({ "name": "x" })).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let broken = Request::post("/v1/identities")
        .header("authorization", format!("Bearer {admin}"))
        .header("content-type", format!("multipart/form-data; boundary={}", common::BOUNDARY))
        .body(Body::from("--garbage without structure"))
        .unwrap();
    let (status, body) = server.send(broken).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Unknown form fields and a missing name.
    let form = Multipart::new().text("name", "x").text("shoe_size", "44").file("photo", &fixture("takeo"));
    let (status, body) = server.multipart("POST", "/v1/identities", &admin, &form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("shoe_size"));
    let form = Multipart::new().file("photo", &fixture("takeo"));
    let (status, body) = server.multipart("POST", "/v1/identities", &admin, &form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], json!("name"));

    // Malformed JSON, unknown JSON fields, wrong types.
    let raw = |body: &'static str| {
        Request::post("/v1/groups")
            .header("authorization", format!("Bearer {admin}"))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let (status, body) = server.send(raw("{\"id\": \"lobby\"")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["status"], json!(400));
    let (status, body) = server.send(raw("{\"id\": \"lobby\", \"colour\": \"red\"}")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("colour"), "{body}");
    let (status, _) = server.send(raw("{\"id\": 7}")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = server.send(raw("{\"id\": \"../etc\"}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = server.get("/v1/identities?limit=ten", &admin).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = server.get("/v1/identities?colour=red", &admin).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A 100 MB upload is refused from its declared length.
    let huge = Request::post("/v1/identities")
        .header("authorization", format!("Bearer {admin}"))
        .header("content-type", format!("multipart/form-data; boundary={}", common::BOUNDARY))
        .header("content-length", (100 * 1024 * 1024).to_string())
        .body(Body::from(vec![b'x'; 1024]))
        .unwrap();
    let (status, body) = server.send(huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // ... and a streamed one (no length) when it passes the limit.
    let big = vec![0u8; server.config.enrollment.max_photo_bytes + 1];
    let form = Multipart::new().text("name", "x").bytes("photo", "big.jpg", big);
    let (status, body) = server.multipart("POST", "/v1/identities", &admin, &form).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    // Unknown routes are problem documents too.
    let (status, body) = server.get("/v1/nothing-here", &admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["status"], json!(404));

    nothing_written(&server).await;
    server.app.stop().await;
}

/// Over a real socket: the server answers 413 to a declared 100 MB body
/// without reading it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_100_mb_upload_is_refused_before_it_is_sent() {
    let db = database();
    let server = TestServer::start(&db.uri, &fresh_name()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = server.router.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(facegate_sync_server::server::run(
        listener,
        None,
        router,
        async move {
            let _ = stopped.await;
        },
        std::time::Duration::from_secs(1),
    ));
    let token = server.token(Role::Admin);
    let response = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        write!(
            stream,
            "POST /v1/identities HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {}\r\n\r\n",
            100 * 1024 * 1024
        )
        .unwrap();
        let mut response = vec![0u8; 4096];
        let n = stream.read(&mut response).unwrap();
        String::from_utf8_lossy(&response[..n]).to_string()
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("application/problem+json"), "{response}");
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    server.app.stop().await;
}
